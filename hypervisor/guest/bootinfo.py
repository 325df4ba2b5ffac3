"""The multiboot information structure (mbi) a kernel finds at EBX (spec 0.6.96, 3.3).

Laid out as QEMU's loader lays it out, with GRUB legacy's ELF section headers added:
the mbi at 0x9500 and the memory map at 0x9000 in conventional memory; on the page after the
kernel's end the module list, then the module strings, the command line and the boot
loader's name, packed in that order as QEMU packs them (a kernel that reads past the list
finds what it finds under QEMU), then the section headers; each module on its own page after
that. Every field the kernel may read has its flag bit set.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypervisor.guest.multiboot import Kernel
from hypervisor.platform.board import CONVENTIONAL_END, KIB, extended_memory, memory_map

BOOTLOADER_MAGIC = 0x2BADB002  # in EAX at entry: "a multiboot loader booted you"
MBI_ADDRESS = 0x9500
MMAP_ADDRESS = 0x9000
MBI_SIZE = 88  # up to and including the VBE fields
BOOT_DEVICE = 0x8000FFFF  # the first BIOS disk, no partition (QEMU's value)
LOADER_NAME = "vmlab"
PAGE = 0x1000

# mbi flags: which fields are valid
MBI_MEMORY = 1 << 0
MBI_BOOT_DEVICE = 1 << 1
MBI_CMDLINE = 1 << 2
MBI_MODULES = 1 << 3
MBI_ELF_SECTIONS = 1 << 5
MBI_MEMORY_MAP = 1 << 6
MBI_LOADER_NAME = 1 << 9
SH_ADDR = 12  # offset of sh_addr in an Elf32_Shdr


@dataclass(frozen=True, slots=True)
class Module:
    """A boot module (an initrd, a program, a file system image) and its string."""

    data: bytes
    string: str


@dataclass(frozen=True, slots=True)
class Placed:
    """A named piece of guest memory the loader fills: `data` at `address`."""

    what: str
    address: int
    data: bytes

    @property
    def end(self) -> int:
        return self.address + len(self.data)


class _Area:
    """Bump allocation of the loader's data after the kernel."""

    def __init__(self, start: int) -> None:
        self.cursor = start
        self.pieces: list[Placed] = []

    def put(self, what: str, data: bytes, align: int = 4) -> int:
        self.cursor = -(-self.cursor // align) * align
        self.pieces.append(Placed(what, self.cursor, data))
        self.cursor += len(data)
        return self.pieces[-1].address

    def fill(self, address: int, data: bytes) -> None:
        """Give a piece put earlier (with its final size) its contents."""
        i = next(i for i, p in enumerate(self.pieces) if p.address == address)
        assert len(data) == len(self.pieces[i].data)
        self.pieces[i] = Placed(self.pieces[i].what, address, data)

    def string(self, what: str, text: str) -> int:
        return self.put(what, text.encode("utf-8", "replace") + b"\0", 1)


def boot_info(
    kernel: Kernel, cmdline: str, modules: tuple[Module, ...], ram_size: int
) -> tuple[tuple[Placed, ...], int]:
    """(the pieces of memory to write, the mbi's address) for `kernel` booted with these."""
    area = _Area(-(-kernel.end // PAGE) * PAGE)
    flags = MBI_MEMORY | MBI_BOOT_DEVICE | MBI_CMDLINE | MBI_MODULES | MBI_MEMORY_MAP
    module_list = area.put("module list", bytes(16 * len(modules)))
    strings = [area.string(f"module {i} string", m.string) for i, m in enumerate(modules)]
    cmdline_at = area.string("command line", cmdline)
    name_at = area.string("boot loader name", LOADER_NAME)
    flags |= MBI_LOADER_NAME
    syms = bytes(16)
    if kernel.sections is not None:
        syms = _place_sections(kernel, area)
        flags |= MBI_ELF_SECTIONS
    entries = []
    for i, (module, string_at) in enumerate(zip(modules, strings, strict=True)):
        start = area.put(f"module {i}", module.data, PAGE)
        entries.append(struct.pack("<4I", start, start + len(module.data), string_at, 0))
    area.fill(module_list, b"".join(entries))
    mmap = b"".join(
        struct.pack("<IQQI", 20, r.base, r.length, int(r.type)) for r in memory_map(ram_size)
    )
    mbi = struct.pack(
        "<7I16s5I",
        flags,
        CONVENTIONAL_END // KIB,  # mem_lower
        extended_memory(ram_size) // KIB,  # mem_upper
        BOOT_DEVICE,
        cmdline_at,
        len(modules),
        module_list,
        syms,
        len(mmap),
        MMAP_ADDRESS,
        0,  # drives_length
        0,  # drives_addr
        0,  # config_table
    ) + struct.pack("<I", name_at)
    mbi = mbi.ljust(MBI_SIZE, b"\0")
    low = [Placed("memory map", MMAP_ADDRESS, mmap), Placed("multiboot info", MBI_ADDRESS, mbi)]
    return (*low, *area.pieces), MBI_ADDRESS


def _place_sections(kernel: Kernel, area: _Area) -> bytes:
    """Load the sections no segment holds (symbol and string tables) and the section
    header table pointing at them, as GRUB legacy does; the mbi's four `syms` words."""
    sections = kernel.sections
    assert sections is not None
    table = bytearray(sections.table)
    for index, contents in sections.unloaded:
        at = area.put(f"ELF section {index}", contents)
        struct.pack_into("<I", table, index * sections.entry_size + SH_ADDR, at)
    table_at = area.put("ELF section headers", bytes(table))
    return struct.pack("<4I", sections.count, sections.entry_size, table_at, sections.string_index)
