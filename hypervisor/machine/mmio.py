"""The addresses unicorn must call back for: open bus and device registers.

Open bus is every address that is neither RAM, monitor memory nor a device: it reads all
ones, drops writes, and reports each access to the machine's owner. Devices (the local and
I/O APICs) answer their own registers. Both must see the instruction that made the access,
its EIP and its count, and unicorn brings EIP up to date for an MMIO access only in code
compiled while a memory hook of that kind existed (for loads a read hook, for stores a write
hook), or in code with a code hook on each instruction. How the ranges are kept depends on the
clock (docs/clock.md):

* MAPPED (the count clock, whose count hook keeps EIP exact): one MMIO region per range.
* PRECISE (the block clock, when it must): MAPPED plus an empty memory hook bounded to each
  range. Its price: unicorn then checks the hooks on every load and store (~10% on code
  that stores a lot).
* UNMAPPED (the block clock's usual state): the ranges are left unmapped. Unicorn stops the
  CPU *before* an access to an unmapped address with EIP on the instruction, which has done
  nothing (as a page fault leaves it); the clock then makes the space PRECISE and goes on
  from that instruction, which runs through the MMIO region as under MAPPED. After
  `QUIET_RUNS` runs in a row with no such access the space goes back to UNMAPPED (a kernel
  that keeps using the APIC pays for PRECISE, others do not; each change of mode recompiles
  the guest's code, so a device used now and then does not make it flip at every run).
  A page walk is no access unicorn can stop at (an unmapped page table reads as zeros, not
  all ones), so UNMAPPED is only used while paging is off: a run that starts with paging on
  is PRECISE, and the clock stops after any `mov cr0` so that paging turned on in mid-run
  makes the space PRECISE before the next instruction.

(A store to a write-protected page needs none of this: unicorn stops at it as at an unmapped
address, and EIP is exact in the write-protect hook.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_CR0

from hypervisor.machine.cpu import CR0_PG

QUIET_RUNS = 8


class MmioMode(StrEnum):
    MAPPED = "mapped"
    PRECISE = "precise"
    UNMAPPED = "unmapped"


@dataclass(frozen=True, slots=True)
class MmioRange:
    """Guest-physical [first, last] answered by `read(offset, size)` and
    `write(offset, size, value)`, offsets from `first`."""

    first: int
    last: int
    read: Callable[[int, int], int]
    write: Callable[[int, int, int], None]


def _nothing(*_: object) -> None:
    """A memory hook whose only effect is that unicorn keeps EIP exact for that access."""


class MmioSpace:
    """The MMIO ranges of one CPU's address space (see the module docstring); under the
    block clock, its `MemoryMap` (blockclock.py)."""

    def __init__(self, uc: Uc, ranges: list[MmioRange], adaptive: bool) -> None:
        """`adaptive`: the block clock runs this CPU (UNMAPPED when it can, else PRECISE)."""
        self._uc = uc
        self._ranges = ranges
        self._adaptive = adaptive
        self.touched = False  # an MMIO access since the last run started
        self._quiet = QUIET_RUNS  # runs in a row without one
        self._hooks: list[int] = []
        self.mode: MmioMode | None = None
        self._set(MmioMode.UNMAPPED if adaptive else MmioMode.MAPPED)

    def before_run(self, paging: bool, traced: bool) -> None:
        """Under the block clock: UNMAPPED for this run unless paging is on, the run is
        `traced` or one of the last `QUIET_RUNS` runs made an MMIO access (a guest using a
        device stays PRECISE). (A stop before an access in an instruction that has a code
        hook, as the tracer's on each, leaves unicorn's lazy flags wrong: docs/clock.md.)"""
        if not self._adaptive:
            return
        self._quiet = 0 if self.touched else self._quiet + 1
        self.touched = False
        fast = self._quiet >= QUIET_RUNS and not paging and not traced
        self._set(MmioMode.UNMAPPED if fast else MmioMode.PRECISE)

    @property
    def fast(self) -> bool:
        """The ranges are unmapped (the clock then watches for CR0 writes)."""
        return self.mode is MmioMode.UNMAPPED

    def hole_hit(self) -> bool:
        """The CPU stopped at an unmapped address: map the ranges (True), or False if they
        were mapped already (the stop is an error of its own)."""
        if self.mode is not MmioMode.UNMAPPED:
            return False
        self._set(MmioMode.PRECISE)
        return True

    def paging_changed(self) -> None:
        """CR0 was written in mid-run: with paging on, a page walk may read a hole."""
        if self._uc.reg_read(UC_X86_REG_CR0) & CR0_PG:
            self.hole_hit()

    def _set(self, mode: MmioMode) -> None:
        if mode is self.mode:
            return
        uc = self._uc
        if mode is MmioMode.UNMAPPED:
            for hook in self._hooks:
                uc.hook_del(hook)
            self._hooks.clear()
            if self.mode is not None:
                for r in self._ranges:
                    uc.mem_unmap(r.first, r.last - r.first + 1)
        else:
            for r in self._ranges:
                uc.mmio_map(r.first, r.last - r.first + 1, self._on_read, r, self._on_write, r)
            if mode is MmioMode.PRECISE:
                self._hooks = [
                    uc.hook_add(
                        UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, _nothing, None, r.first, r.last
                    )
                    for r in self._ranges
                ]
        if self.mode is not None:
            # code compiled under the other mode brings EIP up to date for other accesses
            uc.ctl_flush_tb()
        self.mode = mode

    def _on_read(self, uc: Uc, offset: int, size: int, r: MmioRange) -> int:
        self.touched = True
        return r.read(offset, size)

    def _on_write(self, uc: Uc, offset: int, size: int, value: int, r: MmioRange) -> None:
        self.touched = True
        r.write(offset, size, value)
