"""Building and loading the block clock's C helper (`blockclock.c`), and choosing a clock.

The helper is shipped as source and compiled on first use with the system C compiler into the
user cache (`$XDG_CACHE_HOME/vmlab`, else `~/.cache/vmlab`), under a name keyed by the
source's hash and the unicorn version, written to a temporary file and renamed into place so
that concurrent first runs never load half a library. No unicorn header or symbol is needed at
build time: Python hands the helper `uc_emu_stop`'s address.

`VMLAB_CLOCK` selects the clock: `count` (unicorn's `emu_start(count=N)`, the reference),
`block` (the helper; an error if it cannot be used), or `auto` (default: the helper when it
builds and passes its start-up self-test, else `count`). `choice()` says which and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Protocol

import unicorn
from unicorn import Uc, UcError

SOURCE = Path(__file__).with_name("blockclock.c")
ENV = "VMLAB_CLOCK"


class ClockKind(StrEnum):
    COUNT = "count"  # emu_start(count=N): a code hook on every instruction (reference)
    BLOCK = "block"  # the C block hook: a table lookup per translated block


@dataclass(frozen=True, slots=True)
class ClockChoice:
    kind: ClockKind
    reason: str  # one line for `vmlab doctor` / `--version`


class ClockUnavailable(RuntimeError):
    """VMLAB_CLOCK=block, but the helper cannot be built or failed its self-test."""


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


def _checked() -> None:
    """Build the helper and self-test it, once per build: a pass is noted beside the build
    (same source, same unicorn), so later processes start without it (~50 ms)."""
    library()
    passed = library_path().with_suffix(".passed")
    if passed.exists():
        return
    from hypervisor.machine.clockcheck import self_test

    self_test()
    passed.touch()


@cache
def choice() -> ClockChoice:
    """Which clock this process uses, and why (decided once)."""
    wanted = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if wanted == ClockKind.COUNT:
        return ClockChoice(ClockKind.COUNT, f"{ENV}=count: unicorn's per-instruction counter")
    if wanted not in ("auto", ClockKind.BLOCK):
        raise ClockUnavailable(f"{ENV}={wanted!r}: expected count, block or auto")
    try:
        _checked()
    except ClockUnavailable as err:
        if wanted == ClockKind.BLOCK:
            raise
        return ClockChoice(ClockKind.COUNT, f"block clock unavailable ({err}); counting each")
    return ClockChoice(
        ClockKind.BLOCK, f"C block hook ({library_path().name}, unicorn {unicorn.__version__})"
    )


class Clock(Protocol):
    """What the machine asks of a clock (`retired.CountClock`, `blockclock.BlockClock`)."""

    kind: str
    exhausted: bool  # the last run stopped because its count was used up

    def read(self) -> int: ...

    def stop_count(self, completes: bool, eip_past: bool) -> int: ...

    def settled(self, faulted: bool) -> int: ...

    def run(self, eip: int, until: int, count: int) -> UcError | None: ...

    def stop(self) -> None: ...

    def forget(self) -> None: ...

    def at_deadline(self) -> bool: ...


def new_clock(
    uc: Uc,
    read: Callable[[int, int], bytes],
    ram: int,
    ram_size: int,
    kind: ClockKind | None = None,
) -> Clock:
    """A clock for one CPU whose RAM is at host address `ram`: `kind`, or the process's
    choice (a CPU that must count each instruction asks for COUNT)."""
    if (kind or choice().kind) is ClockKind.BLOCK:
        from hypervisor.machine.blockclock import BlockClock

        return BlockClock(uc, read, ram, ram_size)
    from hypervisor.machine.retired import CountClock

    return CountClock(uc)
