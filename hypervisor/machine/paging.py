"""32-bit paging (4 KiB pages, and 4 MiB pages with CR4.PSE) as the CPU walks it.

While the guest runs, unicorn's own MMU translates every access at full speed. Python walks
the same tables only where the machine layer acts for the CPU, exactly as the CPU would:
reading the IDT, GDT and TSS and pushing an interrupt frame (with the permission checks,
accessed and dirty bits, and a #PF when a page is missing), and, without any side effect,
reading instruction bytes at linear addresses for the monitor's events and the code pane.
At a #PF raised by unicorn, which sets CR2 but reports no error code (fact 2), the error
code is rebuilt from the same walk (`error_code`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from hypervisor.isa import Instruction
from hypervisor.machine.cpu import CR0_PG, CR0_WP, CR4_PSE

PAGE_SIZE = 0x1000
LARGE_PAGE_SIZE = 0x400000

# Page-directory and page-table entry bits.
PTE_PRESENT = 0x01
PTE_WRITABLE = 0x02
PTE_USER = 0x04
PTE_ACCESSED = 0x20
PTE_DIRTY = 0x40
PTE_LARGE = 0x80  # PS in a page-directory entry: a 4 MiB page (with CR4.PSE)
LARGE_RESERVED = 1 << 21  # reserved in a 4 MiB PDE (bits 20:13 are PSE-36's high address)

# #PF error-code bits. I/D (bit 4) exists only with PAE/NX or SMEP: always 0 here.
PF_PRESENT = 0x01  # the page was present: a protection (or reserved-bit) violation
PF_WRITE = 0x02
PF_USER = 0x04  # the access was made at CPL 3
PF_RESERVED = 0x08


@dataclass(frozen=True, slots=True)
class PagingRegisters:
    """The control-register bits that steer translation."""

    cr0: int
    cr3: int
    cr4: int

    @property
    def enabled(self) -> bool:
        return bool(self.cr0 & CR0_PG)


@dataclass(frozen=True, slots=True)
class Access:
    """One access as the CPU makes it: a write or not, at CPL 3 (user) or not."""

    write: bool = False
    user: bool = False


SUPERVISOR_READ = Access()


class PageFault(Exception):
    """The CPU raises #PF: CR2 = `linear`, with `error_code`."""

    def __init__(self, linear: int, error_code: int) -> None:
        super().__init__(f"page fault at {linear:#010x} (error code {error_code:#x})")
        self.linear = linear
        self.error_code = error_code


@dataclass(frozen=True, slots=True)
class Walk:
    """What the tables say about one linear address: the entries met on the way."""

    pde_address: int
    pde: int
    pte_address: int | None  # None for a 4 MiB page, or a PDE that is not present
    pte: int | None

    @property
    def large(self) -> bool:
        return self.pte_address is None and bool(self.pde & PTE_PRESENT)

    @property
    def present(self) -> bool:
        return bool(self.pde & PTE_PRESENT) and (self.large or bool((self.pte or 0) & PTE_PRESENT))

    @property
    def leaf(self) -> int:
        """The entry that maps the page (the PDE of a 4 MiB page, else the PTE)."""
        return self.pde if self.large else self.pte or 0

    @property
    def user(self) -> bool:
        return bool(self.pde & self.leaf & PTE_USER)

    @property
    def writable(self) -> bool:
        return bool(self.pde & self.leaf & PTE_WRITABLE)

    def physical(self, linear: int) -> int:
        if self.large:
            return (self.pde & 0xFFC00000) | (linear & (LARGE_PAGE_SIZE - 1))
        return ((self.pte or 0) & 0xFFFFF000) | (linear & (PAGE_SIZE - 1))


Read32 = Callable[[int], int]


def walk(read32: Read32, registers: PagingRegisters, linear: int) -> Walk:
    """Read the entries for `linear` (no side effect)."""
    pde_address = (registers.cr3 & 0xFFFFF000) | ((linear >> 22) << 2)
    pde = read32(pde_address)
    if not pde & PTE_PRESENT or (pde & PTE_LARGE and registers.cr4 & CR4_PSE):
        return Walk(pde_address, pde, None, None)
    pte_address = (pde & 0xFFFFF000) | (((linear >> 12) & 0x3FF) << 2)
    return Walk(pde_address, pde, pte_address, read32(pte_address))


def fetch_faulted(insn: Instruction | None, eip: int, cr2: int) -> bool:
    """Was the #PF at `eip` with CR2 = `cr2` the fetch of the instruction there (`insn`,
    decoded from what can be read of it, None if not all of it)? Then nothing of it ran:
    the instruction before it (a jump there) retired."""
    return insn is None or eip <= cr2 < eip + insn.size


