"""Shadow page tables: the CPU runs on page tables the monitor derives from the guest's.

The guest's CR0.PG, CR3 and CR4 are virtual (MOV CR traps at CPL 1 and is emulated). While
the guest has paging on, the real CPU has it on too, with CR3 pointing at a shadow page
directory in the monitor's own memory (a pool of pages mapped in the VM's window). A shadow
starts empty and fills on demand:

* a **hidden** page fault is one the guest's own tables would not raise: the shadow simply
  had no entry yet (or a read-only one kept to catch the first write, for the dirty bit).
  The monitor walks the guest's tables, sets their accessed/dirty bits as the CPU would,
  fills the shadow entry and resumes; the guest never sees it;
* a **true** page fault is one the guest's tables raise: it is reflected through the virtual
  IDT with the guest's CR2 and error code.

**A cache of shadows, one per address space** (per guest CR3), so that a task switch does not
rebuild everything. A cached shadow stays exact because every guest page-table page it was
derived from is *traced*: the shadow maps that frame read-only, so a guest write to it faults
(a `ptemod`). The monitor then drops the shadow entries derived from that page and stops
tracing it; the write goes ahead on a writable mapping; the next walk through the page traces
it again. INVLPG drops one entry; CR0/CR4 writes and PG on/off drop every shadow. Guest 4 MiB
pages are shadowed by 4 KiB entries (so a traced page inside one stays read-only alone).

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

POOL_PAGES = 64  # shadow page directories and page tables, for every address space
WINDOW_PDE = MONITOR_BASE >> 22
OPEN_BUS_4M = MONITOR_BASE - LARGE_PAGE_SIZE  # a hole below the window: all ones, no owner
_WINDOW_ENTRY = MONITOR_BASE | PTE_LARGE | PTE_WRITABLE | PTE_PRESENT
_FRAME = 0xFFFFF000
_WHOLE_SPACE = -1  # "derived from the page directory itself"

Derivation = tuple[int, int]  # (address space, PDE index or _WHOLE_SPACE)


@dataclass
class ShadowMmu:
    """The shadow page tables of one VM (plain data: checkpoints copy it with the vCPU; the
    pool's contents are monitor memory, which the machine's snapshot keeps)."""

    pool: int  # monitor address of the pool
    ram_size: int
    active: bool = False  # the guest has paging on
    space: int = 0  # the guest page directory now in use (its CR3 frame)
    spaces: dict[int, int] = field(default_factory=dict)  # guest PD frame -> shadow PD
    tables: dict[Derivation, int] = field(default_factory=dict)  # -> shadow page table
    traced: dict[int, set[Derivation]] = field(default_factory=dict)  # guest table frame ->
    free: list[int] = field(default_factory=list)  # pool pages not in use
    exact: bool = True  # False once a page table was mapped writable (it maps itself)
    hidden_faults: int = 0
    true_faults: int = 0
    ptemods: int = 0
    flushes: int = 0

    def real_registers(self, monitor_cr0: int) -> PagingRegisters:
        """What the real CPU runs the guest with while the shadow is active."""
        return PagingRegisters(monitor_cr0 | CR0_PG | CR0_WP, self.spaces[self.space], CR4_PSE)

    # ------------------------------------------------------------------ the cache
    def flush(self, machine: Machine, active: bool, cr3: int) -> None:
        """Forget every shadow (PG, WP or PSE changed), then use the one for `cr3`."""
        self.active = active
        self.spaces.clear()
        self.tables.clear()
        self.traced.clear()
        self.free = [self.pool + PAGE_SIZE * i for i in range(POOL_PAGES)]
        self.flushes += 1
        self.exact = True
        if active:
            self.switch(machine, cr3)

    def switch(self, machine: Machine, cr3: int) -> None:
        """A CR3 load: the cached shadow of that address space, or a new empty one."""
        if not self.exact:  # a page table maps itself writable: no shadow can be kept
            self.exact = True
            self.flush(machine, True, cr3)
            return
        self.space = cr3 & _FRAME
        if self.space in self.spaces:
            return
        if not self.free:
            self.flush(machine, True, cr3)
            return
        directory = bytearray(PAGE_SIZE)
        struct.pack_into("<I", directory, WINDOW_PDE * 4, _WINDOW_ENTRY)
        page = self.free.pop()
        machine.write_monitor(page, bytes(directory), code=False)
        self.spaces[self.space] = page
        self._trace(machine, self.space, (self.space, _WHOLE_SPACE))

    def invalidate(self, machine: Machine, linear: int) -> None:
        """INVLPG: drop the current shadow's entry for the page of `linear`."""
        table = self.tables.get((self.space, linear >> 22))
        if table is not None:
            machine.write_monitor(table + ((linear >> 12) & 0x3FF) * 4, bytes(4), code=False)

    def traces(self, frame: int) -> bool:
        return frame in self.traced

    def page_table_written(self, machine: Machine, frame: int) -> None:
        """A ptemod: the guest writes page-table page `frame`. Drop what was derived from it
        and stop tracing it: the write then goes ahead on a writable mapping."""
        self.ptemods += 1
        for space, index in self.traced.pop(frame, set()):
            if index == _WHOLE_SPACE:
                self._drop_space(machine, space)
            else:
                self._drop_table(machine, space, index)

    # ------------------------------------------------------------------ filling
    def fill(
        self, machine: Machine, guest: PagingRegisters, found: Walk, linear: int, access: Access
    ) -> bool:
        """A hidden fault: copy the guest's entry for `linear` into the shadow, setting the
        guest's accessed (and, for a write, dirty) bits as the CPU would. False when the
        guest's frame lies in the monitor's window (it got open bus instead)."""
        self.hidden_faults += 1
        leaf_address = found.pde_address if found.large else found.pte_address or 0
        dirty = PTE_DIRTY if access.write else 0
        if not found.large:
            _set_bits(machine, found.pde_address, found.pde, PTE_ACCESSED)
        leaf = found.leaf | PTE_ACCESSED | dirty
        _set_bits(machine, leaf_address, found.leaf, PTE_ACCESSED | dirty)
        wanted = found.physical(linear) & _FRAME
        frame = wanted if wanted < OPEN_BUS_4M else OPEN_BUS_4M + (wanted & 0x3FF000)
        rights = PTE_PRESENT | (PTE_USER if found.user else 0)
        if found.writable and leaf & PTE_DIRTY:
            rights |= PTE_WRITABLE  # else read-only until the first write sets D
        elif access.write and not access.user and not guest.cr0 & CR0_WP:
            rights = PTE_PRESENT | PTE_WRITABLE  # ring 0 writes a read-only page: WP = 0
        index = linear >> 22
        table = self._table(machine, index, found)
        if frame in self.traced:
            if access.write and frame in (found.pde & _FRAME, self.space):
                self.exact = False  # a table writing itself: keep no shadow past a CR3 load
            else:
                rights &= ~PTE_WRITABLE  # a traced page-table page
        entry = struct.pack("<I", frame | rights)
        machine.write_monitor(table + ((linear >> 12) & 0x3FF) * 4, entry, code=False)
        return frame == wanted

    def _table(self, machine: Machine, index: int, found: Walk) -> int:
        key = (self.space, index)
        table = self.tables.get(key)
        if table is not None:
            return table
        if not self.free:  # the pool is full: every shadow goes, the current one restarts
            self.flush(machine, True, self.space)
        table = self.free.pop()
        machine.write_monitor(table, bytes(PAGE_SIZE), code=False)
        self.tables[key] = table
        entry = table | PTE_USER | PTE_WRITABLE | PTE_PRESENT  # the rights are the PTE's
        directory = self.spaces[self.space]
        machine.write_monitor(directory + index * 4, struct.pack("<I", entry), code=False)
        if not found.large:  # a guest page table: traced (a 4 MiB page: its PDE, in the PD)
            self._trace(machine, found.pde & _FRAME, key)
        return table

    def _trace(self, machine: Machine, frame: int, derivation: Derivation) -> None:
        """Trace guest page-table page `frame`: no shadow maps it writable any more."""
        first = frame not in self.traced
        self.traced.setdefault(frame, set()).add(derivation)
        if not first:
            return
        for table in self.tables.values():
            raw = bytearray(machine.read(table, PAGE_SIZE))
            entries = struct.unpack("<1024I", raw)
            hits = [i for i, e in enumerate(entries) if e & PTE_WRITABLE and e & _FRAME == frame]
            for i in hits:
                machine.write_monitor(table + 4 * i, struct.pack("<I", entries[i] & ~2), False)

    def _drop_table(self, machine: Machine, space: int, index: int) -> None:
        table = self.tables.pop((space, index), None)
        if table is None:
            return
        directory = self.spaces.get(space)
        if directory is not None:
            machine.write_monitor(directory + index * 4, bytes(4), code=False)
        self.free.append(table)

    def _drop_space(self, machine: Machine, space: int) -> None:
        for key in [k for k in self.tables if k[0] == space]:
            self._drop_table(machine, *key)
        directory = self.spaces.pop(space, None)
        if directory is not None:
            self.free.append(directory)
        if space == self.space and self.active:
            self.switch(machine, space)  # the current one: start it again, empty


def _set_bits(machine: Machine, address: int, entry: int, bits: int) -> None:
    if entry & bits != bits:
        machine.write(address, struct.pack("<I", entry | bits))
