"""What bare metal would answer: one table of emulators, by mnemonic, shared by every mode.

Each emulator receives the decoded instruction and the guest's *virtual* register state and
does to the virtual CPU what the real instruction would have done at the guest's CPL. It
returns nothing on success; it raises `Reflect` when the real CPU would have faulted too (the
guest gets the exception), `Unsupported` for what this monitor does not model.

Two kinds share the table: the privileged instructions a deprivileged guest kernel faults on
(trap-and-emulate emulates them when they trap), and the sensitive ones that run silently at
CPL 1 (`traps=False`: LAR, SMSW, STR, far transfers…). Trap-and-emulate never sees those —
they are its holes — but binary translation calls them out, paravirtual hypercalls and the
hole probes ask them for the answer the guest should have had.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hypervisor.isa import Instruction, Operand
from hypervisor.machine import msr
from hypervisor.machine.cpu import (
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR0_WP,
    CR4_TSD,
    EFLAGS_NT,
    EFLAGS_VM,
    CpuState,
)
from hypervisor.machine.descriptors import TYPE_TSS_AVAILABLE, SegmentDescriptor
from hypervisor.machine.interrupts import VEC_GP, VEC_NP, VEC_UD
from hypervisor.vmm.operands import (
    SegmentOutsideGdt,
    linear_address,
    read_register,
    write_register,
)
from hypervisor.vmm.vcpu import VirtualCpu

if TYPE_CHECKING:
    from hypervisor.machine.machine import Machine
    from hypervisor.machine.paging import LinearMemory

_CR4_PAGING = 0xB0  # PSE, PAE, PGE: a change drops every shadow
ZF = 1 << 6


class GuestMmu(Protocol):
    """What MOV to CR0/CR3/CR4 and INVLPG drive: the shadow page tables of trap (vmm/mmu/)
    or the direct paging of pv (vmm/pv/directmmu.py)."""

    active: bool

    def flush(self, machine: Machine, active: bool, cr3: int) -> None: ...

    def switch(self, machine: Machine, cr3: int) -> None: ...

    def invalidate(self, machine: Machine, linear: int) -> None: ...


class Reflect(Exception):
    """The instruction faults for the guest too: deliver `vector` through its IDT."""

    def __init__(self, vector: int, error_code: int = 0, why: str = "") -> None:
        super().__init__(why)
        self.vector, self.error_code, self.why = vector, error_code, why


class Unsupported(Exception):
    """A privileged operation this monitor does not model; the VM stops with this reason."""


@dataclass(slots=True)
class Emulation:
    """One trapped instruction being emulated (one is made per trap)."""

    insn: Instruction
    state: CpuState  # virtual: what the guest sees
    vcpu: VirtualCpu
    machine: Machine
    halt: bool = False  # HLT: the guest sleeps (or stops, with interrupts off)
    flags: int | None = None  # new real EFLAGS, for emulations that set ZF (LAR, VERR…)
    dry_run: bool = False  # compute the answer only: operand writes go to `written`
    written: int | None = None
    mmu: GuestMmu | None = None  # the monitor's paging (None: PG is unsupported)
    guest: LinearMemory | None = None  # linear memory through the guest's own page tables

    # -- memory and operands ------------------------------------------------
    def read(self, address: int, size: int) -> bytes:
        """Guest memory at a linear address (a PageFault where the guest's tables say so)."""
        if self.guest is not None:
            return self.guest.read(address, size, user=self.vcpu.cpl == 3)
        return self.machine.read(address, size)

    def write(self, address: int, data: bytes) -> None:
        if self.guest is not None:
            self.guest.write(address, data, user=self.vcpu.cpl == 3)
        else:
            self.machine.write(address, data)

    def operand_value(self, index: int) -> int:
        op = self.insn.operands[index]
        if op.kind == "reg":
            return read_register(self.state, op.reg or "")
        if op.kind == "imm":
            return op.imm or 0
        raw = self.read(self.address_of(op), min(op.size, 4))
        return int.from_bytes(raw, "little")

    def set_operand(self, index: int, value: int) -> None:
        if self.dry_run:
            self.written = value
            return
        op = self.insn.operands[index]
        if op.kind == "reg":
            write_register(self.state, op.reg or "", value)
        else:
            size = min(op.size, 4)
            self.write(
                self.address_of(op), (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
            )

    def address_of(self, op: Operand) -> int:
        """The linear address of a memory operand, its segment's base (a per-CPU FS or GS,
        say) added (operands.linear_address)."""
        try:
            return linear_address(op, self.state, self.vcpu.gdtr, self.read)
        except SegmentOutsideGdt as err:
            if err.selector & 4:
                raise Unsupported("LDTs are not modelled (an operand in an LDT segment)") from err
            raise Reflect(VEC_GP, err.selector & ~3, str(err)) from err

    def guest_descriptor(self, selector: int) -> SegmentDescriptor:
        base, limit = self.vcpu.gdtr
        index = selector & ~7
        if selector & 4 or index == 0 or index + 7 > limit:
            raise Reflect(VEC_GP, selector & ~3, f"selector {selector:#06x} outside the GDT")
        return SegmentDescriptor.unpack(self.read(base + index, 8))

    def pop(self, count: int) -> tuple[int, ...]:
        values = struct.unpack(f"<{count}I", self.read(self.state.esp, 4 * count))
        self.state.esp = (self.state.esp + 4 * count) & 0xFFFFFFFF
        return values


Emulator = Callable[[Emulation], None]
EMULATORS: dict[str, Emulator] = {}
_UNTRAPPED: set[str] = set()  # mnemonics that never fault at CPL 1: no trap ever asks


def emulates(*mnemonics: str, traps: bool = True) -> Callable[[Emulator], Emulator]:
    """Register an emulator for `mnemonics` (`traps=False`: they run silently at CPL 1)."""

    def register(fn: Emulator) -> Emulator:
        for mnemonic in mnemonics:
            EMULATORS[mnemonic] = fn
            if not traps:
                _UNTRAPPED.add(mnemonic)
        return fn

    return register


def trapped_emulator(mnemonic: str) -> Emulator | None:
    """The emulator for an instruction that faulted at CPL 1 (None: bare metal faults too,
    or the monitor has none)."""
    return None if mnemonic in _UNTRAPPED else EMULATORS.get(mnemonic)


@emulates("cli")
def _cli(e: Emulation) -> None:
    e.vcpu.interrupts_enabled = False


@emulates("sti")
def _sti(e: Emulation) -> None:
    if not e.vcpu.interrupts_enabled:
        e.vcpu.interrupt_shadow = True
    e.vcpu.interrupts_enabled = True


@emulates("hlt")
def _hlt(e: Emulation) -> None:
    e.halt = True
    e.vcpu.interrupt_shadow = False  # STI; HLT: the wake-up interrupt comes at the HLT


@emulates("lgdt", "lidt")
def _load_table(e: Emulation) -> None:
    op = e.insn.operands[0]
    limit, base = struct.unpack("<HI", e.read(e.address_of(op), 6))
    if e.insn.mnemonic == "lgdt":
        e.vcpu.gdtr = (base, limit)
    else:
        e.vcpu.idtr = (base, limit)


@emulates("lldt")
def _lldt(e: Emulation) -> None:
    selector = e.operand_value(0) & 0xFFFF
    if selector & ~3:
        raise Unsupported("LDTs are not modelled (LLDT with a non-null selector)")
    e.vcpu.ldtr = 0


@emulates("ltr")
def _ltr(e: Emulation) -> None:
    selector = e.operand_value(0) & 0xFFFF
    descriptor = e.guest_descriptor(selector)
    if descriptor.is_code_or_data or descriptor.system_type != TYPE_TSS_AVAILABLE:
        raise Reflect(VEC_GP, selector & ~3, "LTR of a descriptor that is not an available TSS")
    if not descriptor.present:
        raise Reflect(VEC_NP, selector & ~3, "LTR of a TSS that is not present")
    # Like the CPU: mark the TSS busy in the guest's own GDT.
    address = e.vcpu.gdtr[0] + (selector & ~7) + 5
    e.write(address, bytes([e.read(address, 1)[0] | 0x02]))
    e.vcpu.tr = selector
    e.vcpu.tss = (descriptor.base, descriptor.limit)


def _control_register(name: str) -> int | None:
    return int(name[2:]) if name.startswith("cr") and name[2:].isdigit() else None


def _debug_register(name: str) -> int | None:
    return int(name[2:]) if name.startswith("dr") and name[2:].isdigit() else None


@emulates("mov")
def _mov_special(e: Emulation) -> None:
    """MOV to or from a control or debug register, MOV SS (they trap), and `mov m16, cs` /
    `mov m16, ss`, which does not: the guest's own selector, not the real RPL 1 one."""
    dest, src = (op.reg or "" for op in e.insn.operands[:2])
    vcpu = e.vcpu
    if src in ("cs", "ss") and e.insn.operands[0].kind == "mem":
        e.set_operand(0, getattr(e.state, src) & 0xFFFF)
    elif (n := _control_register(dest)) is not None:
        _write_cr(e, n, read_register(e.state, src))
    elif (n := _control_register(src)) is not None:
        value = {0: vcpu.cr0, 2: vcpu.cr2, 3: vcpu.cr3, 4: vcpu.cr4}.get(n)
        if value is None:
            raise Reflect(6, 0, f"there is no CR{n}")
        write_register(e.state, dest, value)
    elif (n := _debug_register(dest)) is not None:
        vcpu.dr[n] = read_register(e.state, src)
    elif (n := _debug_register(src)) is not None:
        write_register(e.state, dest, vcpu.dr[n])
    elif dest == "ss":
        _load_stack_segment(e, e.operand_value(1) & 0xFFFF)
    else:
        raise Reflect(VEC_GP, 0, "this MOV faults on bare metal too")


def _write_cr(e: Emulation, n: int, value: int) -> None:
    vcpu = e.vcpu
    before = (vcpu.cr0 & (CR0_PG | CR0_WP), vcpu.cr4 & _CR4_PAGING)
    if n == 0:
        if value & CR0_PG and e.mmu is None:
            raise Unsupported("paging (CR0.PG) is not modelled under this monitor yet")
        if not value & CR0_PE:
            raise Unsupported("leaving protected mode (CR0.PE = 0) is not modelled")
        vcpu.cr0 = value | 0x10
    elif n == 2:
        vcpu.cr2 = value
    elif n == 3:
        vcpu.cr3 = value
    elif n == 4:
        vcpu.cr4 = value
    else:
        raise Reflect(6, 0, f"there is no CR{n}")
    if e.mmu is None:
        return
    if before != (vcpu.cr0 & (CR0_PG | CR0_WP), vcpu.cr4 & _CR4_PAGING):
        e.mmu.flush(e.machine, bool(vcpu.cr0 & CR0_PG), vcpu.cr3)  # every shadow goes
    elif n == 3 and e.mmu.active:
        e.mmu.switch(e.machine, vcpu.cr3)  # the cached shadow of that address space


@emulates("lmsw")
def _lmsw(e: Emulation) -> None:
    value = e.operand_value(0) & 0xF
    e.vcpu.cr0 = (e.vcpu.cr0 & ~0xE) | value | (e.vcpu.cr0 & CR0_PE)  # LMSW cannot clear PE


@emulates("clts")
def _clts(e: Emulation) -> None:
    e.vcpu.cr0 &= ~CR0_TS


@emulates("rdmsr", "wrmsr")
def _msr_access(e: Emulation) -> None:
    """Through the one MSR table (`machine/msr.py`), on the virtual CPU's values."""
    owner = e.machine.owner
    clock, apic = (owner.instruction_clock(), owner.local_apic()) if owner else (0, None)
    try:
        msr.execute(e.state, e.insn.mnemonic == "wrmsr", e.vcpu.msr, clock, apic)
    except msr.MsrFault as fault:
        raise Reflect(VEC_GP, 0, str(fault)) from fault


@emulates("rdtsc", "rdtscp")
def _rdtsc(e: Emulation) -> None:
    """Reached when the guest's CR4.TSD made the real CPU fault at ring 1 (the monitor
    mirrors it), and as binary translation's callout, which reads the clock exactly."""
    if e.insn.mnemonic == "rdtscp":
        raise Reflect(VEC_UD, 0, "RDTSCP: CPUID does not offer it (#UD)")
    if e.vcpu.cr4 & CR4_TSD and e.vcpu.cpl:
        raise Reflect(VEC_GP, 0, f"{e.insn.mnemonic.upper()} outside ring 0 with CR4.TSD set")
    owner = e.machine.owner
    tsc = msr.time_stamp(owner.instruction_clock() if owner else 0, e.vcpu.msr)
    e.state.eax, e.state.edx = tsc & 0xFFFFFFFF, tsc >> 32


@emulates("invlpg", "wbinvd", "invd")
def _cache_control(e: Emulation) -> None:
    """No caches are modelled; INVLPG drops the page's shadow entry (the monitor's TLB)."""
    if e.insn.mnemonic == "invlpg" and e.mmu is not None and e.mmu.active:
        e.mmu.invalidate(e.machine, e.address_of(e.insn.operands[0]))


@emulates("pop")
def _pop_ss(e: Emulation) -> None:
    if e.insn.operands[0].reg != "ss":
        raise Reflect(VEC_GP, 0, "this POP faults on bare metal too")
    (selector,) = e.pop(1)
    _load_stack_segment(e, selector & 0xFFFF)


def _load_stack_segment(e: Emulation, selector: int) -> None:
    """MOV/POP SS with the kernel's RPL 0 selector faults at CPL 1: load it virtually."""
    descriptor = e.guest_descriptor(selector)
    writable_data = descriptor.is_code_or_data and not descriptor.is_code and descriptor.access & 2
    if not writable_data or descriptor.dpl != e.vcpu.cpl or selector & 3 != e.vcpu.cpl:
        raise Reflect(VEC_GP, selector & ~3, f"{selector:#06x} is not a usable stack segment")
    e.state.ss = selector
    e.vcpu.interrupt_shadow = True


@emulates("iretd", "retf")
def _far_return(e: Emulation) -> None:
    """IRETD / far RET from the guest kernel (it faults at CPL 1, see shadow.py)."""
    is_iret = e.insn.mnemonic == "iretd"
    eip, cs = e.pop(2)
    eflags = e.pop(1)[0] if is_iret else None
    if not is_iret and e.insn.operands:  # retf imm16 releases parameters
        e.state.esp = (e.state.esp + (e.insn.operands[0].imm or 0)) & 0xFFFFFFFF
    if eflags is not None and eflags & (EFLAGS_NT | EFLAGS_VM):
        raise Unsupported("IRET to a nested task or to virtual-8086 mode is not modelled")
    cs &= 0xFFFF
    rpl = cs & 3
    code = e.guest_descriptor(cs)
    if not code.is_code or rpl < e.vcpu.cpl or (not code.access & 4 and code.dpl != rpl):
        raise Reflect(VEC_GP, cs & ~3, f"return to {cs:#06x} refused")
    if not code.present:
        raise Reflect(VEC_NP, cs & ~3, f"return to {cs:#06x}: segment not present")
    if rpl not in (0, 3):
        raise Unsupported(f"guest rings 1 and 2 are not modelled (return to {cs:#06x})")
    if rpl > e.vcpu.cpl:  # to user mode: the outer stack comes off the kernel stack
        esp, ss = e.pop(2)
        e.state.esp, e.state.ss = esp, ss & 0xFFFF
        for name in ("ds", "es", "fs", "gs"):  # the CPU nulls kernel data segments here
            selector = getattr(e.state, name)
            if selector & ~3 and _kernel_only(e, selector):
                setattr(e.state, name, 0)
        e.vcpu.cpl = 3
    e.state.eip, e.state.cs = eip, cs
    if eflags is not None:
        e.state.eflags = eflags
        e.vcpu.load_eflags(eflags)


def _kernel_only(e: Emulation, selector: int) -> bool:
    try:
        descriptor = e.guest_descriptor(selector)
    except Reflect:
        return True
    conforming_code = descriptor.is_code and descriptor.access & 4
    return not conforming_code and descriptor.dpl < 3


# ---------------------------------------------------------------------- silent at CPL 1
def _descriptor_or_none(e: Emulation, selector: int):
    try:
        return e.guest_descriptor(selector)
    except Reflect:
        return None


def _set_zf(e: Emulation, on: bool) -> None:
    real = e.machine.state().eflags
    e.flags = (real | ZF) if on else (real & ~ZF)


@emulates("lar", "lsl", traps=False)
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


@emulates("verr", "verw", traps=False)
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


@emulates("smsw", "str", "sldt", traps=False)
def _store_system_register(e: Emulation) -> None:
    value = {"smsw": e.vcpu.cr0, "str": e.vcpu.tr, "sldt": e.vcpu.ldtr}[e.insn.mnemonic]
    e.set_operand(0, value & 0xFFFF)


@emulates("ljmp", "lcall", traps=False)
def _far_transfer(e: Emulation) -> None:
    insn = e.insn
    if insn.far_target is not None:
        selector, offset = insn.far_target
    else:
        raw = e.read(e.address_of(insn.operands[0]), 6)
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
