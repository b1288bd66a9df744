"""Atomic writes: a file or folder is written beside its place and renamed into it, so readers never see
a partial one. A failed write names the file it was for, not the temporary one."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lit_career.errors import InputError

WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS})
"""Errors of writing that the user fixes (space, quota, permissions): the CLI prints them on one line."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Re-raise a :data:`WRITE_ERRNOS` error raised inside as an ``OSError`` naming ``path``."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        raise OSError(err.errno, os.strerror(err.errno), str(path)) from err


def write_file_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}-{secrets.token_hex(6)}"
        # created with the mode open() gives (0o666 less the umask), not mkstemp's private 0o600
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_file_atomic(path, lambda tmp: tmp.write_text(text))


def _temporary_folder(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; outputs and caches are shared like any other folder
    return tmp


def write_folder_atomic(folder: Path, fill: Callable[[Path], object], marker: str) -> Path:
    """Call ``fill`` on a temporary folder beside ``folder``, then rename it to ``folder``. When a concurrent
    writer renamed its own first (``folder/marker`` exists), that one stays."""
    folder = Path(folder)
    with writing(folder):
        tmp = _temporary_folder(folder)
        try:
            fill(tmp)
            os.replace(tmp, folder)
        except OSError:
            if not (folder / marker).is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def replace_folder_atomic(folder: Path, fill: Callable[[Path], object], keep_others: bool = False) -> Path:
    """Call ``fill`` on a temporary folder beside ``folder``, then swap it in for ``folder`` (replaced when it
    exists). With ``keep_others``, files of the old ``folder`` that ``fill`` did not write are carried over.
    A failed ``fill`` leaves ``folder`` as it was."""
    folder = Path(folder)
    with writing(folder):
        tmp = _temporary_folder(folder)
        try:
            fill(tmp)
            if keep_others and folder.is_dir():
                for path in folder.iterdir():
                    if path.is_file() and not (tmp / path.name).exists():
                        shutil.copy2(path, tmp / path.name)
            _swap(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _swap(new: Path, folder: Path) -> None:
    """Rename ``new`` to ``folder``; an existing ``folder`` is moved aside first and removed after."""
    if not folder.is_dir():
        os.replace(new, folder)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}-old-", dir=folder.parent))
    os.replace(folder, old)  # onto an empty folder: allowed
    try:
        os.replace(new, folder)
    except OSError:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and write a scratch file in it; an :class:`InputError` naming it if that fails."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputError(f"the folder is not writable ({err.strerror or err})", file=str(folder)) from None
    return folder


def read_json(path: Path) -> Any:
    """The JSON value of ``path``; an :class:`InputError` naming it, with the line and column, when it is not JSON."""
    try:
        return json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
        raise InputError(f"not valid JSON{where}: {getattr(err, 'msg', err)}", file=str(path)) from None
