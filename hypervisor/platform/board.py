"""The board: what a PC puts where, the same for bare metal and every VM.

One table says which device answers which I/O ports and memory ranges, and one function
gives the memory map a boot loader reports (BIOS e820 types, as QEMU's PC gives them). A
kernel built for GRUB or `qemu -kernel` expects this layout; vmlab's own samples use only
the ports and RAM above 1 MiB.

Below 1 MiB a PC has 639 KiB of conventional memory, the extended BIOS data area up to
640 KiB, the VGA window 0xA0000-0xBFFFF (the text buffer at 0xB8000) and the option and
system BIOS ROMs up to 1 MiB. In vmlab all of it is guest RAM (so checkpoints, time travel
and traces hold the screen); the memory map marks what a kernel must not use. Every address
neither RAM nor a device answers is open bus (reads all ones, writes dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

KIB, MIB = 1 << 10, 1 << 20
CONVENTIONAL_END = 0x9FC00  # 639 KiB: where the extended BIOS data area begins
VGA_WINDOW = (0xA0000, 0xC0000)
VGA_TEXT = (0xB8000, 0xC0000)  # colour text mode: 80x25 cells of (character, attribute)
BIOS_AREA = (0xF0000, 0x100000)  # the system BIOS ROM: reserved, as QEMU reports it
EXTENDED_BASE = 0x100000  # 1 MiB: where kernels load
FIRMWARE_TABLES = 128 * 1024  # reserved at the top of RAM, as SeaBIOS does
BIOS_ROM = 0xFFFC0000  # the top 256 KiB of the address space
MIN_RAM = 2 * MIB
MAX_RAM = 1024 * MIB


class MemoryType(IntEnum):
    """Types of a memory map entry (multiboot mmap, BIOS e820)."""

    AVAILABLE = 1
    RESERVED = 2


@dataclass(frozen=True, slots=True)
class MemoryRange:
    base: int
    length: int
    type: MemoryType
    what: str

    @property
    def end(self) -> int:
        return self.base + self.length


@dataclass(frozen=True, slots=True)
class PortRange:
    device: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class MmioRange:
    device: str
    first: int
    last: int
    ram_backed: bool  # the device's memory is guest RAM (checkpointed with it)


PORTS = (  # device names as the devices call themselves (`PortDevice.name`)
    PortRange("PIC", 0x20, 0x21),  # the master 8259; the slave answers 0xA0-0xA1
    PortRange("PIT", 0x40, 0x43),
    PortRange("8042", 0x60, 0x60),  # keyboard controller: 0x60 data, 0x64 status/command
    PortRange("port61", 0x61, 0x61),  # system control port B: PIT channel 2 gate and OUT
    PortRange("8042", 0x64, 0x64),
    PortRange("RTC", 0x70, 0x71),  # CMOS: index (bit 7 masks NMI), data
    PortRange("POST", 0x80, 0x80),  # POST codes; kernels write here to wait (reads 0xFF)
    PortRange("port92", 0x92, 0x92),  # system control port A: fast A20 gate, fast reset
    PortRange("PIC", 0xA0, 0xA1),
    PortRange("isa-debug-exit", 0xF4, 0xF4),  # QEMU's: ends the run (exit status (v << 1) | 1)
    PortRange("VGA", 0x3B4, 0x3DA),  # CRTC 0x3D4/0x3D5 (mono alias 0x3B4), 0x3C0-0x3CF, 0x3DA
    PortRange("COM1", 0x3F8, 0x3FF),
    PortRange("fw_cfg", 0x510, 0x511),  # QEMU's firmware configuration: selector, data
    PortRange("PCI", 0xCF8, 0xCF8),  # configuration mechanism #1: CONFIG_ADDRESS
    PortRange("PCI", 0xCFC, 0xCFF),  # CONFIG_DATA (no devices: all ones)
    PortRange("debug-exit", 0x501, 0x501),  # vmlab's: ends the run with status N
    PortRange("platform-id", 0x502, 0x502),  # vmlab's: the VM's own name (a clone's identity)
)
MMIO = (MmioRange("VGA", VGA_TEXT[0], VGA_TEXT[1] - 1, ram_backed=True),)


BDA = 0x400  # the BIOS data area: what the BIOS found, where real-mode software looks
COM1_BASE = 0x3F8
CRTC_BASE = 0x3D4  # the VGA's CRT controller (colour)
VIDEO_80X25_COLOUR = 0b10 << 4  # the equipment word's initial video mode bits


def bios_data_area() -> bytes:
    """The BIOS data area as a PC's BIOS leaves it (0x400-0x489): the serial port bases (COM1
    only), no parallel ports, the EBDA's segment at 0x40E (kernels find the Intel MP tables
    and ACPI's RSDP by it), the equipment word, at 0x413 the KiB of conventional memory below
    the EBDA, and the video BIOS's record of the text screen it set up (mode 3, 80x25 colour,
    the CRTC at 0x3D4, cursor home): kernels read the CRTC's port from 0x463 and the
    adapter's kind from the equipment word, as QEMU's VGA BIOS leaves them."""
    bda = bytearray(0x8A)
    bda[0x00:0x02] = COM1_BASE.to_bytes(2, "little")  # 0x400: COM1-COM4; 0x408: LPT1-LPT3
    bda[0x0E:0x10] = (CONVENTIONAL_END >> 4).to_bytes(2, "little")  # 0x40E: a real-mode segment
    equipment = 1 << 9 | VIDEO_80X25_COLOUR | 1 << 1  # one serial port, 80x25 colour, an FPU
    bda[0x10:0x12] = equipment.to_bytes(2, "little")
    bda[0x13:0x15] = (CONVENTIONAL_END // KIB).to_bytes(2, "little")
    bda[0x49] = 0x03  # video mode 3: 80x25 16-colour text
    bda[0x4A:0x4C] = (80).to_bytes(2, "little")  # columns
    bda[0x4C:0x4E] = (0x1000).to_bytes(2, "little")  # a page, as the VGA BIOS rounds it
    bda[0x60:0x62] = b"\x07\x06"  # cursor shape: scan lines 6-7 (end, start)
    bda[0x63:0x65] = CRTC_BASE.to_bytes(2, "little")  # the CRT controller's index port
    bda[0x84] = 25 - 1  # rows minus one
    bda[0x85:0x87] = (16).to_bytes(2, "little")  # character height in scan lines
    return bytes(bda)


def ports_of(device: str) -> set[int]:
    """Every port the board gives `device`."""
    return {port for r in PORTS if r.device == device for port in range(r.first, r.last + 1)}


def memory_map(ram_size: int) -> tuple[MemoryRange, ...]:
    """The memory map of a PC with `ram_size` bytes of RAM, as QEMU's firmware reports it:
    usable RAM below 640 KiB and from 1 MiB up to the firmware's tables (SeaBIOS keeps its
    ACPI tables in the last 128 KiB of RAM), the BIOS areas reserved, and the BIOS ROM at
    the top of the address space (open bus in vmlab, whose monitor window lies there)."""
    tables = ram_size - FIRMWARE_TABLES
    return (
        MemoryRange(0, CONVENTIONAL_END, MemoryType.AVAILABLE, "conventional memory"),
        MemoryRange(
            CONVENTIONAL_END,
            VGA_WINDOW[0] - CONVENTIONAL_END,
            MemoryType.RESERVED,
            "extended BIOS data area",
        ),
        MemoryRange(BIOS_AREA[0], BIOS_AREA[1] - BIOS_AREA[0], MemoryType.RESERVED, "system BIOS"),
        MemoryRange(EXTENDED_BASE, tables - EXTENDED_BASE, MemoryType.AVAILABLE, "extended memory"),
        MemoryRange(tables, FIRMWARE_TABLES, MemoryType.RESERVED, "firmware tables"),
        MemoryRange(BIOS_ROM, (1 << 32) - BIOS_ROM, MemoryType.RESERVED, "BIOS ROM"),
    )


def extended_memory(ram_size: int) -> int:
    """Bytes of usable RAM from 1 MiB on (multiboot's mem_upper, in KiB, counts them)."""
    return ram_size - FIRMWARE_TABLES - EXTENDED_BASE


def parse_ram_size(text: str) -> int:
    """`32M`, `256MiB`, `4096K`, `1G` or a number of bytes: a RAM size vmlab can give a VM
    (a whole number of 4 KiB pages, 2 MiB to 1 GiB). ValueError with the reason otherwise."""
    units = {"": 1, "K": KIB, "M": MIB, "G": 1 << 30}
    spec = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (spec[:-1], spec[-1]) if spec[-1:] in units else (spec, "")
    if not number.isdigit():
        raise ValueError(f"{text!r} is not a RAM size (e.g. 32M, 256M, 1G)")
    size = int(number) * units[unit]
    if size % (4 * KIB) or not MIN_RAM <= size <= MAX_RAM:
        raise ValueError(f"RAM must be whole 4 KiB pages from 2 MiB to 1 GiB, not {text}")
    return size
