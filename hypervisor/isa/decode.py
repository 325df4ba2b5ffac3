"""Decode 32-bit x86 with capstone into plain, immutable facts.

The monitor decodes every instruction it traps on and, when tracing, every instruction the
guest executes; the binary translator decodes whole blocks. Capstone objects hold C memory
and are slow to query, so they never leave this module: each instruction becomes a frozen
`Instruction` of plain Python values, cached on its bytes and address. Keying the cache on
the bytes (not only the address) means self-modifying code can never hit a stale entry.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

import capstone
from capstone import x86 as cs_x86

from hypervisor.isa.facts import (
    INT_VECTORS,
    NOTES,
    Category,
    FlowKind,
    base_mnemonic,
    classify,
    flow_kind,
)

#: The architectural maximum: longer byte sequences raise #GP, never decode.
MAX_INSN_SIZE = 15

_DIRECT_FLOWS = frozenset({FlowKind.JMP, FlowKind.JCC, FlowKind.CALL, FlowKind.LOOP})
_REL8_OPCODES = frozenset({0xEB, 0xE0, 0xE1, 0xE2, 0xE3, *range(0x70, 0x80)})
_PREFIX_OPSIZE = 0x66
_PREFIX_ADDRSIZE = 0x67
_STACK_BASES = frozenset({"esp", "ebp", "sp", "bp"})

OperandKind = Literal["reg", "imm", "mem"]
ACCESS_READ, ACCESS_WRITE = capstone.CS_AC_READ, capstone.CS_AC_WRITE


@dataclass(frozen=True)
class Operand:
    """One operand, in Intel order (destination first).

    Only the fields of its kind are set. For memory, `segment` is the segment the CPU will
    really use: the override prefix if any, else SS for an ESP/EBP base, else DS — the
    monitor needs it to turn the effective address into a linear one.
    """

    kind: OperandKind
    size: int  # bytes accessed (6 for the m16:32 of LGDT/SGDT/far JMP)
    reg: str | None = None
    imm: int | None = None  # unsigned, masked to `size` bytes
    segment: str | None = None
    base: str | None = None
    index: str | None = None
    scale: int = 1
    disp: int = 0  # signed
    # ACCESS_READ | ACCESS_WRITE as the instruction uses it (capstone's): not part of what
    # the operand *is*, so two operands naming the same memory compare equal
    access: int = field(default=0, compare=False)

    def __str__(self) -> str:
        if self.kind == "reg":
            return str(self.reg)
        if self.kind == "imm":
            return hex(self.imm or 0)
        address = " + ".join(
            p for p in (self.base, self.index and f"{self.index}*{self.scale}") if p
        )
        if self.disp or not address:
            sign = "-" if self.disp < 0 else "+"
            absolute = hex(self.disp & 0xFFFFFFFF)
            address = f"{address} {sign} {abs(self.disp):#x}" if address else absolute
        return f"{self.segment}:[{address}]"


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction and everything the monitor needs to judge it."""

    address: int
    size: int
    bytes: bytes
    mnemonic: str  # without prefix words: "outsb", not "rep outsb"
    op_str: str
    text: str  # full rendering, prefixes included: "rep outsb dx, byte ptr [esi]"
    category: Category
    sensitive_reason: str | None  # None exactly when innocuous
    iopl_sensitive: bool  # faults exactly when CPL > IOPL
    traps: str | None  # when it faults at CPL > 0 (from the tables), None if innocuous
    fact_key: str | None  # row key in the facts tables, e.g. "mov cr"
    note: str | None  # remark on an innocuous instruction (e.g. RDTSC), for students
    flow: FlowKind
    branch_target: int | None  # direct near JMP/Jcc/CALL/LOOP target
    far_target: tuple[int, int] | None  # (selector, offset) of a direct far JMP/CALL
    vector: int | None  # INT n / INT3 / INTO / INT1 vector
    operands: tuple[Operand, ...]
    prefixes: tuple[int, ...]  # legacy prefix bytes present (F0/F2/F3, segment, 66, 67)
    operand_size: int  # 2 with a 66 prefix, else 4: PUSHF/IRET/far pointers change width
    address_size: int  # 2 with a 67 prefix, else 4

    @property
    def next_address(self) -> int:
        """Where execution falls through to (32-bit wrap-around)."""
        return (self.address + self.size) & 0xFFFFFFFF

    @property
    def is_sensitive(self) -> bool:
        """The monitor must see it: privileged, IOPL-sensitive or sensitive-unprivileged."""
        return self.category is not Category.INNOCUOUS

    @property
    def ends_block(self) -> bool:
        """A translation unit ends after this instruction (any change of control flow)."""
        return self.flow is not FlowKind.NONE

    @property
    def is_conditional(self) -> bool:
        """Both outcomes are possible: the translator needs a fall-through exit too."""
        return self.flow in (FlowKind.JCC, FlowKind.LOOP) or self.mnemonic == "into"

    @property
    def memory_operand(self) -> Operand | None:
        """The first memory operand (x86 has at most one explicit one, strings aside)."""
        return next((op for op in self.operands if op.kind == "mem"), None)


