"""Shadow page tables: the CPU runs on page tables the monitor derives from the guest's.

The guest's CR0.PG, CR3 and CR4 are virtual (MOV CR traps at CPL 1 and is emulated). While
the guest has paging on, the real CPU has it on too, with CR3 pointing at a page directory
in the monitor's own memory (a pool of pages mapped in the VM's window). The shadow starts
empty and fills on demand, like a TLB the monitor manages in software:

* a **hidden** page fault is one the guest's own tables would not raise: the shadow simply
  had no entry yet (or a read-only one kept to catch the first write, for the dirty bit).
  The monitor walks the guest's tables, sets their accessed/dirty bits as the CPU would,
  fills the shadow entry and resumes; the guest never sees it;
* a **true** page fault is one the guest's tables raise: it is reflected through the virtual
  IDT with the guest's CR2 and error code.

The shadow is flushed where the CPU would drop its TLB: a CR3 load, INVLPG of a page (just
that entry), a change of PG, WP or PSE. So a guest that follows the architecture's rules
(flush after changing an entry) sees exactly its own tables; a shadow is not kept across
CR3 loads (no shadow cache yet, so no page-table page needs write-protecting).

Guest-physical frames are the VM's RAM, mapped 1:1; a frame outside RAM is open bus (the
machine's sealed holes); a frame in the monitor's window is redirected to open bus as well,
never to monitor memory. The window itself stays mapped at its place in every shadow
(supervisor only): a guest mapping of those linear addresses is ignored, and the guest kernel
sees the monitor's window there (its user code gets a page fault).
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
    PTE_USER,
    PTE_WRITABLE,
    Access,
    PagingRegisters,
    Walk,
)

POOL_PAGES = 64  # the shadow page directory and up to 63 shadow page tables
WINDOW_PDE = MONITOR_BASE >> 22
OPEN_BUS_4M = MONITOR_BASE - LARGE_PAGE_SIZE  # a hole below the window: all ones, no owner
_WINDOW_ENTRY = MONITOR_BASE | PTE_LARGE | PTE_WRITABLE | PTE_PRESENT


@dataclass
class ShadowMmu:
    """The shadow page tables of one VM (plain data: checkpoints copy it with the vCPU; the
    pool's contents are monitor memory, which the machine's snapshot keeps)."""

    pool: int  # monitor address of the pool; its first page is the shadow page directory
    ram_size: int
    active: bool = False  # the guest has paging on
    tables: dict[int, int] = field(default_factory=dict)  # PDE index -> shadow page table
    hidden_faults: int = 0
    true_faults: int = 0
    flushes: int = 0

    def real_registers(self, monitor_cr0: int) -> PagingRegisters:
        """What the real CPU runs the guest with while the shadow is active."""
        return PagingRegisters(monitor_cr0 | CR0_PG | CR0_WP, self.pool, CR4_PSE)

    def flush(self, machine: Machine, active: bool) -> None:
        """Forget every shadow entry (a CR3 load, PG/WP/PSE changed)."""
        self.active = active
        self.tables.clear()
        self.flushes += 1
        directory = bytearray(PAGE_SIZE)
        struct.pack_into("<I", directory, WINDOW_PDE * 4, _WINDOW_ENTRY)
        machine.write_monitor(self.pool, bytes(directory), code=False)

    def invalidate(self, machine: Machine, linear: int) -> None:
        """INVLPG: drop the shadow entry for the page of `linear`."""
        index = linear >> 22
        if index == WINDOW_PDE:
            return
        table = self.tables.get(index)
        if table is None:
            machine.write_monitor(self.pool + index * 4, bytes(4), code=False)
        else:
            machine.write_monitor(table + ((linear >> 12) & 0x3FF) * 4, bytes(4), code=False)

    def fill(
        self, machine: Machine, guest: PagingRegisters, found: Walk, linear: int, access: Access
    ) -> None:
        """A hidden fault: copy the guest's entry for `linear` into the shadow, setting the
        guest's accessed (and, for a write, dirty) bits as the CPU would."""
        self.hidden_faults += 1
        leaf_address = found.pde_address if found.large else found.pte_address or 0
        dirty = PTE_DIRTY if access.write else 0
        if not found.large:
            _set_bits(machine, found.pde_address, found.pde, PTE_ACCESSED)
        leaf = found.leaf | PTE_ACCESSED | dirty
        _set_bits(machine, leaf_address, found.leaf, PTE_ACCESSED | dirty)
        rights = PTE_PRESENT
        if found.user:
            rights |= PTE_USER
        if found.writable and leaf & PTE_DIRTY:
            rights |= PTE_WRITABLE  # else read-only until the first write sets D
        elif access.write and not access.user and not guest.cr0 & CR0_WP:
            rights = PTE_PRESENT | PTE_WRITABLE  # ring 0 writes a read-only page: WP = 0
        index = linear >> 22
        if found.large:
            wanted = found.pde & 0xFFC00000
            frame = self._frame(wanted, LARGE_PAGE_SIZE)
            entry = frame | rights | PTE_LARGE
            machine.write_monitor(self.pool + index * 4, struct.pack("<I", entry), code=False)
            return frame == wanted
        wanted = found.physical(linear) & ~(PAGE_SIZE - 1)
        frame = self._frame(wanted, PAGE_SIZE)
        table = self._table(machine, index)
        entry = struct.pack("<I", frame | rights)
        machine.write_monitor(table + ((linear >> 12) & 0x3FF) * 4, entry, code=False)
        return frame == wanted

    def _frame(self, frame: int, size: int) -> int:
        """Where a guest-physical frame is in the machine: itself (RAM, or open bus outside
        it), but never the monitor's window."""
        if frame + size > MONITOR_BASE:
            return OPEN_BUS_4M + (frame & (LARGE_PAGE_SIZE - 1))
        return frame

    def _table(self, machine: Machine, index: int) -> int:
        table = self.tables.get(index)
        if table is not None:
            return table
        if len(self.tables) == POOL_PAGES - 1:  # the pool is full: start again
            self.flush(machine, True)
        table = self.pool + PAGE_SIZE * (len(self.tables) + 1)
        machine.write_monitor(table, bytes(PAGE_SIZE), code=False)
        self.tables[index] = table
        entry = table | PTE_USER | PTE_WRITABLE | PTE_PRESENT  # rights are the PTE's
        machine.write_monitor(self.pool + index * 4, struct.pack("<I", entry), code=False)
        return table


def _set_bits(machine: Machine, address: int, entry: int, bits: int) -> None:
    if entry & bits != bits:
        machine.write(address, struct.pack("<I", entry | bits))
