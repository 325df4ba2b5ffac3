"""How many instructions the CPU retired in the last `emu_start`.

Unicorn counts instructions when `emu_start(count=N)` is used (it inserts its own code hook,
which is also what stops the CPU after N) but does not expose the counter. vmlab needs it on
every early stop (a trap, a port write that must be acted on at once): the PIT's input clock
advances one tick per retired guest instruction, and runs must be deterministic.

The counter is the `emu_counter` field of unicorn's `uc_struct`. Its offset is not part of the
API, so it is found once per process by calibration: run known numbers of NOPs and look for the
one 64-bit word that follows the count in lock step (the adjacent word holds the requested
count). The calibration also checks the early-stop case. If no word qualifies (a different
unicorn build), vmlab refuses to start with a clear message instead of guessing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc, UcError

_SCAN_WORDS = 512


class UnsupportedUnicorn(RuntimeError):
    """The installed unicorn keeps its instruction counter somewhere we cannot find."""


def _struct_address(uc: Uc) -> int:
    """Where unicorn's `uc_struct` is (no API tells the instruction counter's value)."""
    address = uc._uch.value  # noqa: SLF001 (the counter is in unicorn's own struct)
    assert address is not None, "a Uc always has its handle"
    return address


def _words(uc: Uc) -> ctypes.Array:
    return (ctypes.c_uint64 * _SCAN_WORDS).from_address(_struct_address(uc))


@cache
def counter_offset() -> int:
    """Word index of `emu_counter` inside `uc_struct` (calibrated once)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0, b"\x90" * 0x8000)
    candidates: set[int] | None = None
    for count in (1234, 777, 4321):
        uc.emu_start(0, 0x8000, count=count)
        words = _words(uc)
        # After a run that used up its count, the counter is count + 1 (unicorn stops when the
        # hook of instruction count + 1 sees counter > count) and the next word is count.
        found = {
            i for i in range(_SCAN_WORDS - 1) if words[i] == count + 1 and words[i + 1] == count
        }
        candidates = found if candidates is None else candidates & found
    # Early stop: an INT3 after 100 NOPs; the counter must read 101 (the INT3 included).
    uc.mem_write(100, b"\xcc")
    uc.ctl_remove_cache(0, 0x8000)  # mem_write alone leaves compiled blocks stale (fact 12)
    uc.hook_add(UC_HOOK_INTR, lambda u, n, d: u.emu_stop())
    uc.emu_start(0, 0x8000, count=5000)
    words = _words(uc)
    good = sorted(i for i in candidates or () if words[i] == 101)
    if len(good) != 1:
        raise UnsupportedUnicorn(
            "cannot locate unicorn's instruction counter in this unicorn build; "
            "vmlab needs unicorn 2.1.x (see pyproject.toml)"
        )
    return good[0]


class RetiredCounter:
    """Reads the per-`emu_start` instruction counter of one Uc instance."""

    def __init__(self, uc: Uc) -> None:
        self._cell = ctypes.c_uint64.from_address(_struct_address(uc) + 8 * counter_offset())

    def read(self) -> int:
        """Instructions whose execution began in the current/last emu_start."""
        return self._cell.value


class CountClock:
    """The reference clock: `emu_start(count=N)`, unicorn's code hook on every instruction."""

    kind = "count"

    def __init__(self, uc: Uc) -> None:
        self._uc = uc
        self._counter = RetiredCounter(uc)
        self.exhausted = False
        self.window_opened = False  # the machine's own code hook watches the window

    def read(self) -> int:
        return self._counter.read()

    def begun_at(self, eip: int) -> int:
        """`read()` from a code hook at `eip` (the count does not depend on it)."""
        return self._counter.read()

    def stop_count(self, completes: bool, eip_past: bool, begun: bool = True) -> int:
        """Instructions retired at a stop a hook asks for now (see BlockClock.stop_count):
        the count hook of the instruction at EIP ran, unless its fetch faulted (`begun`)."""
        began = self._counter.read()
        return began if completes or not begun else max(began - 1, 0)

    def settled(self, faulted: bool) -> int:
        """Instructions retired when the run ended by itself (a fault, HLT, the end address)."""
        began = self._counter.read()
        return max(began - 1, 0) if faulted else began

    def run(self, eip: int, until: int, count: int) -> UcError | None:
        try:
            self._uc.emu_start(eip, until, count=count)
        except UcError as err:
            return err
        finally:
            self.exhausted = bool(count) and self._counter.read() > count
        return None

    def stop(self) -> None:
        self._uc.emu_stop()

    def forget(self) -> None:
        """Nothing is kept about compiled code."""

    def watch_window(self, on: bool, after_sti: bool | None = None) -> bool:
        """False: the machine watches the interrupt window with a code hook."""
        return False

    def stop_before(self, mnemonics: frozenset[str], add_door: Callable[[int], None]) -> bool:
        """False: this clock decodes no blocks, so it finds no instructions to stop before."""
        return False

    def window(self) -> None:
        return None

    def at_deadline(self) -> bool:
        """Unicorn's count hook runs before every other code hook: none sees the
        instruction it stops at."""
        return False
