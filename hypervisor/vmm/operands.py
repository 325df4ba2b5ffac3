"""Reading and writing instruction operands on a saved register state, for emulation.

An effective address is the offset within the operand's segment; `Emulation.address_of`
adds the segment's base (docs/platform.md, "Segments with a base").
"""

from __future__ import annotations

from collections.abc import Callable

from hypervisor.isa import Operand
from hypervisor.machine.cpu import CpuState
from hypervisor.machine.descriptors import DESCRIPTOR_SIZE, SegmentDescriptor

_WIDE = {
    "ax": "eax",
    "cx": "ecx",
    "dx": "edx",
    "bx": "ebx",
    "sp": "esp",
    "bp": "ebp",
    "si": "esi",
    "di": "edi",
}
_LOW8 = {"al": "eax", "cl": "ecx", "dl": "edx", "bl": "ebx"}
_HIGH8 = {"ah": "eax", "ch": "ecx", "dh": "edx", "bh": "ebx"}
_SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")


def read_register(state: CpuState, name: str) -> int:
    if name in _WIDE:
        return getattr(state, _WIDE[name]) & 0xFFFF
    if name in _LOW8:
        return getattr(state, _LOW8[name]) & 0xFF
    if name in _HIGH8:
        return (getattr(state, _HIGH8[name]) >> 8) & 0xFF
    return getattr(state, name)


def write_register(state: CpuState, name: str, value: int) -> None:
    if name in _WIDE:
        full = _WIDE[name]
        setattr(state, full, (getattr(state, full) & ~0xFFFF) | (value & 0xFFFF))
    elif name in _LOW8:
        full = _LOW8[name]
        setattr(state, full, (getattr(state, full) & ~0xFF) | (value & 0xFF))
    elif name in _HIGH8:
        full = _HIGH8[name]
        setattr(state, full, (getattr(state, full) & ~0xFF00) | ((value & 0xFF) << 8))
    elif name in _SEGMENTS:
        setattr(state, name, value & 0xFFFF)
    else:
        setattr(state, name, value & 0xFFFFFFFF)


def effective_address(op: Operand, state: CpuState) -> int:
    address = op.disp
    if op.base:
        address += read_register(state, op.base)
    if op.index:
        address += read_register(state, op.index) * op.scale
    return address & 0xFFFFFFFF


class SegmentOutsideGdt(Exception):
    """A memory operand's segment names no GDT entry (or one in an LDT)."""

    def __init__(self, selector: int) -> None:
        super().__init__(f"selector {selector:#06x} is not in the GDT")
        self.selector = selector


def linear_address(
    op: Operand, state: CpuState, gdt: tuple[int, int], read: Callable[[int, int], bytes]
) -> int:
    """Where a memory operand is: its segment's base, from the descriptor its selector names
    in the GDT at `gdt` (base, limit) read through `read`, plus the effective address. Limits
    are not checked: bare metal (unicorn) does not check them either (fact 6)."""
    selector = getattr(state, op.segment or "ds")
    base = 0
    if selector & ~3:  # a null selector: flat, as the monitors always assumed
        index = selector & ~7
        if selector & 4 or index + DESCRIPTOR_SIZE - 1 > gdt[1]:
            raise SegmentOutsideGdt(selector)
        base = SegmentDescriptor.unpack(read(gdt[0] + index, DESCRIPTOR_SIZE)).base
    return (base + effective_address(op, state)) & 0xFFFFFFFF