def fault_code(found: Walk, access: Access, registers: PagingRegisters) -> int | None:
    """The #PF error code `access` would get through `found`, or None when it is allowed."""
    requested = (PF_WRITE if access.write else 0) | (PF_USER if access.user else 0)
    if not found.present:
        return requested
    if found.large and found.pde & LARGE_RESERVED:
        return requested | PF_PRESENT | PF_RESERVED
    if access.user and not found.user:
        return requested | PF_PRESENT
    if access.write and not found.writable and (access.user or registers.cr0 & CR0_WP):
        return requested | PF_PRESENT
    return None


class LinearMemory:
    """Guest memory at linear addresses, through the page tables the CPU uses now.

    `read_physical`/`write_physical` reach guest-physical memory (open bus outside RAM);
    `registers` gives the paging registers in force (the real ones on bare metal, the
    guest's virtual ones under a monitor).
    """

    def __init__(
        self,
        read_physical: Callable[[int, int], bytes],
        write_physical: Callable[[int, bytes], object],
        registers: Callable[[], PagingRegisters],
    ) -> None:
        self._read = read_physical
        self._write = write_physical
        self.registers = registers

    def _read32(self, address: int) -> int:
        return int(struct.unpack("<I", self._read(address, 4))[0])

    def translate(self, linear: int, access: Access = SUPERVISOR_READ) -> int:
        """The physical address of `linear` for `access`, setting accessed and dirty bits
        as the CPU does; raises PageFault where the CPU would."""
        registers = self.registers()
        if not registers.enabled:
            return linear
        return self._translate(registers, linear, access)

    def _translate(self, registers: PagingRegisters, linear: int, access: Access) -> int:
        found = walk(self._read32, registers, linear)
        code = fault_code(found, access, registers)
        if code is not None:
            if found.pde & PTE_PRESENT and not found.large:  # the CPU read through the PDE
                self._set_bits(found.pde_address, found.pde, PTE_ACCESSED)
            raise PageFault(linear, code)
        dirty = PTE_DIRTY if access.write else 0
        if found.large:
            self._set_bits(found.pde_address, found.pde, PTE_ACCESSED | dirty)
        else:
            self._set_bits(found.pde_address, found.pde, PTE_ACCESSED)
            self._set_bits(found.pte_address or 0, found.leaf, PTE_ACCESSED | dirty)
        return found.physical(linear)

    def _set_bits(self, address: int, entry: int, bits: int) -> None:
        if entry & bits != bits:
            self._write(address, struct.pack("<I", entry | bits))

    def _pieces(self, linear: int, size: int, access: Access) -> list[tuple[int, int]]:
        """(physical, length) per page of the range; every page checked before any use."""
        registers = self.registers()
        if not registers.enabled:
            return [(linear, size)]
        pieces = []
        while size:
            length = min(size, PAGE_SIZE - (linear & (PAGE_SIZE - 1)))
            pieces.append((self._translate(registers, linear, access), length))
            linear, size = (linear + length) & 0xFFFFFFFF, size - length
        return pieces

    def read(self, linear: int, size: int, user: bool = False) -> bytes:
        """Read as the CPU does for itself (descriptor tables: supervisor) or for CPL 3."""
        if not self.registers().cr0 & CR0_PG:  # no walk (every trap reads through here)
            return self._read(linear, size)
        return b"".join(self._read(p, n) for p, n in self._pieces(linear, size, Access(user=user)))

    def write(self, linear: int, data: bytes, user: bool = False) -> None:
        """Write as the CPU does (an interrupt frame): every page is checked first, so a
        fault on the second page leaves the first one unchanged, as on the CPU."""
        if not self.registers().cr0 & CR0_PG:
            self._write(linear, data)
            return
        offset = 0
        for physical, length in self._pieces(linear, len(data), Access(write=True, user=user)):
            self._write(physical, data[offset : offset + length])
            offset += length

    def peek(self, linear: int, size: int) -> bytes:
        """Read without any side effect or fault (for decoding and display): the bytes up
        to the first page that is not mapped."""
        registers = self.registers()
        if not registers.cr0 & CR0_PG:
            return self._read(linear, size)
        out = b""
        while size:
            found = walk(self._read32, registers, linear)
            if not found.present:
                break
            length = min(size, PAGE_SIZE - (linear & (PAGE_SIZE - 1)))
            out += self._read(found.physical(linear), length)
            linear, size = (linear + length) & 0xFFFFFFFF, size - length
        return out

    def lookup(self, linear: int, registers: PagingRegisters | None = None) -> Walk | None:
        """The walk for `linear` when paging is on (None when it is off)."""
        registers = registers or self.registers()
        return walk(self._read32, registers, linear) if registers.enabled else None
