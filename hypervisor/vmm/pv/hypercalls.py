"""The hypercall interface of the pv mode (Xen's method): the one table of calls.

A paravirtualized guest kernel (built with -DPARAVIRT) does not execute privileged or
sensitive instructions; it asks the monitor with `int 0x82`: EAX = number, EBX, ECX, EDX =
arguments, the result comes back in EAX (other registers are preserved). A failed call
returns a negative error code and is logged; it never stops the monitor.

This table is the single source of the interface: `docs/hypercalls.md` and the constants
block of `sample_guests/vmlab.inc` are checked against it by the tests.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypervisor.isa import decode
from hypervisor.machine.cpu import CpuState
from hypervisor.machine.paging import PageFault
from hypervisor.vmm.emulate import EMULATORS, ZF, Emulation, Reflect
from hypervisor.vmm.pv.errors import E_FAULT, E_INVAL, HypercallError

if TYPE_CHECKING:
    from hypervisor.vmm.pv.executor import Paravirtual

HYPERCALL_VECTOR = 0x82

MAX_CONSOLE_WRITE = 4096  # bytes per console_write: bounded work per hypercall
MAX_MMU_UPDATES = 512  # entries per mmu_update (a whole page table's worth, half)

# read_register(which): the values SMSW, STR, SLDT, PUSHFD, MOV from CS/SS would give at CPL 0.
REG_EFLAGS, REG_CS, REG_SS, REG_CPL, REG_MSW, REG_TR, REG_LDTR = range(7)
# store_table(which, address): what SGDT / SIDT would store.
TABLE_GDT, TABLE_IDT = 0, 1
# descriptor(op, selector): LAR, LSL, VERR, VERW on the guest's own GDT at its virtual CPL.
DESC_LAR, DESC_LSL, DESC_VERR, DESC_VERW = range(4)

# POPF at CPL 0 may change these: arithmetic flags, DF, IF and IOPL (not TF, NT, VM, RF).
_POPF_BITS = 0x0001 | 0x0004 | 0x0010 | 0x0040 | 0x0080 | 0x0200 | 0x0400 | 0x0800 | 0x3000

# Machine code the monitor decodes to reuse its instruction emulators (trap and bt share them).
_LTR_BX = b"\x0f\x00\xdb"
_IRETD = b"\xcf"
_DESCRIPTOR_QUERIES = {
    DESC_LAR: b"\x0f\x02\xc3",  # lar eax, ebx
    DESC_LSL: b"\x0f\x03\xc3",  # lsl eax, ebx
    DESC_VERR: b"\x0f\x00\xe3",  # verr bx
    DESC_VERW: b"\x0f\x00\xeb",  # verw bx
}


@dataclass
class Call:
    """One hypercall being served: the guest's virtual registers (changed in place: the guest
    resumes with them) and its arguments."""

    state: CpuState
    args: tuple[int, int, int]


# A handler returns the result for EAX, or None when it resumed (or stopped) the guest itself.
Handler = Callable[["Paravirtual", Call], int | None]


@dataclass(frozen=True)
class Hypercall:
    number: int
    name: str
    args: tuple[str, ...]
    result: str
    replaces: str
    handler: Handler


HYPERCALLS: dict[int, Hypercall] = {}


def hypercall(
    number: int, name: str, args: tuple[str, ...], result: str, replaces: str
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        assert number not in HYPERCALLS, number
        HYPERCALLS[number] = Hypercall(number, name, args, result, replaces, handler)
        return handler

    return register


# ---------------------------------------------------------------------------- checks
def guest_range(pv: Paravirtual, address: int, size: int) -> None:
    if address + size > pv.machine.ram_size:
        raise HypercallError(E_FAULT, f"{size} bytes at {address:#010x} are not inside guest RAM")


def guest_read(pv: Paravirtual, address: int, size: int) -> bytes:
    """Guest memory at `address` as the kernel addresses it: through its own page tables
    once it pages (Xen's hypercalls take virtual addresses too), its RAM before."""
    memory = pv.guest_memory
    if not memory.registers().enabled:
        guest_range(pv, address, size)
    try:
        return memory.read(address, size)
    except PageFault as fault:
        raise HypercallError(E_FAULT, _unmapped(fault)) from None


def guest_write(pv: Paravirtual, address: int, data: bytes) -> None:
    memory = pv.guest_memory
    if not memory.registers().enabled:
        guest_range(pv, address, len(data))
    try:
        memory.write(address, data)
    except PageFault as fault:
        raise HypercallError(E_FAULT, _unmapped(fault)) from None


def _unmapped(fault: PageFault) -> str:
    return f"{fault.linear:#010x} is not mapped for the kernel (#PF error {fault.error_code:#x})"


def _emulate(pv: Paravirtual, code: bytes, state: CpuState) -> Emulation:
    """Run one of the monitor's instruction emulators on `state`, as the guest's CPU at its
    virtual CPL would execute `code`; a fault becomes E_INVAL."""
    insn = decode(code, state.eip)
    assert insn is not None
    handler = EMULATORS[insn.mnemonic]
    emulation = Emulation(insn, state, pv.vcpu, pv.machine)
    try:
        handler(emulation)
    except Reflect as refused:
        raise HypercallError(E_INVAL, refused.why or "refused") from None
    return emulation


# ---------------------------------------------------------------------------- console, exit
@hypercall(0, "console_write", ("buf", "len"), "bytes written", "OUT to the UART, per byte")
def _console_write(pv: Paravirtual, call: Call) -> int:
    buf, length, _ = call.args
    if length > MAX_CONSOLE_WRITE:
        raise HypercallError(E_INVAL, f"length {length} is over {MAX_CONSOLE_WRITE}")
    for byte in guest_read(pv, buf, length):
        pv.machine.io.write(0x3F8, 1, byte)
    return length


@hypercall(1, "exit", ("status",), "does not return", "OUT to the debug-exit port")
def _exit(pv: Paravirtual, call: Call) -> int:
    pv.machine.io.write(0x501, 1, call.args[0] & 0xFF)
    return 0


# ---------------------------------------------------------------------------- virtual interrupts
@hypercall(2, "irq_disable", (), "EFLAGS as PUSHFD shows them (old virtual IF)", "CLI")
def _irq_disable(pv: Paravirtual, call: Call) -> int:
    flags = call.state.eflags
    pv.vcpu.interrupts_enabled = False
    return flags


@hypercall(3, "irq_enable", (), "0", "STI")
def _irq_enable(pv: Paravirtual, call: Call) -> int:
    pv.vcpu.interrupts_enabled = True
    return 0


@hypercall(4, "irq_restore", ("flags",), "0", "POPFD (arithmetic flags, IF, IOPL)")
def _irq_restore(pv: Paravirtual, call: Call) -> int:
    flags = call.args[0]
    call.state.eflags = (call.state.eflags & ~_POPF_BITS) | (flags & _POPF_BITS)
    pv.vcpu.load_eflags(flags)
    return 0


@hypercall(5, "iret", (), "does not return", "IRETD ([ESP] = saved EAX, then the frame)")
def _iret(pv: Paravirtual, call: Call) -> None:
    state = call.state
    guest_read(pv, state.esp, 16)
    (state.eax,) = struct.unpack("<I", guest_read(pv, state.esp, 4))
    state.esp = (state.esp + 4) & 0xFFFFFFFF
    pv.return_from_interrupt(state)


@hypercall(6, "halt", (), "0 (after the interrupt)", "HLT (STI; HLT when IF is on)")
def _halt(pv: Paravirtual, call: Call) -> None:
    call.state.eax = 0
    pv.enter(call.state)
    pv.halt()


# ---------------------------------------------------------------------------- tables, stacks
def _table(pv: Paravirtual, base: int, limit: int, what: str) -> tuple[int, int]:
    if limit > 0xFFFF:
        raise HypercallError(E_INVAL, f"{what} limit {limit:#x} is over 0xffff")
    guest_read(pv, base, limit + 1)
    return base, limit


@hypercall(7, "set_gdt", ("base", "limit"), "0", "LGDT")
def _set_gdt(pv: Paravirtual, call: Call) -> int:
    pv.vcpu.gdtr = _table(pv, call.args[0], call.args[1], "GDT")
    return 0


@hypercall(8, "set_idt", ("base", "limit"), "0", "LIDT")
def _set_idt(pv: Paravirtual, call: Call) -> int:
    pv.vcpu.idtr = _table(pv, call.args[0], call.args[1], "IDT")
    return 0


@hypercall(9, "load_tss", ("selector",), "0", "LTR")
def _load_tss(pv: Paravirtual, call: Call) -> int:
    state = call.state.copy()
    state.ebx = call.args[0] & 0xFFFF
    _emulate(pv, _LTR_BX, state)
    return 0


@hypercall(10, "stack_switch", ("ss", "esp"), "0", "writing SS0:ESP0 of the TSS")
def _stack_switch(pv: Paravirtual, call: Call) -> int:
    ss, esp, _ = call.args
    if pv.vcpu.tss is None:
        raise HypercallError(E_INVAL, "no TSS loaded (load_tss first)")
    if ss & 3 or ss & ~0xFFFF:
        raise HypercallError(E_INVAL, f"{ss:#x} is not a ring 0 stack selector")
    guest_write(pv, pv.vcpu.tss[0] + 4, struct.pack("<II", esp, ss))
    return 0


# ---------------------------------------------------------------------------- devices
@hypercall(11, "irq_setup", ("vector_base", "mask"), "0", "the ICW1-4 and OCW1 OUTs to the PICs")
def _irq_setup(pv: Paravirtual, call: Call) -> int:
    base, mask, _ = call.args
    if base & 7 or not 0x20 <= base <= 0xF0:
        raise HypercallError(E_INVAL, f"vector base {base:#x}: a multiple of 8 in 0x20..0xf0")
    if mask > 0xFFFF:
        raise HypercallError(E_INVAL, f"IRQ mask {mask:#x} is over 16 bits")
    io = pv.machine.io
    for port, value in (
        (0x20, 0x11), (0xA0, 0x11), (0x21, base), (0xA1, base + 8),
        (0x21, 0x04), (0xA1, 0x02), (0x21, 0x01), (0xA1, 0x01),
        (0x21, mask & 0xFF), (0xA1, mask >> 8),
    ):  # fmt: skip
        io.write(port, 1, value)
    return 0


@hypercall(12, "set_timer", ("reload",), "0", "the OUTs that program PIT channel 0 (mode 2)")
def _set_timer(pv: Paravirtual, call: Call) -> int:
    reload = call.args[0]
    if reload > 0xFFFF:
        raise HypercallError(E_INVAL, f"timer reload {reload} is over 65535")
    for port, value in ((0x43, 0x34), (0x40, reload & 0xFF), (0x40, reload >> 8)):
        pv.machine.io.write(port, 1, value)
    return 0


@hypercall(13, "eoi", (), "0", "OUT of the end-of-interrupt command to the PIC")
def _eoi(pv: Paravirtual, call: Call) -> int:
    pv.machine.io.write(0x20, 1, 0x20)
    return 0


# ---------------------------------------------------------------------------- what the guest sees
@hypercall(14, "read_register", ("which",), "the value", "PUSHFD, MOV from CS/SS, SMSW, STR, SLDT")
def _read_register(pv: Paravirtual, call: Call) -> int:
    state, vcpu = call.state, pv.vcpu
    values = {
        REG_EFLAGS: state.eflags,
        REG_CS: state.cs,
        REG_SS: state.ss,
        REG_CPL: vcpu.cpl,
        REG_MSW: vcpu.cr0 & 0xFFFF,
        REG_TR: vcpu.tr,
        REG_LDTR: vcpu.ldtr,
    }
    which = call.args[0]
    if which not in values:
        raise HypercallError(E_INVAL, f"no register number {which}")
    return values[which]


@hypercall(15, "store_table", ("which", "address"), "0", "SGDT, SIDT")
def _store_table(pv: Paravirtual, call: Call) -> int:
    which, address, _ = call.args
    tables = {TABLE_GDT: pv.vcpu.gdtr, TABLE_IDT: pv.vcpu.idtr}
    if which not in tables:
        raise HypercallError(E_INVAL, f"no descriptor table number {which}")
    base, limit = tables[which]
    guest_write(pv, address, struct.pack("<HI", limit, base))
    return 0


@hypercall(16, "descriptor", ("op", "selector"), "LAR/LSL value, ZF", "LAR, LSL, VERR, VERW")
def _descriptor(pv: Paravirtual, call: Call) -> int:
    op, selector, _ = call.args
    if op not in _DESCRIPTOR_QUERIES:
        raise HypercallError(E_INVAL, f"no descriptor query number {op}")
    state = call.state.copy()
    state.eax, state.ebx = 0, selector & 0xFFFF
    emulation = _emulate(pv, _DESCRIPTOR_QUERIES[op], state)
    zf = (emulation.flags or 0) & ZF
    call.state.eflags = (call.state.eflags & ~ZF) | zf
    return state.eax


# ---------------------------------------------------------------------------- direct paging
@hypercall(
    17, "mmu_update", ("requests", "count"), "count (or the error of the first refused)",
    "MOV to page-table entries",
)  # fmt: skip
def _mmu_update(pv: Paravirtual, call: Call) -> int:
    requests, count, _ = call.args
    if count > MAX_MMU_UPDATES:
        raise HypercallError(E_INVAL, f"{count} updates: at most {MAX_MMU_UPDATES} a call")
    batch = guest_read(pv, requests, 8 * count)
    mmu = pv.direct_mmu()
    try:
        for i in range(count):
            address, value = struct.unpack_from("<II", batch, 8 * i)
            try:
                mmu.update(pv.machine, address, value)
            except HypercallError as refused:
                why = f"update {i + 1} of {count} ({value:#010x} at {address:#010x}): "
                pv.isolation_event("page_table", address, refused.why)
                raise HypercallError(refused.code, why + refused.why) from None
    finally:
        pv.flush_tlb()
    return count


@hypercall(18, "new_baseptr", ("directory",), "0", "MOV to CR3 (the first one: and CR0.PG)")
def _new_baseptr(pv: Paravirtual, call: Call) -> int:
    try:
        pv.load_directory(call.args[0])
    except HypercallError as refused:
        pv.isolation_event("page_table", call.args[0], refused.why)
        raise
    return 0


@hypercall(19, "invlpg", ("address",), "0", "INVLPG")
def _invlpg(pv: Paravirtual, call: Call) -> int:
    pv.flush_tlb()
    return 0


def markdown_table() -> str:
    """The table as docs/hypercalls.md shows it (a test keeps the two equal)."""
    rows = ["| EAX | name | EBX, ECX, EDX | EAX on return | replaces |", "|---|---|---|---|---|"]
    for call in sorted(HYPERCALLS.values(), key=lambda c: c.number):
        args = ", ".join(call.args) or "—"
        rows.append(f"| {call.number} | `{call.name}` | {args} | {call.result} | {call.replaces} |")
    return "\n".join(rows) + "\n"
