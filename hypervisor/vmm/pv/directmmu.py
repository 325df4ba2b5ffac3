"""Direct paging (Xen's method): the CPU walks a paravirtual kernel's own page tables.

There is no shadow. The real CR3 points at the guest's page directory, in the guest's RAM;
a guest-physical frame is the VM's RAM at that address (each VM has a physical address space
of its own, its RAM at 0: see docs/paging.md, "Direct paging"). What keeps the guest inside
its RAM is validation. A page directory becomes the CPU's only through `new_baseptr`, which
*pins* it: the directory and every page table it points to are checked entry by entry and
from then on change only through `mmu_update`, each new entry checked the same way:

* no frame outside the VM's RAM (`E_FAULT`);
* no writable mapping of a pinned page directory or page table (`E_PERM`): the CPU runs with
  CR0.WP set, so a direct write to a table faults, even from the kernel's ring;
* nothing in the monitor's window: directory entry 1023 is the monitor's (`E_PERM`), filled
  with its window when the directory is pinned.

What counts is kept per frame: how many directory entries point to each pinned page table,
how many writable mappings each frame has in pinned tables. A frame becomes a page table
only while nothing maps it writable, and nothing maps a table writable while it is one.
The CPU runs with CR4.PSE on (the window is one 4 MiB page), so a directory entry with PS
set is a 4 MiB page whatever the guest's CR4 says, as CR0.WP is on whatever its CR0 says.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hypervisor.machine.cpu import CR0_PG, CR0_WP, CR4_PSE
from hypervisor.machine.machine import MONITOR_BASE, Machine
from hypervisor.machine.paging import (
    LARGE_PAGE_SIZE,
    PAGE_SIZE,
    PTE_ACCESSED,
    PTE_DIRTY,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_WRITABLE,
    PagingRegisters,
)
from hypervisor.vmm.emulate import Unsupported
from hypervisor.vmm.pv.errors import E_FAULT, E_INVAL, E_PERM, HypercallError

WINDOW_INDEX = MONITOR_BASE >> 22  # the directory entry that maps the monitor's window
WINDOW_ENTRY = MONITOR_BASE | PTE_LARGE | PTE_WRITABLE | PTE_PRESENT  # supervisor only
FRAME = 0xFFFFF000
_LARGE_FRAME = 0xFFC00000


@dataclass
class DirectMmu:
    """The pinned page tables of one VM (plain data: checkpoints copy it with the vCPU)."""

    ram_size: int
    active: bool = False  # the CPU runs on the guest's tables
    directory: int = 0  # the pinned page directory in the real CR3
    directories: set[int] = field(default_factory=set)  # pinned page directories
    tables: dict[int, int] = field(default_factory=dict)  # page table -> PDEs pointing to it
    writable: dict[int, int] = field(default_factory=dict)  # frame -> writable mappings
    updates: int = 0  # entries written by mmu_update
    refused: int = 0  # updates and directories refused
    pinned_writes: int = 0  # direct writes to a pinned table (each faulted)

    def real_registers(self, monitor_cr0: int) -> PagingRegisters:
        return PagingRegisters(monitor_cr0 | CR0_PG | CR0_WP, self.directory, CR4_PSE)

    def is_table(self, frame: int) -> bool:
        return frame in self.directories or frame in self.tables

    # ------------------------------------------------------------------ what the guest asks
    def new_baseptr(self, machine: Machine, directory: int) -> None:
        """Pin `directory` (if it is not yet) and make it the CPU's: HypercallError if any
        of its entries, or of the page tables it points to, is refused."""
        if directory & ~FRAME:
            raise self._refuse(E_INVAL, f"page directory {directory:#x} is not page-aligned")
        self._in_ram(directory, PAGE_SIZE, "page directory")
        if directory not in self.directories:
            self._pin_directory(machine, directory)
        self.directory, self.active = directory, True

    def update(self, machine: Machine, address: int, value: int) -> None:
        """mmu_update of one entry: the 32-bit entry at guest-physical `address` becomes
        `value`. An entry of a page that is no pinned table is written as it is: it is
        checked when a directory entry first points to its page."""
        if address & 3:
            raise self._refuse(E_INVAL, f"entry address {address:#x} is not 4-byte aligned")
        self._in_ram(address, 4, "entry")
        frame, index = address & FRAME, (address >> 2) & 0x3FF
        old = _read32(machine, address)
        if frame in self.directories:
            if index == WINDOW_INDEX:
                raise self._refuse(E_PERM, _window_why(value & FRAME))
            self._check_pde(machine, index, value, self._pinned())
            self._forget_pde(machine, old)
            self._count_pde(machine, value)
        elif frame in self.tables:
            self._check_leaf(value, False, self._pinned())
            self._count_leaf(old, False, -1)
            self._count_leaf(value, False, +1)
        machine.write(address, struct.pack("<I", value))
        self.updates += 1

    def flush_tlb(self, machine: Machine, monitor_cr0: int) -> None:
        """INVLPG, and after an update: loading CR3 again empties unicorn's TLB (all of it:
        more than INVLPG asks, never less)."""
        if self.active:
            machine.load_paging(self.real_registers(monitor_cr0))

    # ------------------------------------------------------------------ MOV CR, INVLPG
    # The emulations of a kernel that still executes them (vmm/emulate.py's GuestMmu).
    def flush(self, machine: Machine, active: bool, cr3: int) -> None:
        """CR0.PG, WP or a CR4 paging bit changed: every pin goes; paging on again pins
        the directory in CR3 from scratch."""
        self.directories.clear()
        self.tables.clear()
        self.writable.clear()
        self.active = False
        if active:
            self.switch(machine, cr3)

    def switch(self, machine: Machine, cr3: int) -> None:
        """MOV to CR3: new_baseptr, but a refusal stops the VM (no error code to give)."""
        try:
            self.new_baseptr(machine, cr3 & FRAME)
        except HypercallError as refused:
            raise Unsupported(f"MOV to CR3 under direct paging: {refused.why}") from None

    def invalidate(self, machine: Machine, linear: int) -> None:
        """The world switch back into the guest loads CR3 again, which empties the TLB."""

    # ------------------------------------------------------------------ validation
    def _pin_directory(self, machine: Machine, directory: int) -> None:
        if directory in self.tables:
            raise self._refuse(E_PERM, f"page {directory:#x} is a page table, not a directory")
        entries = _entries(machine, directory)
        window = entries[WINDOW_INDEX] & ~(PTE_ACCESSED | PTE_DIRTY)  # the CPU sets those
        if window & PTE_PRESENT and window != WINDOW_ENTRY:
            raise self._refuse(E_PERM, _window_why(directory))
        new = {
            e & FRAME
            for i, e in enumerate(entries)
            if i != WINDOW_INDEX and e & PTE_PRESENT and not e & PTE_LARGE
        } - self.tables.keys()
        tables = self._pinned() | new | {directory}
        for index, entry in enumerate(entries):
            if index != WINDOW_INDEX:
                self._check_pde(machine, index, entry, tables, checked=new)
        for table in new:
            self._check_new_table(machine, table, tables)
        if self.writable.get(directory):
            raise self._refuse(E_PERM, _mapped_why(directory, "directory"))
        self.directories.add(directory)
        for index, entry in enumerate(entries):
            if index != WINDOW_INDEX:
                self._count_pde(machine, entry)
        machine.write(directory + WINDOW_INDEX * 4, struct.pack("<I", WINDOW_ENTRY))

    def _check_pde(
        self,
        machine: Machine,
        index: int,
        entry: int,
        tables: set[int],
        checked: set[int] | None = None,
    ) -> None:
        """A directory entry: a 4 MiB page is a leaf; a page table must be one already, or
        pass the checks of a new one (unless the caller checks those: `checked`)."""
        if not entry & PTE_PRESENT:
            return
        if index == WINDOW_INDEX:
            raise self._refuse(E_PERM, _window_why(entry & FRAME))
        if entry & PTE_LARGE:
            self._check_leaf(entry, True, tables)
            return
        table = entry & FRAME
        self._in_ram(table, PAGE_SIZE, "page table")
        if table in self.directories:
            raise self._refuse(E_PERM, f"page {table:#x} is a page directory, not a table")
        if table not in self.tables and (checked is None or table not in checked):
            self._check_new_table(machine, table, tables | {table})

    def _check_new_table(self, machine: Machine, table: int, tables: set[int]) -> None:
        if self.writable.get(table):
            raise self._refuse(E_PERM, _mapped_why(table, "table"))
        for entry in _entries(machine, table):
            self._check_leaf(entry, False, tables)

    def _check_leaf(self, entry: int, large: bool, tables: set[int]) -> None:
        """A mapping of a page (4 KiB, or 4 MiB from a directory entry)."""
        if not entry & PTE_PRESENT:
            return
        first, size = (entry & _LARGE_FRAME, LARGE_PAGE_SIZE) if large else (entry & FRAME, 4096)
        self._in_ram(first, size, "mapped frame")
        if entry & PTE_WRITABLE:
            if not large:
                hit = first if first in tables else None
            else:
                hit = next((t for t in tables if first <= t < first + size), None)
            if hit is not None:
                why = f"entry {entry:#010x} would map page table {hit:#x} writable"
                raise self._refuse(E_PERM, why)

    def _in_ram(self, address: int, size: int, what: str) -> None:
        if address + size > self.ram_size:
            why = f"{what} {address:#010x} is outside the VM's {self.ram_size >> 10} KiB of RAM"
            raise self._refuse(E_FAULT, why)

    def _refuse(self, code: int, why: str) -> HypercallError:
        self.refused += 1
        return HypercallError(code, why)

    def _pinned(self) -> set[int]:
        return self.directories | self.tables.keys()

    # ------------------------------------------------------------------ the counts
    def _count_pde(self, machine: Machine, entry: int) -> None:
        if not entry & PTE_PRESENT:
            return
        if entry & PTE_LARGE:
            self._count_leaf(entry, True, +1)
            return
        table = entry & FRAME
        self.tables[table] = self.tables.get(table, 0) + 1
        if self.tables[table] == 1:
            for leaf in _entries(machine, table):
                self._count_leaf(leaf, False, +1)

    def _forget_pde(self, machine: Machine, entry: int) -> None:
        if not entry & PTE_PRESENT:
            return
        if entry & PTE_LARGE:
            self._count_leaf(entry, True, -1)
            return
        table = entry & FRAME
        self.tables[table] -= 1
        if not self.tables[table]:
            del self.tables[table]
            for leaf in _entries(machine, table):
                self._count_leaf(leaf, False, -1)

    def _count_leaf(self, entry: int, large: bool, delta: int) -> None:
        if entry & (PTE_PRESENT | PTE_WRITABLE) != PTE_PRESENT | PTE_WRITABLE:
            return
        first, count = (entry & _LARGE_FRAME, 1024) if large else (entry & FRAME, 1)
        for frame in range(first, first + count * PAGE_SIZE, PAGE_SIZE):
            left = self.writable.get(frame, 0) + delta
            if left:
                self.writable[frame] = left
            else:
                self.writable.pop(frame, None)


def _entries(machine: Machine, frame: int) -> tuple[int, ...]:
    return struct.unpack("<1024I", machine.read(frame, PAGE_SIZE))


def _read32(machine: Machine, address: int) -> int:
    value: int = struct.unpack("<I", machine.read(address, 4))[0]
    return value


def _window_why(frame: int) -> str:
    return f"directory entry {WINDOW_INDEX} ({frame:#x}) is the monitor's window, not the guest's"


def _mapped_why(frame: int, what: str) -> str:
    return f"page {frame:#x} is mapped writable: it cannot become a page {what}"
