"""Building and loading the block clock's C helper (`blockclock.c`).

The helper is shipped as source and compiled on first use with the system C compiler into the
user cache (`$XDG_CACHE_HOME/vmlab`, else `~/.cache/vmlab`), under a name keyed by the
source's hash and the unicorn version, written to a temporary file and renamed into place so
that concurrent first runs never load half a library. No unicorn header or symbol is needed at
build time: Python hands the helper `uc_emu_stop`'s address.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

import unicorn

SOURCE = Path(__file__).with_name("blockclock.c")


class ClockKind(StrEnum):
    COUNT = "count"  # emu_start(count=N): a code hook on every instruction (reference)
    BLOCK = "block"  # the C block hook: a table lookup per translated block


@dataclass(frozen=True, slots=True)
class ClockChoice:
    kind: ClockKind
    reason: str  # one line for `vmlab doctor` / `--version`


class ClockUnavailable(RuntimeError):
    """The helper cannot be built, or failed its self-test (or VMLAB_CLOCK is not a clock)."""


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "vmlab"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def library_path() -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + unicorn.__version__.encode()).hexdigest()[:16]
    return cache_dir() / f"blockclock-{key}.so"


def build() -> Path:
    """The compiled helper, compiled now if this source/unicorn pair has no build yet."""
    try:
        return _build()
    except (OSError, subprocess.SubprocessError) as err:  # a read-only cache, a hung compiler
        raise ClockUnavailable(f"cannot build the block clock helper: {err}") from err


def _build() -> Path:
    target = library_path()
    if target.exists():
        return target
    compiler = _compiler()
    if compiler is None:
        raise ClockUnavailable("no C compiler found (cc, gcc, clang or $CC)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            [compiler, "-O2", "-shared", "-fPIC", "-o", temporary, str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["(no message)"])[0]
            raise ClockUnavailable(f"{compiler} failed on blockclock.c: {first}")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


@cache
def library() -> ctypes.CDLL:
    """The loaded helper, with its prototypes."""
    try:
        lib = ctypes.CDLL(str(build()))
    except OSError as err:
        raise ClockUnavailable(f"cannot load the block clock helper: {err}") from err
    lib.vclock_sizeof.restype = ctypes.c_uint64
    lib.vclock_forget.argtypes = [ctypes.c_void_p]
    return lib