class _Decoder:
    """One capstone handle, serialized: capstone handles are not thread-safe."""

    def __init__(self) -> None:
        self._md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
        self._md.detail = True
        self._lock = threading.Lock()

    def decode(self, code: bytes, address: int) -> Instruction | None:
        with self._lock:
            for insn in self._md.disasm(code, address, 1):
                return _convert(insn)
        return None


_DECODER = _Decoder()


def decode(code: bytes | bytearray | memoryview, address: int) -> Instruction | None:
    """Decode the first instruction of `code`, or None if capstone cannot decode it.

    Only the first 15 bytes can matter, so only they are used and cached: pass the 15 bytes
    at EIP and a loop body re-executing the same code costs a dictionary lookup.
    """
    return _decode_cached(bytes(code[:MAX_INSN_SIZE]), address & 0xFFFFFFFF)


@lru_cache(maxsize=1 << 16)
def _decode_cached(code: bytes, address: int) -> Instruction | None:
    return _DECODER.decode(code, address)


def decode_block(
    code: bytes | bytearray | memoryview,
    address: int,
    max_insns: int = 12,
    *,
    stop_at_flow: bool = True,
) -> tuple[Instruction, ...]:
    """Decode consecutive instructions from the start of `code`.

    Stops after `max_insns`, at bytes that do not decode (or run past the end of `code`,
    e.g. an instruction straddling a page end when `code` stops there), and, if
    `stop_at_flow`, after the first control transfer: the translation unit of docs/design.md.
    """
    view = memoryview(code)
    out: list[Instruction] = []
    offset = 0
    while len(out) < max_insns and offset < len(view):
        insn = decode(view[offset : offset + MAX_INSN_SIZE], address + offset)
        if insn is None:
            break
        out.append(insn)
        offset += insn.size
        if stop_at_flow and insn.ends_block:
            break
    return tuple(out)


def _reg(insn: capstone.CsInsn, reg_id: int) -> str | None:
    return insn.reg_name(reg_id) if reg_id else None


def _operand(insn: capstone.CsInsn, op: cs_x86.X86Op, address_size: int) -> Operand:
    if op.type == cs_x86.X86_OP_REG:
        return Operand("reg", op.size, reg=_reg(insn, op.reg))
    if op.type == cs_x86.X86_OP_IMM:
        return Operand("imm", op.size, imm=op.imm & ((1 << (8 * op.size)) - 1))
    mem = op.mem
    base, index = _reg(insn, mem.base), _reg(insn, mem.index)
    segment = _reg(insn, mem.segment) or ("ss" if base in _STACK_BASES else "ds")
    return Operand(
        "mem",
        op.size,
        segment=segment,
        base=base,
        index=index,
        scale=mem.scale,
        disp=_signed(mem.disp, address_size),
        access=op.access & (ACCESS_READ | ACCESS_WRITE),
    )


