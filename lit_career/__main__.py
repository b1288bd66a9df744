"""``python -m lit_career <subcommand>``: see :mod:`lit_career.cli`."""

from lit_career.cli import main

if __name__ == "__main__":
    main()
