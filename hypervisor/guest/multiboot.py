"""Multiboot v1 kernels: where their bytes go and where they are entered (spec 0.6.96, 3.1).

Two ways a kernel says where it lives, as GRUB and QEMU read them:

* ELF: each PT_LOAD segment is copied to its physical address `p_paddr` and the rest of its
  `p_memsz` is zeroed (BSS). A higher-half kernel links at virtual addresses (0xC0100000)
  but loads at physical ones (1 MiB): an entry point given as a virtual address is
  translated through the segment that holds it, as GRUB does; one given as a physical
  address (xv6 links at 0x80100000 and enters at its physical `_start`) is taken as it is.
* the a.out kludge (header flag bit 16): the header gives `load_addr`, `load_end_addr`,
  `bss_end_addr` and `entry_addr`; the file is loaded from the offset that puts the header
  at `header_addr`.

Everything is checked before anything is written: a truncated file, a segment outside RAM, a
required feature vmlab does not provide — each is one line, nothing half loaded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from hypervisor.guest.formats import (
    FLAG_ADDRESSES,
    GuestFormat,
    ImageError,
    MultibootHeader,
    detect,
    find_header,
)

# Header flags 0-15 are requirements: a loader that cannot meet one must refuse the kernel.
FLAG_PAGE_ALIGN = 1 << 0  # modules on 4 KiB boundaries (vmlab always does that)
FLAG_MEMORY_INFO = 1 << 1  # mem_lower/mem_upper and the memory map (always given)
FLAG_VIDEO_MODE = 1 << 2  # a preferred video mode: the text mode vmlab gives is one answer
SUPPORTED_REQUIREMENTS = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE


@dataclass(frozen=True, slots=True)
class Segment:
    """`data` at physical `address`, followed by `zeroed` bytes of zeros (BSS)."""

    address: int
    data: bytes
    zeroed: int = 0

    @property
    def end(self) -> int:
        return self.address + len(self.data) + self.zeroed


@dataclass(frozen=True, slots=True)
class SectionHeaders:
    """The ELF section header table as GRUB legacy hands it over (mbi flags bit 5): the
    table itself, with the sections that are in no segment (symbols, strings) to be loaded
    by the boot loader after the kernel and their `sh_addr` set to where they land."""

    count: int
    entry_size: int
    string_index: int
    table: bytes  # count * entry_size bytes, sh_addr of unloaded sections still 0
    unloaded: tuple[tuple[int, bytes], ...]  # (index, contents) of sections to place


@dataclass(frozen=True, slots=True)
class Kernel:
    format: GuestFormat
    segments: tuple[Segment, ...]
    entry: int  # physical
    sections: SectionHeaders | None = None

    @property
    def end(self) -> int:
        return max(s.end for s in self.segments)


def load_kernel(data: bytes, source: str) -> Kernel:
    """Where a multiboot kernel's bytes go and its physical entry point."""
    fmt = detect(data, source)
    header = find_header(data, source)
    if fmt is GuestFormat.FLAT or header is None:
        raise ImageError(f"{source}: not a multiboot kernel (no multiboot header)")
    unmet = header.flags & 0xFFFF & ~SUPPORTED_REQUIREMENTS
    if unmet:
        raise ImageError(f"{source}: the kernel requires multiboot features {unmet:#x}")
    if fmt is GuestFormat.MULTIBOOT_AOUT:
        return _aout(data, header, source)
    return _elf(data, source)


