"""x86 protected-mode descriptors: segment descriptors, gates and the TSS fields we use.

The same decoding serves the bare-metal machine (reading the guest's real tables) and the
monitor (reading the guest's tables to emulate, and writing the shadow tables the CPU uses).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from functools import lru_cache

DESCRIPTOR_SIZE = 8

# Access-byte bits.
ACCESS_PRESENT = 0x80
ACCESS_CODE_OR_DATA = 0x10  # S bit: 1 = code/data, 0 = system
ACCESS_EXECUTABLE = 0x08
ACCESS_ACCESSED = 0x01

# System descriptor / gate types (S = 0).
TYPE_TSS_AVAILABLE = 0x9
TYPE_TSS_BUSY = 0xB
TYPE_INTERRUPT_GATE = 0xE
TYPE_TRAP_GATE = 0xF
TYPE_TASK_GATE = 0x5


@dataclass(frozen=True, slots=True)
class SegmentDescriptor:
    """One 8-byte GDT/LDT entry, decoded."""

    base: int
    limit: int  # in bytes, granularity applied
    access: int
    flags: int  # high nibble of byte 6: G, D/B, L, AVL

    @property
    def present(self) -> bool:
        return bool(self.access & ACCESS_PRESENT)

    @property
    def dpl(self) -> int:
        return (self.access >> 5) & 3

    @property
    def is_code_or_data(self) -> bool:
        return bool(self.access & ACCESS_CODE_OR_DATA)

    @property
    def is_code(self) -> bool:
        return self.is_code_or_data and bool(self.access & ACCESS_EXECUTABLE)

    @property
    def system_type(self) -> int:
        return self.access & 0x0F

    def with_dpl(self, dpl: int) -> SegmentDescriptor:
        return replace(self, access=(self.access & ~0x60) | (dpl << 5))

    @classmethod
    def unpack(cls, raw: bytes) -> SegmentDescriptor:
        """Decoded once per 8 bytes: every trap reads the same few descriptors again."""
        return _segment(bytes(raw[:8]))

    @classmethod
    def decode(cls, raw: bytes) -> SegmentDescriptor:
        lo, hi = struct.unpack("<II", raw)
        base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        limit = (lo & 0xFFFF) | (hi & 0x000F0000)
        flags = (hi >> 20) & 0xF
        if flags & 0x8:  # granularity: 4 KiB units
            limit = (limit << 12) | 0xFFF
        return cls(base=base, limit=limit, access=(hi >> 8) & 0xFF, flags=flags)

    def pack(self) -> bytes:
        limit = self.limit >> 12 if self.flags & 0x8 else self.limit
        lo = (limit & 0xFFFF) | ((self.base & 0xFFFF) << 16)
        hi = (
            ((self.base >> 16) & 0xFF)
            | (self.access << 8)
            | (limit & 0xF0000)
            | (self.flags << 20)
            | (self.base & 0xFF000000)
        )
        return struct.pack("<II", lo, hi)


@dataclass(frozen=True, slots=True)
class Gate:
    """One IDT entry, decoded."""

    selector: int
    offset: int
    gate_type: int
    dpl: int
    present: bool

    @property
    def is_interrupt_gate(self) -> bool:
        """Interrupt gates clear IF on entry; trap gates leave it alone."""
        return self.gate_type in (TYPE_INTERRUPT_GATE, 0x6)

    @property
    def is_32bit(self) -> bool:
        return self.gate_type in (TYPE_INTERRUPT_GATE, TYPE_TRAP_GATE)

    @classmethod
    def unpack(cls, raw: bytes) -> Gate:
        """Decoded once per 8 bytes (each interrupt reads its gate)."""
        return _gate(bytes(raw[:8]))

    @classmethod
    def decode(cls, raw: bytes) -> Gate:
        off_lo, selector, _, access, off_hi = struct.unpack("<HHBBH", raw)
        return cls(
            selector=selector,
            offset=off_lo | (off_hi << 16),
            gate_type=access & 0x0F,
            dpl=(access >> 5) & 3,
            present=bool(access & 0x80),
        )


_segment = lru_cache(maxsize=4096)(SegmentDescriptor.decode)
_gate = lru_cache(maxsize=4096)(Gate.decode)


def flat_descriptor(access: int) -> SegmentDescriptor:
    """A flat 4 GiB, 32-bit segment with the given access byte."""
    return SegmentDescriptor(base=0, limit=0xFFFFFFFF, access=access, flags=0xC)


# TSS (32-bit) field offsets we use.
TSS_ESP0 = 4
TSS_SS0 = 8
TSS_MIN_LIMIT = 0x67


def tss_stack(raw_tss: bytes, dpl: int) -> tuple[int, int]:
    """(ss, esp) for privilege level `dpl` from a 32-bit TSS image."""
    esp, ss = struct.unpack_from("<II", raw_tss, TSS_ESP0 + dpl * 8)
    return ss & 0xFFFF, esp
