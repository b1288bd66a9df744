"""The ``python -m lit_career`` command line.

``fit``, ``validate``, ``test`` and ``predict`` go to :class:`LitCareerCLI` (LightningCLI, model and
data in subclass mode); every other subcommand is a plain typed function named in :data:`COMMANDS`,
imported when used and parsed from its signature by jsonargparse. Without ``--config`` the
Lightning subcommands run the demo (:func:`default_configs`). A :class:`~lit_career.errors.InputError`
raised anywhere (or that an error was raised from) prints one line ``error: <message>`` and exits with
status 2; so does an ``OSError`` of :data:`~lit_career.io.WRITE_ERRNOS` (a full disk, a quota, a read-only
folder): ``error: <file>: <reason>``. Any other error keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from lit_career.errors import InputError
from lit_career.io import WRITE_ERRNOS
from lit_career.runs.lightning_cli import PROG, LitCareerCLI

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEMO_CONFIG, DEMO_TINY_CONFIG = CONFIGS / "fit" / "demo.yaml", CONFIGS / "fit" / "demo_tiny.yaml"
COMMANDS: dict[str, str] = {
    "prepare": "lit_career.runs.prepare:prepare",
    "synth": "lit_career.synthetic.command:synth_command",
    "sweep": "lit_career.runs.sweep:sweep",
    "row": "lit_career.runs.row:row",
    "evaluate": "lit_career.evaluation.evaluate:evaluate",
    "forecast": "lit_career.forecast.command:forecast",
    "score": "lit_career.runs.score:score",
}
"""Subcommands outside LightningCLI: name → ``module:function``."""
DESCRIPTION = (
    f"Fine-tune and evaluate LMs on careers. Other subcommands: {', '.join(COMMANDS)} "
    f"(see {PROG} <subcommand> --help)."
)


def run_command(name: str, args: Sequence[str]) -> None:
    """Parse ``args`` against the signature of the function behind ``name`` and call it."""
    from jsonargparse import CLI

    module, function = COMMANDS[name].split(":")
    CLI(getattr(importlib.import_module(module), function), args=list(args), prog=f"{PROG} {name}")


def smollm2_installed() -> bool:
    from lit_career.llm.backbone import BackboneNotFoundError, smollm2_gguf_path

    try:
        smollm2_gguf_path()
    except BackboneNotFoundError:
        return False
    return True


def default_configs(args: Sequence[str]) -> list[Path]:
    """The demo config when ``args`` name no config file: ``configs/fit/demo.yaml`` (SmolLM2-135M), or
    ``configs/fit/demo_tiny.yaml`` (the tiny Llama) without the SmolLM2 wheel; none outside a source checkout."""
    if any(a in ("-c", "--config") or a.startswith("--config=") for a in args) or not DEMO_CONFIG.is_file():
        return []
    return [DEMO_CONFIG if smollm2_installed() else DEMO_TINY_CONFIG]


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m lit_career`` and ``lit-career``; ``args`` default to the command line."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in COMMANDS:
            run_command(argv[0], argv[1:])
        else:
            LitCareerCLI(args, default_config_files=default_configs(argv), description=DESCRIPTION)
    except Exception as err:
        message = user_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def user_error(err: BaseException) -> str | None:
    """The one-line message of ``err`` or of an exception it was raised from (jsonargparse wraps what a class
    raises when it is instantiated): an :class:`InputError`, or an ``OSError`` of :data:`WRITE_ERRNOS` as
    ``<file>: <reason>``; None for any other error."""
    while err is not None:
        if isinstance(err, InputError):
            return str(err)
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            return f"{err.filename}: {err.strerror}" if err.filename else err.strerror or str(err)
        err = err.__cause__
    return None
