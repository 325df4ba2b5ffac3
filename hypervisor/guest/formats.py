"""What kind of guest image a file is, told by its content (never by its name).

vmlab boots three kinds of image (docs/multiboot.md):

* `flat` — vmlab's own samples: raw 32-bit code loaded at 0x100000 and entered at its first
  byte (guest contract v1); the paravirtual builds are flat images that carry `VMLAB-PV`;
* `multiboot-elf` — an ELF32 i386 executable with a multiboot v1 header in its first 8 KiB,
  as GRUB and `qemu-system-i386 -kernel` boot it;
* `multiboot-aout` — any other file with a multiboot header that gives its own load
  addresses (flag bit 16, the "a.out kludge").

Whatever is none of these is refused with one line: an ELF without a multiboot header, a
header whose checksum fails, a kernel with a multiboot2 header only (many courses build for
GRUB 2's `multiboot2`; `qemu -kernel` refuses those too), and — for files the user names —
a text file. Any other bytes
can be flat code (the CPU will say whether they are); that is all a flat image can be
checked for, which is why real kernels carry a multiboot header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from hypervisor.guest.nasm import GuestBuildError

MULTIBOOT_MAGIC = 0x1BADB002
HEADER_SEARCH = 8192  # the header must lie in the first 8 KiB, 32-bit aligned (spec 3.1.1)
MULTIBOOT2_MAGIC = 0xE85250D6  # multiboot2's header: 32 KiB, 64-bit aligned (GRUB 2 only)
MULTIBOOT2_SEARCH = 32768
ELF_MAGIC = b"\x7fELF"
FLAG_ADDRESSES = 1 << 16  # the header carries load addresses: the a.out kludge
TEXT_PROBE = 512  # bytes looked at to tell text from code


class GuestFormat(StrEnum):
    FLAT = "flat"
    MULTIBOOT_ELF = "multiboot-elf"
    MULTIBOOT_AOUT = "multiboot-aout"


class ImageError(GuestBuildError):
    """An image vmlab cannot boot; the message names the file and the problem in one line."""


@dataclass(frozen=True, slots=True)
class MultibootHeader:
    offset: int  # in the file
    flags: int
    # The a.out kludge's fields (meaningful with FLAG_ADDRESSES only).
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0


def find_header(data: bytes, source: str) -> MultibootHeader | None:
    """The multiboot header in the first 8 KiB, or None when there is no magic there."""
    window = data[:HEADER_SEARCH]
    for offset in range(0, len(window) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", window, offset)
        if magic != MULTIBOOT_MAGIC:
            continue
        if (magic + flags + checksum) & 0xFFFFFFFF:
            raise ImageError(
                f"{source}: the multiboot header at offset {offset:#x} fails its checksum"
            )
        if not flags & FLAG_ADDRESSES:
            return MultibootHeader(offset, flags)
        if offset + 32 > len(data):
            raise ImageError(f"{source}: the multiboot header at {offset:#x} is cut short")
        return MultibootHeader(offset, flags, *struct.unpack_from("<5I", data, offset + 12))
    return None


def _has_multiboot2_header(data: bytes) -> bool:
    """A multiboot2 header (magic, architecture, length, checksum) in the first 32 KiB."""
    window = data[:MULTIBOOT2_SEARCH]
    for offset in range(0, len(window) - 15, 8):
        magic, arch, length, checksum = struct.unpack_from("<IIII", window, offset)
        if magic == MULTIBOOT2_MAGIC and not (magic + arch + length + checksum) & 0xFFFFFFFF:
            return True
    return False


def detect(data: bytes, source: str) -> GuestFormat:
    """The image's format, or an ImageError saying in one line why it is none."""
    if not data:
        raise ImageError(f"{source}: the image is empty")
    header = find_header(data, source)
    if header is None and _has_multiboot2_header(data):
        raise ImageError(
            f"{source}: a multiboot2 kernel (header magic {MULTIBOOT2_MAGIC:#x}) without a "
            "multiboot v1 header: vmlab boots multiboot v1, as qemu -kernel does"
        )
    if data.startswith(ELF_MAGIC):
        if header is None:
            raise ImageError(
                f"{source}: an ELF file without a multiboot header in its first 8 KiB "
                "(vmlab boots multiboot kernels, as GRUB and qemu -kernel do)"
            )
        # QEMU and GRUB 2 take the header's own addresses when bit 16 asks for it.
        if header.flags & FLAG_ADDRESSES:
            return GuestFormat.MULTIBOOT_AOUT
        return GuestFormat.MULTIBOOT_ELF
    if header is not None:
        if not header.flags & FLAG_ADDRESSES:
            raise ImageError(
                f"{source}: a multiboot header without load addresses (flag bit 16) "
                "in a file that is not ELF"
            )
        return GuestFormat.MULTIBOOT_AOUT
    return GuestFormat.FLAT


def refuse_text(data: bytes, source: str) -> None:
    """A file the user names as a guest must not be text (`vmlab run /etc/hostname`): any
    bytes can be a flat image, so this is the one check that tells a wrong file from code."""
    if _looks_like_text(data):
        raise ImageError(f"{source}: a text file, not a guest image (flat, ELF or multiboot)")


def _looks_like_text(data: bytes) -> bool:
    """UTF-8 text of printable characters and whitespace. Code is never that for 512
    bytes: its opcodes, ModR/M bytes and addresses are not all printable UTF-8."""
    probe = data[:TEXT_PROBE]
    try:
        text = probe.decode("utf-8")
    except UnicodeDecodeError as err:
        cut = len(data) > len(probe) and err.reason == "unexpected end of data"
        if not cut:  # invalid UTF-8, not just a character cut at the probe's end
            return False
        text = probe[: err.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r\f" for c in text)
