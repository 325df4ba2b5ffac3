"""Open bus: every address that is neither RAM nor monitor memory reads all ones, drops writes,
and reports each access to the machine's owner, naming the instruction that made it.

Naming the instruction needs an exact EIP in the access's callback, and unicorn brings EIP up
to date for an MMIO access only in code compiled while a memory hook of that kind existed
(for loads a read hook, for stores a write hook), or for code with a code hook on each
instruction. How the holes are kept depends on the clock (docs/clock.md):

* MAPPED (the count clock, whose count hook keeps EIP exact): one MMIO region per hole.
* PRECISE (the block clock, when it must): MAPPED plus an empty memory hook bounded to each
  hole. Its price: unicorn then checks the hooks on every load and store (~10% on code that
  stores a lot).
* UNMAPPED (the block clock's usual state): the holes are left unmapped. Unicorn stops the CPU
  *before* an access to an unmapped address with EIP on the instruction, which has done
  nothing (as a page fault leaves it); the clock then makes the bus PRECISE and goes on from
  that instruction, which runs through the MMIO region as under MAPPED. The next run goes back
  to UNMAPPED if it made no open-bus access. A page walk is no access unicorn can stop at (an
  unmapped page table reads as zeros, not all ones), so UNMAPPED is only used while paging is
  off: a run that starts with paging on is PRECISE, and the clock stops after any `mov cr0`
  so that paging turned on mid-run makes the bus PRECISE before the next instruction.

(A store to a write-protected page needs none of this: unicorn stops at it as at an unmapped
address, and EIP is exact in the write-protect hook.)
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_CR0

from hypervisor.machine.cpu import CR0_PG

ReadCallback = Callable[[Uc, int, int, int], int]
WriteCallback = Callable[[Uc, int, int, int, int], None]


class OpenBusMode(StrEnum):
    MAPPED = "mapped"
    PRECISE = "precise"
    UNMAPPED = "unmapped"


def _nothing(*_: object) -> None:
    """A memory hook whose only effect is that unicorn keeps EIP exact for that access."""


class OpenBus:
    """The holes of one CPU's address space (see the module docstring); under the block
    clock, its `MemoryMap` (blockclock.py)."""

    def __init__(
        self,
        uc: Uc,
        holes: list[tuple[int, int]],
        read: ReadCallback,
        write: WriteCallback,
        fast: bool,
    ) -> None:
        """`holes`: (first, last) addresses; `fast`: the block clock runs this CPU."""
        self._uc = uc
        self._holes = holes
        self._read, self._write = read, write
        self._adaptive = fast
        self.touched = False  # an open-bus access since the last run started
        self._hooks: list[int] = []
        self.mode: OpenBusMode | None = None
        self._set(OpenBusMode.UNMAPPED if fast else OpenBusMode.MAPPED)

    def before_run(self, paging: bool) -> None:
        """Under the block clock: UNMAPPED for this run unless paging is on or the last run
        made an open-bus access (a guest probing the bus keeps it PRECISE)."""
        if not self._adaptive:
            return
        touched, self.touched = self.touched, False
        self._set(OpenBusMode.PRECISE if paging or touched else OpenBusMode.UNMAPPED)

    @property
    def fast(self) -> bool:
        """The holes are unmapped (the clock then watches for CR0 writes)."""
        return self.mode is OpenBusMode.UNMAPPED

    def hole_hit(self) -> bool:
        """The CPU stopped at an unmapped address: map the holes (True), or False if they
        were mapped already (the stop is an error of its own)."""
        if self.mode is not OpenBusMode.UNMAPPED:
            return False
        self._set(OpenBusMode.PRECISE)
        return True

    def paging_changed(self) -> None:
        """CR0 was written in mid-run: with paging on, a page walk may read a hole."""
        if self._uc.reg_read(UC_X86_REG_CR0) & CR0_PG:
            self.hole_hit()

    def _set(self, mode: OpenBusMode) -> None:
        if mode is self.mode:
            return
        uc = self._uc
        if mode is OpenBusMode.UNMAPPED:
            for hook in self._hooks:
                uc.hook_del(hook)
            self._hooks.clear()
            if self.mode is not None:
                for first, last in self._holes:
                    uc.mem_unmap(first, last - first + 1)
        else:
            for first, last in self._holes:
                uc.mmio_map(first, last - first + 1, self._on_read, first, self._on_write, first)
            if mode is OpenBusMode.PRECISE:
                self._hooks = [
                    uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, _nothing, None, first, last)
                    for first, last in self._holes
                ]
        if self.mode is not None:
            # code compiled under the other mode brings EIP up to date for other accesses
            uc.ctl_flush_tb()
        self.mode = mode

    def _on_read(self, uc: Uc, offset: int, size: int, base: int) -> int:
        self.touched = True
        return self._read(uc, offset, size, base)

    def _on_write(self, uc: Uc, offset: int, size: int, value: int, base: int) -> None:
        self.touched = True
        self._write(uc, offset, size, value, base)
