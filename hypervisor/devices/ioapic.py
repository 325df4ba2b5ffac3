"""The I/O APIC (82093AA-style, memory-mapped at 0xFEC00000), ID 0, 24 input pins.

Two registers in the page: IOREGSEL (offset 0x00) selects an indirect register, IOWIN
(0x10) reads or writes it. Indirect registers: 0x00 ID (bits 24-27), 0x01 version
0x170020 (version 0x20, 24 redirection entries, as QEMU's), 0x02 arbitration ID (the ID),
0x10 + 2n / 0x11 + 2n the low / high half of pin n's redirection entry: vector (bits
0-7), delivery mode (8-10: fixed 0 and lowest priority 1 are delivered; the others are not
modelled), destination mode (11: physical APIC ID, or logical flat), delivery status (12,
read-only, never seen set), polarity (13), remote IRR (14, read-only), trigger (15: edge 0,
level 1), mask (16), destination (56-63). Every entry is masked at reset.

The PC's ISA interrupts reach pins as QEMU wires them: IRQ n to pin n, except the PIT's
IRQ 0, which comes to pin 2 (the MP table's interrupt source override). A device's
interrupt here is an edge (a pulse): an edge entry delivers it if unmasked (a masked one
loses it, as the chip does); a level entry delivers it and sets remote IRR, and takes no
other until the local APIC's EOI for its vector clears remote IRR (vmlab's devices do not
hold their lines, so a level entry is not re-sent after the EOI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

IOAPIC_BASE = 0xFEC00000
IOAPIC_SIZE = 0x1000
PINS = 24
VERSION = 0x00170020  # what QEMU's reports (version 0x20: 24 entries)
IOREGSEL, IOWIN = 0x00, 0x10
REG_ID, REG_VERSION, REG_ARBITRATION, REG_TABLE = 0x00, 0x01, 0x02, 0x10

MASKED = 1 << 16
LEVEL = 1 << 15
REMOTE_IRR = 1 << 14
LOGICAL = 1 << 11
_READ_ONLY = REMOTE_IRR | 1 << 12
PIT_PIN = 2  # the PIT's IRQ 0 (interrupt source override)


def pin_of_isa_irq(irq: int) -> int:
    return PIT_PIN if irq == 0 else irq


class ApicBus(Protocol):
    """The local APIC, as the I/O APIC's messages reach it."""

    def addressed(self, destination: int, logical: bool) -> bool: ...

    def accept(self, vector: int, level: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class RedirectionView:
    pin: int
    vector: int
    masked: bool
    level: bool
    remote_irr: bool
    destination: int


@dataclass(eq=False)
class IoApic:
    apic: ApicBus
    ioapic_id: int = field(default=0, init=False)
    select: int = field(default=0, init=False)
    table: list[int] = field(default_factory=lambda: [MASKED] * PINS, init=False)
    CHECKPOINTED = ("ioapic_id", "select", "table")
    NOT_CHECKPOINTED = ("apic",)

    # --- MMIO --------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if offset & ~3 == IOREGSEL:
            value = self.select
        elif offset & ~3 == IOWIN:
            value = self._read_register(self.select)
        else:
            return 0
        return (value >> 8 * (offset & 3)) & ((1 << 8 * size) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == IOREGSEL:
            self.select = value & 0xFF
        elif offset == IOWIN:
            self._write_register(self.select, value & 0xFFFFFFFF)

    def _read_register(self, index: int) -> int:
        if index == REG_ID:
            return self.ioapic_id << 24
        if index == REG_VERSION:
            return VERSION
        if index == REG_ARBITRATION:
            return self.ioapic_id << 24
        pin, high = divmod(index - REG_TABLE, 2)
        if 0 <= pin < PINS:
            return self.table[pin] >> 32 if high else self.table[pin] & 0xFFFFFFFF
        return 0

    def _write_register(self, index: int, value: int) -> None:
        if index == REG_ID:
            self.ioapic_id = value >> 24 & 0xF
            return
        pin, high = divmod(index - REG_TABLE, 2)
        if not 0 <= pin < PINS:
            return  # version and arbitration are read-only
        entry = self.table[pin]
        if high:
            self.table[pin] = value << 32 | (entry & 0xFFFFFFFF)
        else:
            keep = entry & ~0xFFFFFFFF | entry & _READ_ONLY
            self.table[pin] = keep | (value & ~_READ_ONLY)

    # --- interrupts --------------------------------------------------------------------

    def pulse(self, pin: int) -> None:
        """An interrupt edge on input `pin`."""
        entry = self.table[pin]
        if entry & MASKED or (entry >> 8) & 7 > 1:
            return
        level = bool(entry & LEVEL)
        if level:
            if entry & REMOTE_IRR:
                return
            self.table[pin] = entry | REMOTE_IRR
        if self.apic.addressed(entry >> 56, logical=bool(entry & LOGICAL)):
            self.apic.accept(entry & 0xFF, level)

    def eoi(self, vector: int) -> None:
        """The local APIC's EOI broadcast for a level-triggered `vector`."""
        for pin, entry in enumerate(self.table):
            if entry & LEVEL and entry & 0xFF == vector:
                self.table[pin] = entry & ~REMOTE_IRR

    def unmasked(self, pin: int) -> bool:
        return not self.table[pin] & MASKED

    def pin_of_vector(self, vector: int) -> int | None:
        """The unmasked pin that sends `vector` (for the interrupt's event), if one does."""
        for pin, entry in enumerate(self.table):
            if not entry & MASKED and entry & 0xFF == vector:
                return pin
        return None

    def view(self) -> tuple[RedirectionView, ...]:
        return tuple(
            RedirectionView(
                pin,
                entry & 0xFF,
                bool(entry & MASKED),
                bool(entry & LEVEL),
                bool(entry & REMOTE_IRR),
                entry >> 56,
            )
            for pin, entry in enumerate(self.table)
        )
