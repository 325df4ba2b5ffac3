"""From a guest image to the machine at its first instruction: what the loader writes where,
and the registers it leaves. One plan for every format, checked before anything is written.

* flat (guest contract v1): the image at 0x100000, entered there, ESP at the top of RAM;
* multiboot (ELF or a.out kludge): the kernel's segments, its modules and the multiboot
  information, entered as the specification says (EAX = 0x2BADB002, EBX = the mbi) with
  a small stack in low memory where QEMU leaves one (ESP = 0x6F08): some tutorial kernels
  never set ESP and map only low memory.

Both enter in 32-bit protected mode, paging off, IF = 0, with the loader's flat GDT (0x08
code, 0x10 data); A20 is always on in vmlab (no gate is modelled).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from hypervisor.guest.bootinfo import BOOTLOADER_MAGIC, Placed, boot_info
from hypervisor.guest.formats import GuestFormat, ImageError, detect
from hypervisor.guest.multiboot import load_kernel
from hypervisor.platform.board import BDA, bios_data_area
from hypervisor.platform.mptable import FLOATING_POINTER, mp_tables
from hypervisor.vmm.contract import LOAD_ADDRESS, LOADER_GDT, LOADER_GDT_ENTRIES

if TYPE_CHECKING:
    from hypervisor.guest.image import GuestImage

MULTIBOOT_STACK = (0x6000, 0x6F08)  # (lowest address the loader keeps free, initial ESP)
FLAT_STACK_ROOM = 0x1000  # a flat image leaves at least a page of RAM above it for the stack


class GuestTooLarge(ImageError, ValueError):
    """The guest (kernel, modules, boot data) does not fit in the VM's RAM."""


@dataclass(frozen=True, slots=True)
class BootPlan:
    format: GuestFormat
    pieces: tuple[Placed, ...]  # what the loader writes, sorted by address, none overlapping
    eip: int
    esp: int
    eax: int = 0
    ebx: int = 0


def plan_boot(image: GuestImage, ram_size: int) -> BootPlan:
    """How `image` boots in `ram_size` bytes of RAM; ImageError (one line) if it cannot."""
    fmt = detect(image.data, image.source)
    gdt = Placed(
        "loader GDT", LOADER_GDT, b"".join(e.to_bytes(8, "little") for e in LOADER_GDT_ENTRIES)
    )
    if fmt is GuestFormat.FLAT:
        if image.modules or image.cmdline:
            raise ImageError(
                f"{image.source}: a flat image takes no modules or command line "
                "(those are for multiboot kernels)"
            )
        if LOAD_ADDRESS + len(image.data) > ram_size - FLAT_STACK_ROOM:
            raise GuestTooLarge(f"{image.name}: {len(image.data)} bytes do not fit in RAM")
        flat = _checked((gdt, Placed("image", LOAD_ADDRESS, image.data)), ram_size, image.source)
        return BootPlan(fmt, flat, LOAD_ADDRESS, ram_size)
    kernel = load_kernel(image.data, image.source)
    segments = tuple(
        Placed(f"kernel segment {i}", s.address, s.data + bytes(s.zeroed))
        for i, s in enumerate(kernel.segments)
    )
    info, mbi = boot_info(kernel, image.cmdline, image.modules, ram_size)
    low, esp = MULTIBOOT_STACK
    stack = Placed("loader stack", low, bytes(esp - low))
    bda = Placed("BIOS data area", BDA, bios_data_area())  # as `qemu -kernel` leaves it
    mp = Placed("Intel MP tables", FLOATING_POINTER, mp_tables())
    pieces = _checked((gdt, bda, mp, stack, *segments, *info), ram_size, image.source)
    return BootPlan(fmt, pieces, kernel.entry, esp, BOOTLOADER_MAGIC, mbi)


def _checked(pieces: tuple[Placed, ...], ram_size: int, source: str) -> tuple[Placed, ...]:
    """The pieces sorted by address, each inside RAM and none overlapping another."""
    ordered = sorted((p for p in pieces if p.data), key=lambda p: p.address)
    for piece in ordered:
        if piece.end > ram_size:
            raise GuestTooLarge(
                f"{source}: {piece.what} ({piece.address:#x}-{piece.end:#x}) lies outside "
                f"RAM ({ram_size >> 20} MiB): give the VM more with --ram"
            )
    for a, b in pairwise(ordered):
        if b.address < a.end:
            raise ImageError(
                f"{source}: {b.what} at {b.address:#x} overlaps {a.what} "
                f"({a.address:#x}-{a.end:#x})"
            )
    return tuple(ordered)
