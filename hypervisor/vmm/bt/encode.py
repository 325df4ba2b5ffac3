"""A small x86 encoder for what the translator emits: moves between registers and absolute
addresses in the vCPU area, memory operands re-encoded from a decoded instruction, and
relative jumps. Every rule's output is checked by disassembling it (tests/test_bt_rules.py).
"""

from __future__ import annotations

import struct

from hypervisor.isa import Operand

REG32 = {"eax": 0, "ecx": 1, "edx": 2, "ebx": 3, "esp": 4, "ebp": 5, "esi": 6, "edi": 7}
REG16 = {"ax": 0, "cx": 1, "dx": 2, "bx": 3, "sp": 4, "bp": 5, "si": 6, "di": 7}
SEGMENT_PREFIX = {"es": 0x26, "cs": 0x2E, "ss": 0x36, "ds": 0x3E, "fs": 0x64, "gs": 0x65}
CONDITION_CODES = {
    "jo": 0, "jno": 1, "jb": 2, "jae": 3, "je": 4, "jne": 5, "jbe": 6, "ja": 7,
    "js": 8, "jns": 9, "jp": 10, "jnp": 11, "jl": 12, "jge": 13, "jle": 14, "jg": 15,
}  # fmt: skip


def u32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)


def rel32(source_end: int, target: int) -> bytes:
    return u32(target - source_end)


def absolute(reg_field: int, address: int) -> bytes:
    """ModRM for [disp32] (mod 00, r/m 101)."""
    return bytes([0x05 | (reg_field << 3)]) + u32(address)


def memory(reg_field: int, op: Operand) -> bytes:
    """ModRM (+SIB, +displacement) for a decoded 32-bit memory operand."""
    base = REG32.get(op.base or "")
    index = REG32.get(op.index or "")
    disp = op.disp
    if base is None and index is None:
        return absolute(reg_field, disp)
    if disp == 0 and base != 5:
        mod, disp_bytes = 0, b""
    elif -128 <= disp < 128:
        mod, disp_bytes = 1, struct.pack("<b", disp)
    else:
        mod, disp_bytes = 2, u32(disp)
    if index is None and base is not None and base != 4:
        return bytes([(mod << 6) | (reg_field << 3) | base]) + disp_bytes
    scale = {1: 0, 2: 1, 4: 2, 8: 3}[op.scale]
    sib_index = 4 if index is None else index  # 100 = no index
    if base is None:  # [index*scale + disp32]
        sib = (scale << 6) | (sib_index << 3) | 5
        return bytes([(reg_field << 3) | 4, sib]) + u32(disp)
    sib = (scale << 6) | (sib_index << 3) | base
    return bytes([(mod << 6) | (reg_field << 3) | 4, sib]) + disp_bytes


def segment_prefix(op: Operand) -> bytes:
    """An explicit segment override, when the operand does not use its default segment."""
    default = "ss" if op.base in ("esp", "ebp") else "ds"
    return bytes([SEGMENT_PREFIX[op.segment]]) if op.segment and op.segment != default else b""


def mov_abs_imm32(address: int, value: int) -> bytes:
    return b"\xc7" + absolute(0, address) + u32(value)


def mov_reg_abs(reg: str, address: int) -> bytes:
    """mov r32/r16, [address]"""
    if reg in REG16:
        return b"\x66\x8b" + absolute(REG16[reg], address)
    return b"\x8b" + absolute(REG32[reg], address)


def mov_abs_reg(address: int, reg: str) -> bytes:
    return b"\x89" + absolute(REG32[reg], address)


def save_flags(slot: int) -> bytes:
    """Keep the arithmetic flags in EAX without the stack: EAX to `slot`, then LAHF (SF ZF
    AF PF CF into AH) and SETO AL."""
    return mov_abs_reg(slot, "eax") + b"\x9f\x0f\x90\xc0"


def restore_flags(slot: int) -> bytes:
    """Undo `save_flags`: ADD AL, 0x7F overflows exactly when AL is 1 (OF), SAHF sets the
    other five from AH, and EAX comes back from `slot`."""
    return b"\x04\x7f\x9e" + mov_reg_abs("eax", slot)


def lea(reg: str, op: Operand) -> bytes:
    return b"\x8d" + memory(REG32[reg], op)


def lea_disp(reg: str, base: str, disp: int) -> bytes:
    """lea reg, [base + disp] — arithmetic that leaves the flags alone."""
    return lea(reg, Operand("mem", 4, base=base, disp=disp))


def push_abs(address: int) -> bytes:
    return b"\xff" + absolute(6, address)


def pop_abs(address: int) -> bytes:
    return b"\x8f" + absolute(0, address)


def push_imm32(value: int) -> bytes:
    return b"\x68" + u32(value)


JMP_REL32_SIZE = 5
JMP_REL32_PLACEHOLDER = b"\xe9\0\0\0\0"
JCC_REL32_SIZE = 6


def jmp_rel32(at: int, target: int) -> bytes:
    return b"\xe9" + rel32(at + JMP_REL32_SIZE, target)


def jcc_rel32(mnemonic: str, at: int, target: int) -> bytes:
    return bytes([0x0F, 0x80 | CONDITION_CODES[mnemonic]]) + rel32(at + JCC_REL32_SIZE, target)
