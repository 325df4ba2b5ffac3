"""Writing files the tool produces (trace files, sample images): whole or not at all.

A file is written to a temporary file beside its target and renamed over it, so a reader —
or a crash, or Ctrl-C half-way — never sees half a file, and an existing file is replaced
only by a complete new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class FileWriteError(Exception):
    """A file could not be written; the message is one line for the user."""


def check_writable(path: str | Path) -> None:
    """Refuse, before any work is done, a target that can never be written: a directory, or a
    file in a directory that does not exist."""
    target = Path(path)
    if target.is_dir():
        raise FileWriteError(f"{target}: is a directory (give a file name)")
    if not target.parent.is_dir():
        raise FileWriteError(f"{target}: no such directory {str(target.parent)!r}")


def write_atomically(path: str | Path, data: bytes) -> None:
    target = Path(path)
    folder = target.parent
    check_writable(target)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    except OSError as err:
        raise FileWriteError(f"{target}: cannot write: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException as err:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise FileWriteError(f"{target}: cannot write: {err.strerror or err}") from None
        raise