def _signed(value: int, size: int) -> int:
    bits = 8 * size
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _convert(insn: capstone.CsInsn) -> Instruction:
    raw = bytes(insn.bytes)
    prefixes = tuple(p for p in insn.prefix if p)
    operand_size = 2 if _PREFIX_OPSIZE in prefixes else 4
    address_size = 2 if _PREFIX_ADDRSIZE in prefixes else 4
    operands = tuple(_operand(insn, op, address_size) for op in insn.operands)
    words = insn.mnemonic.split()
    mnemonic, op_str = words[-1], insn.op_str

    # Capstone 5 prints far JMP/CALL through memory (FF /5, FF /3) as a near "jmp"/"call"
    # without a 66 prefix, and as "ljmp"/"lcall" with one, and gets the pointer size wrong.
    # Normalize to ljmp/lcall with the real m16:32 (6 bytes) or m16:16 (4 bytes) operand.
    opcode, modrm_reg = insn.opcode[0], (insn.modrm >> 3) & 7
    far_indirect = opcode == 0xFF and modrm_reg in (3, 5) and bool(operands)
    if far_indirect:
        mnemonic = "ljmp" if modrm_reg == 5 else "lcall"
        size = 6 if operand_size == 4 else 4
        operands = (_resize(operands[0], size),)
        keyword = "fword" if size == 6 else "dword"
        op_str = f"{keyword} ptr {op_str.removeprefix('ptr ')}"
    elif mnemonic == "lcall" and len(operands) == 2:
        op_str = op_str.replace(", ", ":")  # match capstone's "ljmp 8:0x100000"

    far = far_indirect or mnemonic in ("ljmp", "lcall")
    indirect = any(op.kind != "imm" for op in operands)
    flow = flow_kind(mnemonic, far=far, indirect=indirect)
    registers = [op.reg for op in operands if op.reg]
    fact = classify(mnemonic, registers, flow)

    branch_target = None
    if flow in _DIRECT_FLOWS and not indirect:
        width = 1 if opcode in _REL8_OPCODES else operand_size
        branch_target = _relative_target(insn.address, raw, width, operand_size)
        # Capstone's own target ignores the 66 prefix, and prints small ones in decimal.
        operands = (Operand("imm", operand_size, imm=branch_target),)
        op_str = f"{branch_target:#x}"
    far_target = None
    if far and not far_indirect and len(operands) == 2:
        far_target = (operands[0].imm or 0, operands[1].imm or 0)
    vector = None
    if flow is FlowKind.INT:
        vector = INT_VECTORS.get(mnemonic, operands[0].imm if operands else None)

    words[-1] = mnemonic
    full = " ".join(words)
    return Instruction(
        address=insn.address,
        size=insn.size,
        bytes=raw,
        mnemonic=mnemonic,
        op_str=op_str,
        text=f"{full} {op_str}" if op_str else full,
        category=fact.category if fact else Category.INNOCUOUS,
        sensitive_reason=fact.reason if fact else None,
        iopl_sensitive=fact.iopl_sensitive if fact else False,
        traps=fact.traps if fact else None,
        fact_key=fact.key if fact else None,
        note=None if fact else NOTES.get(base_mnemonic(mnemonic)),
        flow=flow,
        branch_target=branch_target,
        far_target=far_target,
        vector=vector,
        operands=operands,
        prefixes=prefixes,
        operand_size=operand_size,
        address_size=address_size,
    )


def _resize(op: Operand, size: int) -> Operand:
    return replace(op, size=size)


def _relative_target(address: int, raw: bytes, width: int, operand_size: int) -> int:
    """Target of a relative branch, computed from the encoding itself.

    The displacement is the instruction's last `width` bytes. Computed here rather than taken
    from capstone, which ignores the 66 prefix: with it the CPU truncates EIP to 16 bits.
    """
    disp = int.from_bytes(raw[-width:], "little", signed=True)
    target = (address + len(raw) + disp) & 0xFFFFFFFF
    return target & 0xFFFF if operand_size == 2 else target
