"""Instruction facts for 32-bit x86: decoding (capstone) and what each instruction means to a
virtual machine monitor (privileged, IOPL-sensitive, sensitive-but-unprivileged, innocuous)."""

from hypervisor.isa.decode import MAX_INSN_SIZE, Instruction, Operand, decode, decode_block
from hypervisor.isa.facts import (
    IOPL_SENSITIVE,
    IRET,
    LOAD_FAR_POINTER,
    NOTES,
    PRIVILEGED,
    SEGMENT_REGISTERS,
    SENSITIVE_UNPRIVILEGED,
    Category,
    Fact,
    FlowKind,
    classify,
    flow_kind,
)

__all__ = [
    "IOPL_SENSITIVE",
    "IRET",
    "LOAD_FAR_POINTER",
    "MAX_INSN_SIZE",
    "NOTES",
    "PRIVILEGED",
    "SEGMENT_REGISTERS",
    "SENSITIVE_UNPRIVILEGED",
    "Category",
    "Fact",
    "FlowKind",
    "Instruction",
    "Operand",
    "classify",
    "decode",
    "decode_block",
    "flow_kind",
]
