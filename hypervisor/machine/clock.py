"""Which clock counts retired guest instructions, and a clock for each CPU (docs/clock.md).

`VMLAB_CLOCK` selects it: `count` (unicorn's `emu_start(count=N)`, the reference), `block`
(the C helper; an error if it cannot be used), or `auto` (default: the helper when it builds
and passes its start-up self-test, else `count`). `choice()` says which and why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from functools import cache
from typing import Protocol

import unicorn
from unicorn import Uc, UcError

from hypervisor.machine import clockbuild
from hypervisor.machine.blockclock import BlockClock
from hypervisor.machine.clockbuild import ClockChoice, ClockKind, ClockUnavailable
from hypervisor.machine.clockcheck import self_test
from hypervisor.machine.retired import CountClock

ENV = "VMLAB_CLOCK"


def _checked() -> None:
    """Build the helper and self-test it, once per build: a pass is noted beside the build
    (same source, same unicorn), so later processes start without it (~50 ms)."""
    clockbuild.library()
    passed = clockbuild.library_path().with_suffix(".passed")
    if passed.exists():
        return
    self_test()
    with contextlib.suppress(OSError):  # a read-only cache: test again next time
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
        ClockKind.BLOCK,
        f"C block hook ({clockbuild.library_path().name}, unicorn {unicorn.__version__})",
    )


class Clock(Protocol):
    """What the machine asks of a clock (`retired.CountClock`, `blockclock.BlockClock`)."""

    kind: str
    exhausted: bool  # the last run stopped because its count was used up
    window_opened: bool  # the last run stopped because EFLAGS.IF was set (watch_window)

    def read(self) -> int: ...

    def begun_at(self, eip: int) -> int: ...

    def stop_count(self, completes: bool, eip_past: bool, begun: bool = True) -> int: ...

    def settled(self, faulted: bool) -> int: ...

    def run(self, eip: int, until: int, count: int) -> UcError | None: ...

    def stop(self) -> None: ...

    def forget(self) -> None: ...

    def at_deadline(self) -> bool: ...

    def watch_window(self, on: bool, after_sti: bool | None = None) -> bool: ...

    def stop_before(self, mnemonics: frozenset[str], add_door: Callable[[int], None]) -> bool: ...

    def window(self) -> tuple[bool, int | None] | None: ...


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
        return BlockClock(uc, read, ram, ram_size)
    return CountClock(uc)
