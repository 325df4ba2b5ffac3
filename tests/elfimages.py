"""Tiny ELF32 and a.out-kludge multiboot images built byte by byte, for the loader's tests:
each field is set on purpose, so a test can break exactly one thing."""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0x1BADB002
MB_FLAGS = 0x3  # page-aligned modules, memory information
HLT_LOOP = b"\xfa\xf4\xeb\xfd"  # cli; hlt; jmp $-1


def multiboot_header(flags: int = MB_FLAGS, checksum: int | None = None) -> bytes:
    if checksum is None:
        checksum = -(MAGIC + flags) & 0xFFFFFFFF
    return struct.pack("<III", MAGIC, flags, checksum)


@dataclass
class Seg:
    vaddr: int
    paddr: int
    data: bytes
    memsz: int | None = None


def elf(
    segments: list[Seg],
    entry: int,
    header: bytes | None = None,
    symbols: bool = False,
    machine: int = 3,
) -> bytes:
    """An ELF32 i386 executable: the multiboot header first in the first segment's bytes,
    then each segment's data; with `symbols`, a .symtab/.strtab no segment holds."""
    header = multiboot_header() if header is None else header
    ehsize, phsize, shsize = 52, 32, 40
    body = bytearray()
    offsets = []
    data_start = ehsize + phsize * len(segments)
    for i, seg in enumerate(segments):
        offsets.append(data_start + len(body))
        body += (header + seg.data) if i == 0 else seg.data
    phdrs = b""
    for i, (seg, offset) in enumerate(zip(segments, offsets, strict=True)):
        filesz = len(seg.data) + (len(header) if i == 0 else 0)
        memsz = seg.memsz if seg.memsz is not None else filesz
        phdrs += struct.pack("<8I", 1, offset, seg.vaddr, seg.paddr, filesz, memsz, 7, 0x1000)
    shoff = shnum = shstrndx = 0
    sections = b""
    if symbols:
        symtab = bytes(16) + struct.pack("<IIIBBH", 1, entry, 0, 0x12, 0, 1)
        strtab = b"\0kmain\0"
        shstr = b"\0.text\0.symtab\0.strtab\0.shstrtab\0"
        place = data_start + len(body)
        body += symtab + strtab + shstr
        sym_off, str_off, shs_off = place, place + len(symtab), place + len(symtab) + len(strtab)
        shoff = data_start + len(body)
        text = segments[0]
        sections = bytes(shsize)
        sections += struct.pack(
            "<10I", 1, 1, 6, text.vaddr, offsets[0], len(text.data) + len(header), 0, 0, 16, 0
        )
        sections += struct.pack("<10I", 7, 2, 0, 0, sym_off, len(symtab), 3, 1, 4, 16)
        sections += struct.pack("<10I", 15, 3, 0, 0, str_off, len(strtab), 0, 0, 1, 0)
        sections += struct.pack("<10I", 23, 3, 0, 0, shs_off, len(shstr), 0, 0, 1, 0)
        shnum, shstrndx = 5, 4
    ident = b"\x7fELF\x01\x01\x01" + bytes(9)
    ehdr = ident + struct.pack(
        "<HHIIIIIHHHHHH",
        2,
        machine,
        1,
        entry,
        ehsize,
        shoff,
        0,
        ehsize,
        phsize,
        len(segments),
        shsize,
        shnum,
        shstrndx,
    )
    return bytes(ehdr + phdrs + body + sections)


def aout(load: int = 0x100000, code: bytes = HLT_LOOP, bss: int = 0, entry_delta: int = 0) -> bytes:
    """A flat file whose multiboot header (flag bit 16) says where it goes: the header at
    offset 0 (= `load`), the code right after it, entered at its first byte + entry_delta."""
    flags = MB_FLAGS | 1 << 16
    end = load + 32 + len(code)
    fields = struct.pack("<5I", load, load, end, end + bss if bss else 0, load + 32 + entry_delta)
    return multiboot_header(flags) + fields + code