def _aout(data: bytes, header: MultibootHeader, source: str) -> Kernel:
    h = header
    assert h.flags & FLAG_ADDRESSES
    start = h.offset - (h.header_addr - h.load_addr)
    if h.load_addr > h.header_addr or start < 0:
        raise ImageError(f"{source}: the multiboot header's load_addr lies after header_addr")
    end = h.load_end_addr - h.load_addr + start if h.load_end_addr else len(data)
    if end > len(data) or end < start:
        raise ImageError(f"{source}: the file ends before load_end_addr: truncated")
    loaded = Segment(h.load_addr, data[start:end])
    if h.bss_end_addr:
        if h.bss_end_addr < loaded.end:
            raise ImageError(f"{source}: bss_end_addr lies before the end of the loaded image")
        loaded = Segment(h.load_addr, loaded.data, h.bss_end_addr - loaded.end)
    if not loaded.address <= h.entry_addr < loaded.end:
        raise ImageError(f"{source}: the entry point {h.entry_addr:#x} is not in the image")
    return Kernel(GuestFormat.MULTIBOOT_AOUT, (loaded,), h.entry_addr)


def _elf(data: bytes, source: str) -> Kernel:
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 32 or not elf.little_endian or elf["e_machine"] != "EM_386":
            raise ImageError(f"{source}: not a 32-bit x86 ELF (vmlab's CPU is i386)")
        if elf["e_type"] != "ET_EXEC":
            raise ImageError(f"{source}: an ELF {elf['e_type']}, not an executable")
        segments, entry = _elf_segments(elf, data, source)
        sections = _section_headers(elf, data, source)
    except ImageError:
        raise
    except (ELFError, ValueError, KeyError, OSError) as err:  # pyelftools on a broken file
        raise ImageError(f"{source}: a broken ELF file ({err})") from None
    return Kernel(GuestFormat.MULTIBOOT_ELF, segments, entry, sections)


def _elf_segments(elf: ELFFile, data: bytes, source: str) -> tuple[tuple[Segment, ...], int]:
    segments, entry, physical = [], None, False
    e_entry = elf["e_entry"]
    for ph in elf.iter_segments():
        if ph["p_type"] != "PT_LOAD" or not ph["p_memsz"]:
            continue
        offset, filesz, memsz = ph["p_offset"], ph["p_filesz"], ph["p_memsz"]
        if offset + filesz > len(data):
            raise ImageError(f"{source}: a segment runs past the end of the file: truncated")
        if filesz > memsz:
            raise ImageError(f"{source}: a segment's file size exceeds its memory size")
        segments.append(Segment(ph["p_paddr"], data[offset : offset + filesz], memsz - filesz))
        if ph["p_vaddr"] <= e_entry < ph["p_vaddr"] + memsz:
            entry = e_entry - ph["p_vaddr"] + ph["p_paddr"]
        physical = physical or ph["p_paddr"] <= e_entry < ph["p_paddr"] + memsz
    if not segments:
        raise ImageError(f"{source}: an ELF without a loadable segment")
    if entry is None and physical:
        # A higher-half kernel that gives its entry as a physical address already (xv6's
        # `_start = V2P_WO(entry)`): QEMU and GRUB jump to e_entry as it is.
        entry = e_entry
    if entry is None:
        raise ImageError(f"{source}: the entry point {e_entry:#x} is in no segment")
    return tuple(segments), entry


def _section_headers(elf: ELFFile, data: bytes, source: str) -> SectionHeaders | None:
    count, size, offset = elf["e_shnum"], elf["e_shentsize"], elf["e_shoff"]
    if not count or not offset:
        return None
    if offset + count * size > len(data):
        raise ImageError(f"{source}: the section header table runs past the end of the file")
    unloaded = []
    for index, section in enumerate(elf.iter_sections()):
        h = section.header
        if index and not h["sh_addr"] and h["sh_type"] != "SHT_NOBITS" and h["sh_size"]:
            if h["sh_offset"] + h["sh_size"] > len(data):
                raise ImageError(f"{source}: section {index} runs past the end of the file")
            unloaded.append((index, data[h["sh_offset"] : h["sh_offset"] + h["sh_size"]]))
    table = data[offset : offset + count * size]
    return SectionHeaders(count, size, elf["e_shstrndx"], table, tuple(unloaded))
