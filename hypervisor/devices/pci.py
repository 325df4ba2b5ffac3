"""PCI configuration mechanism #1 with the functions of QEMU's PC that vmlab models.

Kernels probe 0xCF8/0xCFC at start-up to learn whether the machine has PCI and what sits on
it; an OS course's kernel lists what it finds ("lspci") before it looks for a driver. A
32-bit write to CONFIG_ADDRESS (0xCF8) is kept and reads back (as on the i440FX, narrower
ones are ignored: QEMU's PIIX puts its reset control at 0xCF9, which vmlab does not model);
with its enable bit set it selects one dword of one function's configuration space, and
CONFIG_DATA (0xCFC-0xCFF) reads or writes bytes of it.

Bus 0 holds the functions of `qemu-system-i386`'s PC (i440FX) whose hardware vmlab has, with
the registers SeaBIOS leaves in them (measured under QEMU 7.2): the host bridge (00:00.0),
the PIIX3 ISA bridge (00:01.0: the PIC, PIT, RTC and keyboard controller sit behind it) and
the standard VGA (00:02.0, its framebuffer BAR sized as QEMU's but open bus: vmlab has text
mode only). QEMU's PC also has the PIIX3 IDE (00:01.1) and ACPI (00:01.3) functions and an
e1000 network card (00:03.0); vmlab models none of those devices and lists none, so a
kernel's driver finds no device rather than one that never answers. An absent function
reads all ones (vendor ID 0xFFFF: "nothing here"), and writes go nowhere.

What a kernel may write: the command register, the cache line size, the interrupt line and
the BARs and expansion ROM address (a BAR keeps only its size's address bits, so writing
all ones and reading back gives the size, as enumerating kernels do). The rest reads as
measured and ignores writes (QEMU lets the chipset's own registers be written: PAM, PIRQ
routing; vmlab's chipset has no such routing to change).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

CONFIG_ADDRESS, CONFIG_DATA = 0xCF8, 0xCFC
ENABLE = 0x80000000
_ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}
SPACE = 256  # bytes of one function's configuration space
COMMAND, CACHE_LINE, BAR0, ROM, INTERRUPT_LINE = 0x04, 0x0C, 0x10, 0x30, 0x3C
COMMAND_BITS = 0x0507  # I/O, memory, bus master; parity error response, SERR, INTx disable


@dataclass(frozen=True, slots=True, eq=False)
class PciFunction:
    """One function as SeaBIOS leaves it: its nonzero dwords by offset, and the size mask of
    each BAR (0: not implemented) and of its expansion ROM."""

    device: int
    function: int
    registers: Mapping[int, int]
    bars: tuple[int, ...] = (0,) * 6
    rom: int = 0

    def space(self) -> bytearray:
        config = bytearray(SPACE)
        for offset, value in self.registers.items():
            config[offset : offset + 4] = value.to_bytes(4, "little")
        return config

    def writable(self) -> bytes:
        """A mask of the bits a kernel may change, byte by byte."""
        mask = bytearray(SPACE)
        mask[COMMAND : COMMAND + 2] = COMMAND_BITS.to_bytes(2, "little")
        mask[CACHE_LINE] = mask[INTERRUPT_LINE] = 0xFF
        for n, size in enumerate(self.bars):
            mask[BAR0 + 4 * n : BAR0 + 4 * n + 4] = size.to_bytes(4, "little")
        if self.rom:
            mask[ROM : ROM + 4] = (self.rom | 1).to_bytes(4, "little")  # bit 0: ROM enable
        return bytes(mask)


SUBSYSTEM = 0x11001AF4  # at 0x2C in each: QEMU's subsystem, Red Hat (0x1AF4) 0x1100
QEMU_PC = (
    PciFunction(  # i440FX host bridge: PAM registers (BIOS shadow RAM) and SMRAM as left
        0,
        0,
        {0x00: 0x12378086, 0x04: 0x00000103, 0x08: 0x06000002, 0x2C: SUBSYSTEM}
        | {0x54: 0x04000000, 0x58: 0x11111000, 0x5C: 0x33111111, 0x70: 0x000A0000},
    ),
    PciFunction(  # PIIX3 PCI-to-ISA bridge, multi-function; PIRQ routing to IRQs 10, 11
        1,
        0,
        {0x00: 0x70008086, 0x04: 0x02000103, 0x08: 0x06010000, 0x0C: 0x00800000}
        | {0x2C: SUBSYSTEM, 0x4C: 0x0003004D, 0x60: 0x0B0B0A0A, 0x68: 0x00000200}
        | {0x70: 0x00000080, 0x74: 0x0C0C0000, 0x78: 0x00000002, 0xA0: 0x00000008}
        | {0xA8: 0x0000000F},
    ),
    PciFunction(  # QEMU's standard VGA (1234:1111): 16 MiB prefetchable framebuffer, MMIO
        2,
        0,
        {0x00: 0x11111234, 0x04: 0x00000103, 0x08: 0x03000002, 0x10: 0xFD000008}
        | {0x18: 0xFEBF0000, 0x2C: SUBSYSTEM, 0x30: 0xFEBE0000},
        bars=(0xFF000000, 0, 0xFFFFF000, 0, 0, 0),
        rom=0xFFFF0000,
    ),
)


@dataclass(eq=False)
class PciHost:
    """CONFIG_ADDRESS that reads back; CONFIG_DATA that reaches the functions of bus 0."""

    name: str = "PCI"
    ports: tuple[int, ...] = (CONFIG_ADDRESS, *range(CONFIG_DATA, CONFIG_DATA + 4))
    functions: tuple[PciFunction, ...] = QEMU_PC
    address: int = 0
    spaces: dict[tuple[int, int], bytearray] = field(init=False)
    _masks: dict[tuple[int, int], bytes] = field(init=False)
    CHECKPOINTED = ("address", "spaces")
    NOT_CHECKPOINTED = ("name", "ports", "functions", "_masks")

    def __post_init__(self) -> None:
        self.spaces = {(f.device, f.function): f.space() for f in self.functions}
        self._masks = {(f.device, f.function): f.writable() for f in self.functions}

    def _selected(self, port: int, size: int) -> tuple[tuple[int, int], int] | None:
        """The function and byte offset a CONFIG_DATA access reaches (None: no function)."""
        address = self.address
        if not address & ENABLE or (address >> 16) & 0xFF:  # disabled, or not bus 0
            return None
        key = ((address >> 11) & 0x1F, (address >> 8) & 0x07)
        offset = (address & 0xFC) + port - CONFIG_DATA
        if key not in self.spaces or offset + size > SPACE:
            return None
        return key, offset

    def read(self, port: int, size: int) -> int:
        if port == CONFIG_ADDRESS:
            return self.address & _ALL_ONES[size]
        selected = self._selected(port, size)
        if selected is None:
            return _ALL_ONES[size]  # no function answers configuration cycles
        key, offset = selected
        return int.from_bytes(self.spaces[key][offset : offset + size], "little")

    def write(self, port: int, size: int, value: int) -> None:
        if port == CONFIG_ADDRESS:
            if size == 4:
                self.address = value
            return
        selected = self._selected(port, size)
        if selected is None:
            return
        key, offset = selected
        space, mask = self.spaces[key], self._masks[key]
        for i, byte in enumerate(value.to_bytes(size, "little")):
            keep = mask[offset + i]
            space[offset + i] = (space[offset + i] & ~keep) | (byte & keep)
