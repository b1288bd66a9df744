"""User-facing input errors: one line naming file, row and column."""

from __future__ import annotations


class InputError(ValueError):
    """A problem with user data. ``str(err)`` is the one-line message the CLI prints."""

    def __init__(
        self, message: str, *, file: str | None = None, row: int | None = None, column: str | None = None
    ):
        self.message, self.file, self.row, self.column = message, file, row, column
        where = [str(file) if file is not None else None]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(w for w in where if w)
        super().__init__(f"{prefix}: {message}" if prefix else message)
