"""Looking at a VM's MMU from outside (the page tables pane, the lesson): for one linear
address, the guest's page directory and table entries beside the entries the CPU really
uses (the monitor's shadow), and the walk linear → guest-physical → host-physical.

An executor offers this through `Executor.paging()`, so no caller reads the shadow's
internals or walks memory itself. Every value returned is frozen: the UI gets a snapshot,
computed in the engine thread, that the VM running on cannot change.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from hypervisor.machine.cpu import CR0_PE
from hypervisor.machine.machine import Machine
from hypervisor.machine.paging import PAGE_SIZE, PagingRegisters, Walk, walk
from hypervisor.vmm.mmu.shadow import OPEN_BUS_4M, POOL_PAGES, WINDOW_PDE, ShadowMmu


class PagingKind(StrEnum):
    """Whose page tables the CPU walks."""

    OFF = "paging off"  # linear = guest-physical
    BARE = "bare metal"  # the guest's own, on the real CPU
    SHADOW = "shadow"  # the monitor's, derived from the guest's
    DIRECT = "direct"  # the guest's own, validated by the monitor (pv)


@dataclass(frozen=True, slots=True)
class Entry:
    """One page-directory or page-table entry: where it lives and what it holds."""

    address: int  # guest-physical (the guest's) or monitor address (the shadow's)
    value: int

    @property
    def present(self) -> bool:
        return bool(self.value & 1)

    def flags(self) -> str:
        """The bits a reader looks for, as letters (P W U A D 4M)."""
        bits = ((0x01, "P"), (0x02, "W"), (0x04, "U"), (0x20, "A"), (0x40, "D"), (0x80, "4M"))
        return " ".join(name for bit, name in bits if self.value & bit) or "—"


@dataclass(frozen=True, slots=True)
class TablesView:
    """The entries met walking one address through one set of tables."""

    cr3: int
    pde: Entry
    pte: Entry | None  # None: a 4 MiB page, or the PDE is not present

    @property
    def present(self) -> bool:
        return self.pde.present and (self.pte is None or self.pte.present)


@dataclass(frozen=True, slots=True)
class PagingView:
    """A VM's MMU at one step, for one linear address."""

    kind: PagingKind
    linear: int
    why: str  # how the address was chosen ("EIP", "last write", "asked for")
    guest: TablesView | None  # None with paging off
    shadow: TablesView | None  # the monitor's tables (shadow paging only)
    guest_physical: int | None  # None: the guest's tables do not map it
    host_physical: int | None  # in host RAM (None: open bus, or the monitor's own memory)
    note: str  # what the walk ends in, when it is not plain RAM
    counts: tuple[tuple[str, int], ...]  # hidden faults, true faults, ptemods, flushes …
    spaces: int = 0  # address spaces with a cached shadow
    pool_used: int = 0  # pages of the shadow pool in use
    pool_pages: int = 0

    @property
    def shadow_bytes(self) -> int:
        return self.pool_used * PAGE_SIZE


class PagingIntrospection:
    """A read-only look at one VM's MMU (`shadow` None: the CPU walks the guest's tables)."""

    def __init__(
        self,
        machine: Machine,
        guest: PagingRegisters,
        shadow: ShadowMmu | None = None,
        direct: bool = False,
        counts: tuple[tuple[str, int], ...] = (),
        monitored: bool = False,
    ) -> None:
        self._machine = machine
        self._guest = guest
        self._shadow = shadow if shadow is not None and shadow.active else None
        self._direct = direct
        self._monitored = monitored  # the monitor's window is mapped at its fixed place
        self._mmu = shadow
        self._extra = counts  # the monitor's own counters of its MMU work, by name

    @property
    def enabled(self) -> bool:
        return self._guest.enabled

    def view(self, linear: int, why: str, ram_start: int | None = None) -> PagingView:
        """The walk of `linear`; `ram_start`: where the VM's RAM is said to be in host
        memory, when not where this machine's is (a time machine re-runs copies of a VM)."""
        linear &= 0xFFFFFFFF
        guest = self._tables(self._guest, linear)
        physical: int | None
        if guest is None:
            kind, physical = PagingKind.OFF, linear
        else:
            found = self._walk(self._guest, linear)
            physical = found.physical(linear) if found.present else None
            kind = (
                PagingKind.SHADOW
                if self._shadow is not None
                else PagingKind.DIRECT
                if self._direct
                else PagingKind.BARE
            )
        shadow = None
        if self._shadow is not None:
            shadow = self._tables(self._shadow.real_registers(CR0_PE), linear)
        host, note = self._host(linear, physical, shadow)
        if host is not None and ram_start is not None:
            host += ram_start - self._machine.ram.start
        mmu = self._mmu
        used = POOL_PAGES - len(mmu.free) if mmu is not None and mmu.spaces else 0
        return PagingView(
            kind,
            linear,
            why,
            guest,
            shadow,
            physical,
            host,
            note,
            self._counts(),
            spaces=0 if mmu is None else len(mmu.spaces),
            pool_used=used,
            pool_pages=0 if mmu is None else POOL_PAGES,
        )

    def _counts(self) -> tuple[tuple[str, int], ...]:
        mmu = self._mmu
        counts: list[tuple[str, int]] = []
        if mmu is not None:
            counts += [
                ("hidden faults", mmu.hidden_faults),
                ("true faults", mmu.true_faults),
                ("ptemods", mmu.ptemods),
                ("shadow flushes", mmu.flushes),
            ]
        return (*counts, *self._extra)

    def _host(
        self, linear: int, physical: int | None, shadow: TablesView | None
    ) -> tuple[int | None, str]:
        machine = self._machine
        if self._monitored and linear >> 22 == WINDOW_PDE:
            return None, "the monitor's window: here in every address space (kernel only)"
        if physical is None:
            return None, "not mapped by the guest: an access is a true page fault"
        if physical >= machine.ram_size:
            if self._monitored and physical >= OPEN_BUS_4M:
                return None, "a frame in the monitor's window: open bus instead (isolation)"
            return None, "outside the VM's RAM: open bus (reads all ones, writes dropped)"
        missing = self._shadow is not None and shadow is not None and not shadow.present
        return machine.ram.start + physical, (
            "not in the shadow yet: the first access is a hidden fault" if missing else ""
        )

    def _walk(self, registers: PagingRegisters, linear: int) -> Walk:
        return walk(self._read32, registers, linear)

    def _tables(self, registers: PagingRegisters, linear: int) -> TablesView | None:
        if not registers.enabled:
            return None
        found = self._walk(registers, linear)
        pte = None if found.pte_address is None else Entry(found.pte_address, found.pte or 0)
        return TablesView(registers.cr3 & 0xFFFFF000, Entry(found.pde_address, found.pde), pte)

    def _read32(self, address: int) -> int:
        return int(struct.unpack("<I", self._machine.read(address, 4))[0])
