"""Holes: sensitive instructions that ran directly under a monitor and gave the guest a
different answer than bare metal would have.

The monitor never sees these (that is what makes them holes); the *tracer* does. For each
sensitive instruction it takes a probe before it runs and judges the result after, against
what bare metal would have produced from the guest's virtual state. A `mov ds, ax` that loads
the right segment is sensitive but harmless here; a `popfd` whose IF change silently
vanished, or a `mov eax, cs` that shows RPL 1 to a kernel that believes it runs in ring 0, is
a hole.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_ESP as _ESP

from hypervisor.isa import SEGMENT_REGISTERS, Instruction, Operand
from hypervisor.machine.cpu import EFLAGS_IF, EFLAGS_IOPL
from hypervisor.vmm.emulate import EMULATORS, ZF, Emulation
from hypervisor.vmm.operands import (
    SegmentOutsideGdt,
    effective_address,
    linear_address,
    read_register,
)

if TYPE_CHECKING:
    from hypervisor.vmm.trap import TrapAndEmulate

Probe = Callable[[], bool]  # after the instruction ran: did the guest see a wrong answer?


def probe(monitor: TrapAndEmulate, insn: Instruction) -> Probe | None:
    """A judgment to make once `insn` has run directly, or None if it cannot diverge."""
    key = insn.fact_key
    maker = _PROBES.get(key or "")
    return maker(monitor, insn) if maker else None


def _guest_bytes(monitor: TrapAndEmulate, address: int, size: int) -> bytes:
    """What the guest reads at linear `address` (through its own page tables; all ones
    where they map nothing, as nothing the probe judges can be there)."""
    return monitor.guest_memory.peek(address, size).ljust(size, b"\xff")


def _operand_bytes(monitor: TrapAndEmulate, op: Operand, size: int) -> bytes:
    """What the guest reads at a memory operand (its segment's base added)."""
    state = monitor.machine.state()
    try:
        address = linear_address(op, state, monitor.vcpu.gdtr, monitor.guest_memory.peek)
    except SegmentOutsideGdt:
        address = effective_address(op, state)
    return _guest_bytes(monitor, address, size)


def _dword_at_esp(monitor: TrapAndEmulate) -> int:
    esp = monitor.machine.uc.reg_read(_ESP)
    return struct.unpack("<I", _guest_bytes(monitor, esp, 4))[0]


def _pushf(monitor: TrapAndEmulate, insn: Instruction) -> Probe:
    def judge() -> bool:
        pushed = _dword_at_esp(monitor)
        expected = monitor.vcpu.virtual_eflags(pushed)
        return bool((pushed ^ expected) & (EFLAGS_IF | EFLAGS_IOPL))

    return judge


def _popf(monitor: TrapAndEmulate, insn: Instruction) -> Probe:
    wanted = _dword_at_esp(monitor)
    vcpu = monitor.vcpu

    def judge() -> bool:
        if vcpu.cpl > vcpu.iopl:  # bare metal ignores IF here too
            return False
        lost_if = bool(wanted & EFLAGS_IF) != vcpu.interrupts_enabled
        lost_iopl = vcpu.cpl == 0 and ((wanted & EFLAGS_IOPL) >> 12) != vcpu.iopl
        return lost_if or lost_iopl

    return judge


def _selector_read(monitor: TrapAndEmulate, insn: Instruction) -> Probe | None:
    """MOV r/m, sreg and PUSH sreg: CS and SS show the real RPL, not the guest's CPL."""
    ops = insn.operands
    if not ops or (
        insn.mnemonic == "mov" and ops[0].kind == "reg" and ops[0].reg in SEGMENT_REGISTERS
    ):
        return None  # a segment load: the shadow GDT makes it behave as on bare metal
    if ops[-1].reg not in ("cs", "ss"):
        return None
    vcpu = monitor.vcpu

    def judge() -> bool:
        if insn.mnemonic == "push":
            value = _dword_at_esp(monitor)
        else:
            dest = insn.operands[0]
            if dest.kind == "reg":
                value = read_register(monitor.machine.state(), dest.reg or "")
            else:
                value = int.from_bytes(_operand_bytes(monitor, dest, 2), "little")
        return (value & 3) != vcpu.cpl

    return judge


def _far_call(monitor: TrapAndEmulate, insn: Instruction) -> Probe:
    vcpu = monitor.vcpu

    def judge() -> bool:  # the pushed CS carries the real RPL
        esp = monitor.machine.uc.reg_read(_ESP)
        cs = struct.unpack("<I", _guest_bytes(monitor, esp + 4, 4))[0] & 0xFFFF
        return (cs & 3) != vcpu.cpl

    return judge


def _table_register(monitor: TrapAndEmulate, insn: Instruction) -> Probe:
    """SGDT, SIDT, SLDT, STR, SMSW: they read the real (monitor's) registers."""
    vcpu = monitor.vcpu
    dest = insn.operands[0] if insn.operands else None

    def stored(size: int) -> int:
        state = monitor.machine.state()
        if dest is None:
            return 0
        if dest.kind == "reg":
            return read_register(state, dest.reg or "")
        return int.from_bytes(_operand_bytes(monitor, dest, size), "little")

    def judge() -> bool:
        key = insn.fact_key
        if key in ("sgdt", "sidt"):
            value = stored(6)
            limit, base = value & 0xFFFF, value >> 16
            table = vcpu.gdtr if key == "sgdt" else vcpu.idtr
            return (base, limit) != table
        expected = {"sldt": vcpu.ldtr, "str": vcpu.tr, "smsw": vcpu.cr0 & 0xFFFF}[key or ""]
        return stored(2) & 0xFFFF != expected & 0xFFFF

    return judge


def _descriptor_check(monitor: TrapAndEmulate, insn: Instruction) -> Probe:
    """LAR, LSL, VERR, VERW inspect the shadow descriptor at the real CPL: compare their
    answer (ZF, and the loaded value) with the one the guest's own GDT gives at its CPL."""
    expected = Emulation(insn, monitor.virtual_state(), monitor.vcpu, monitor.machine, dry_run=True)
    EMULATORS[insn.mnemonic](expected)
    want_zf = bool((expected.flags or 0) & ZF)
    dest = insn.operands[0] if insn.mnemonic in ("lar", "lsl") else None

    def judge() -> bool:
        state = monitor.machine.state()
        if bool(state.eflags & ZF) != want_zf:
            return True
        return bool(
            want_zf
            and dest is not None
            and dest.kind == "reg"
            and read_register(state, dest.reg or "") != expected.written
        )

    return judge


_PROBES: dict[str, Callable[[TrapAndEmulate, Instruction], Probe | None]] = {
    "pushf": _pushf,
    "popf": _popf,
    "mov sreg": _selector_read,
    "push sreg": _selector_read,
    "call far": _far_call,
    "sgdt": _table_register,
    "sidt": _table_register,
    "sldt": _table_register,
    "str": _table_register,
    "smsw": _table_register,
    "lar": _descriptor_check,
    "lsl": _descriptor_check,
    "verr": _descriptor_check,
    "verw": _descriptor_check,
}
