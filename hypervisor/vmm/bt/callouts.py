"""Callouts only binary translation needs: sensitive instructions that trap-and-emulate lets
run directly (and wrong), which the translator sends to the monitor instead. They answer from
the guest's own tables and virtual registers — what bare metal would answer.
"""

from __future__ import annotations

import struct

from hypervisor.vmm.emulate import EMULATORS, Emulation, Reflect, emulates_in
from hypervisor.vmm.operands import effective_address

BT_EMULATORS: dict = {}
_emulates = emulates_in(BT_EMULATORS)

ZF = 1 << 6


def _descriptor_or_none(e: Emulation, selector: int):
    try:
        return e.guest_descriptor(selector)
    except Reflect:
        return None


def _set_zf(e: Emulation, on: bool) -> None:
    real = e.machine.state().eflags
    e.flags = (real | ZF) if on else (real & ~ZF)


@_emulates("lar", "lsl")
def _lar_lsl(e: Emulation) -> None:
    selector = e.operand_value(1) & 0xFFFF
    d = _descriptor_or_none(e, selector)
    lar = e.insn.mnemonic == "lar"
    system_ok = {1, 2, 3, 9, 11} | ({4, 5, 12} if lar else set())  # TSS, LDT (+ gates)
    if d is None:
        valid = False
    elif d.is_code_or_data:
        conforming = d.is_code and bool(d.access & 4)
        valid = conforming or d.dpl >= max(e.vcpu.cpl, selector & 3)
    else:
        valid = d.system_type in system_ok
    _set_zf(e, bool(valid))
    if valid and d is not None:
        raw = struct.unpack("<I", e.read(e.vcpu.gdtr[0] + (selector & ~7) + 4, 4))[0]
        e.set_operand(0, raw & 0x00F0FF00 if lar else d.limit)


@_emulates("verr", "verw")
def _verr_verw(e: Emulation) -> None:
    selector = e.operand_value(0) & 0xFFFF
    d = _descriptor_or_none(e, selector)
    ok = d is not None and d.is_code_or_data and d.present
    if ok and d is not None:
        conforming = d.is_code and d.access & 4
        ok = conforming or d.dpl >= max(e.vcpu.cpl, selector & 3)
        if e.insn.mnemonic == "verr":
            ok = ok and (not d.is_code or bool(d.access & 2))
        else:
            ok = ok and not d.is_code and bool(d.access & 2)
    _set_zf(e, bool(ok))


@_emulates("smsw", "str", "sldt")
def _store_system_register(e: Emulation) -> None:
    value = {"smsw": e.vcpu.cr0, "str": e.vcpu.tr, "sldt": e.vcpu.ldtr}[e.insn.mnemonic]
    e.set_operand(0, value & 0xFFFF)


@_emulates("mov")
def _store_selector(e: Emulation) -> None:
    """mov m16, cs / mov m16, ss: the guest's own selector, not the real RPL 1 one; every
    other MOV that reaches the monitor is trap-and-emulate's (CR, DR, SS loads)."""
    source = e.insn.operands[1].reg
    if source in ("cs", "ss") and e.insn.operands[0].kind == "mem":
        e.set_operand(0, getattr(e.state, source) & 0xFFFF)
    else:
        EMULATORS["mov"](e)


@_emulates("ljmp", "lcall")
def _far_transfer(e: Emulation) -> None:
    insn = e.insn
    if insn.far_target is not None:
        selector, offset = insn.far_target
    else:
        raw = e.read(effective_address(insn.operands[0], e.state), 6)
        offset, selector = struct.unpack("<IH", raw)
    code = e.guest_descriptor(selector)
    if not code.is_code or not code.present:
        raise Reflect(13, selector & ~3, f"far transfer to {selector:#06x} refused")
    if (code.dpl if not code.access & 4 else e.vcpu.cpl) != e.vcpu.cpl:
        raise Reflect(
            13, selector & ~3, "far transfer would change privilege (call gates are not modelled)"
        )
    if insn.mnemonic == "lcall":
        esp = (e.state.esp - 8) & 0xFFFFFFFF
        e.machine.write(esp, struct.pack("<II", insn.next_address, e.state.cs))
        e.state.esp = esp
    e.state.cs = (selector & ~3) | e.vcpu.cpl
    e.state.eip = offset
