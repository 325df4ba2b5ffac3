"""The Intel MP tables (MultiProcessor Specification 1.4) as QEMU's PC firmware leaves them.

A kernel of the xv6 kind finds its processors, its I/O APIC and how ISA interrupts reach it
through these tables, not by probing: it searches the EBDA's first KiB, the last KiB of base
memory and the F-segment for the 16-byte floating pointer "_MP_", which points at the
configuration table "PCMP". vmlab writes both into the F-segment (reserved in the memory map
as the system BIOS) for every multiboot kernel, with the entries SeaBIOS gives QEMU's
default one-CPU PC, so a kernel sees the same machine on both:

- one processor: local APIC id 0, version 0x14, enabled and the bootstrap processor, with
  the CPU signature and feature flags CPUID leaf 1 gives;
- bus 0 "PCI" and bus 1 "ISA" (SeaBIOS numbers the ISA bus after the PCI buses);
- the I/O APIC: id 0, version 0x11, at 0xFEC00000;
- the ISA interrupts, each to the I/O APIC pin of its number except IRQ 0, which QEMU wires
  to pin 2 (so IRQ 2, the 8259 cascade, is not listed). IRQs 5, 9, 10 and 11 are not listed
  either: on QEMU's PC they are the PCI interrupt lines, and vmlab has no PCI device using them;
- the local interrupts: the 8259 as ExtINT on LINT0 of APIC 0, NMI on LINT1 of every APIC.
"""

from __future__ import annotations

import struct

from hypervisor.machine.cpumodel import cpuid

FLOATING_POINTER = 0xF0000  # the F-segment's first paragraph
CONFIG_TABLE = FLOATING_POINTER + 16
SPEC_REV = 4  # MP specification 1.4
OEM_ID, PRODUCT_ID = b"BOCHSCPU", b"0.1         "  # as SeaBIOS fills them
LOCAL_APIC = 0xFEE00000
LOCAL_APIC_VERSION = 0x14
IO_APIC, IO_APIC_ID, IO_APIC_VERSION = 0xFEC00000, 0, 0x11
PCI_BUS, ISA_BUS = 0, 1
BUSES = ((PCI_BUS, b"PCI   "), (ISA_BUS, b"ISA   "))  # bus type names are space-padded
PCI_IRQS = frozenset({5, 9, 10, 11})  # QEMU's PCI interrupt lines, not listed as ISA's
IRQ0_PIN = 2  # QEMU's PC wires the PIT to the I/O APIC's pin 2 (ACPI's "IRQ 0 override")

# entry types, and the interrupt types of I/O and local interrupt entries
PROCESSOR, BUS, IOAPIC, IO_INTERRUPT, LOCAL_INTERRUPT = range(5)
INT, NMI, SMI, EXTINT = range(4)
CPU_ENABLED, CPU_BSP = 1, 2
ALL_APICS = 0xFF


def mp_tables() -> bytes:
    """The floating pointer and, right after it, the configuration table: the bytes a
    loader writes at FLOATING_POINTER."""
    entries = _entries()
    header_size = 44
    length = header_size + sum(len(e) for e in entries)
    header = struct.pack(
        "<4sHBB8s12sIHHIHBB",
        b"PCMP",
        length,
        SPEC_REV,
        0,  # checksum, filled below
        OEM_ID,
        PRODUCT_ID,
        0,  # no OEM table
        0,
        len(entries),
        LOCAL_APIC,
        0,  # no extended entries
        0,
        0,
    )
    table = _checksummed(header + b"".join(entries), 7)
    pointer = struct.pack("<4sIBBB5s", b"_MP_", CONFIG_TABLE, 1, SPEC_REV, 0, bytes(5))
    return _checksummed(pointer, 10) + table


def _entries() -> list[bytes]:
    signature, _, _, features = cpuid(1)
    processor = struct.pack(
        "<BBBBII8x",
        PROCESSOR,
        0,
        LOCAL_APIC_VERSION,
        CPU_ENABLED | CPU_BSP,
        signature,
        features,
    )
    buses = [struct.pack("<BB6s", BUS, bus, kind) for bus, kind in BUSES]
    ioapic = struct.pack("<BBBBI", IOAPIC, IO_APIC_ID, IO_APIC_VERSION, 1, IO_APIC)
    isa = [
        _interrupt(IO_INTERRUPT, INT, irq, IO_APIC_ID, IRQ0_PIN if irq == 0 else irq)
        for irq in range(16)
        if irq != IRQ0_PIN and irq not in PCI_IRQS
    ]
    local = [
        _interrupt(LOCAL_INTERRUPT, EXTINT, 0, 0, 0),
        _interrupt(LOCAL_INTERRUPT, NMI, 0, ALL_APICS, 1),
    ]
    return [processor, *buses, ioapic, *isa, *local]


def _interrupt(kind: int, irq_type: int, irq: int, apic: int, pin: int) -> bytes:
    """An I/O or local interrupt entry from the ISA bus, polarity and trigger as the bus says."""
    return struct.pack("<BBHBBBB", kind, irq_type, 0, ISA_BUS, irq, apic, pin)


def _checksummed(data: bytes, at: int) -> bytes:
    """`data` with the byte at `at` set so that all its bytes sum to 0 (mod 256)."""
    out = bytearray(data)
    out[at] = -sum(data) & 0xFF
    return bytes(out)
