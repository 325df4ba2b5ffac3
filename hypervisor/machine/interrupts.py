"""Interrupt and exception delivery through an IDT, done in Python.

Unicorn reports exceptions and INT n to a hook and never consults the IDT (docs/unicorn-
facts.md, fact 2), so whoever owns the CPU delivers them: bare metal through the guest's
real IDT, a monitor through the guest's virtual IDT. Both use `deliver()`, which does what
the CPU does: gate lookup and checks, the privilege change with the stack switch from the
TSS, the frame push.

Every access goes through the page tables in force, as the CPU's does: the tables are read
with supervisor rights, the frame is pushed with the rights of the handler's CPL, and a
missing or protected page raises #PF (CR2 and error code) in the middle of delivery, which
escalates like any fault there (#PF -> #DF -> triple fault).

Simplifications (documented for the lessons): segments are flat (stack and table addresses
are linear), task gates are refused with #GP, and hardware error codes beyond the selector
index forms below are 0 (unicorn does not report them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from hypervisor.machine.cpu import (
    EFLAGS_IF,
    EFLAGS_NT,
    EFLAGS_RF,
    EFLAGS_TF,
    EFLAGS_VM,
    CpuState,
)
from hypervisor.machine.descriptors import (
    DESCRIPTOR_SIZE,
    TSS_MIN_LIMIT,
    Gate,
    SegmentDescriptor,
    tss_stack,
)
from hypervisor.machine.paging import PageFault

VEC_DE, VEC_DB, VEC_NMI, VEC_BP, VEC_OF, VEC_BR, VEC_UD, VEC_NM, VEC_DF = range(9)
VEC_TS, VEC_NP, VEC_SS, VEC_GP, VEC_PF = 10, 11, 12, 13, 14
VEC_AC = 17

EXCEPTION_NAMES = {
    0: "#DE divide error",
    1: "#DB debug",
    2: "NMI",
    3: "#BP breakpoint",
    4: "#OF overflow",
    5: "#BR bound",
    6: "#UD invalid opcode",
    7: "#NM no math coprocessor",
    8: "#DF double fault",
    10: "#TS invalid TSS",
    11: "#NP segment not present",
    12: "#SS stack fault",
    13: "#GP general protection",
    14: "#PF page fault",
    16: "#MF x87 error",
    17: "#AC alignment check",
    18: "#MC machine check",
    19: "#XM SIMD error",
}

HAS_ERROR_CODE = frozenset({VEC_DF, VEC_TS, VEC_NP, VEC_SS, VEC_GP, VEC_PF, VEC_AC})
CONTRIBUTORY = frozenset({VEC_DE, VEC_TS, VEC_NP, VEC_SS, VEC_GP})

Source = Literal["exception", "software", "external"]


def vector_name(vector: int) -> str:
    return EXCEPTION_NAMES.get(vector, f"vector {vector:#04x}")


@dataclass(frozen=True, slots=True)
class Tables:
    """The descriptor tables as the delivering CPU sees them (linear addresses)."""

    idt: tuple[int, int]  # (base, limit)
    gdt: tuple[int, int]
    tss: tuple[int, int] | None  # (base, limit) of the current TSS, None when TR is null


class DeliveryFault(Exception):
    """Delivery itself faulted: the CPU would raise `vector` with `error_code` instead (and
    set CR2 to `cr2` for a page fault)."""

    def __init__(self, vector: int, error_code: int, why: str, cr2: int | None = None) -> None:
        super().__init__(why)
        self.vector = vector
        self.error_code = error_code
        self.why = why
        self.cr2 = cr2


@dataclass(frozen=True, slots=True)
class Delivered:
    state: CpuState
    cpl: int
    gate: Gate
    cr2: int | None = None  # a page fault during delivery set CR2 to this


class CpuMemory(Protocol):
    """Linear memory as the CPU reaches it for itself (`paging.LinearMemory`)."""

    def read(self, linear: int, size: int, user: bool = False) -> bytes: ...

    def write(self, linear: int, data: bytes, user: bool = False) -> None: ...


def read_descriptor(memory: CpuMemory, table: tuple[int, int], selector: int) -> SegmentDescriptor:
    """The GDT entry for `selector` (LDT selectors are refused: vmlab guests use the GDT)."""
    index = selector & ~7
    if selector & 4 or index == 0 or index + 7 > table[1]:
        raise DeliveryFault(VEC_GP, selector & ~3, f"selector {selector:#06x} is not usable")
    return SegmentDescriptor.unpack(memory.read(table[0] + index, DESCRIPTOR_SIZE))


def deliver(
    memory: CpuMemory,
    state: CpuState,
    cpl: int,
    tables: Tables,
    vector: int,
    source: Source,
    error_code: int = 0,
) -> Delivered:
    """Deliver `vector` to the handler in `tables.idt`, as the CPU would; returns the new state.

    Raises DeliveryFault (or PageFault, from `memory`) when the CPU itself would fault while
    delivering.
    """
    ext = 1 if source == "external" else 0
    idt_base, idt_limit = tables.idt
    if vector * 8 + 7 > idt_limit:
        raise DeliveryFault(VEC_GP, vector * 8 + 2 + ext, f"IDT has no entry {vector:#x}")
    gate = Gate.unpack(memory.read(idt_base + vector * 8, 8))
    if not gate.is_32bit and gate.gate_type not in (0x6, 0x7):
        raise DeliveryFault(VEC_GP, vector * 8 + 2 + ext, f"IDT entry {vector:#x} is not a gate")
    if source == "software" and gate.dpl < cpl:
        raise DeliveryFault(
            VEC_GP, vector * 8 + 2, f"INT {vector:#x}: gate DPL {gate.dpl} < CPL {cpl}"
        )
    if not gate.present:
        raise DeliveryFault(VEC_NP, vector * 8 + 2 + ext, f"IDT entry {vector:#x} not present")
    code = read_descriptor(memory, tables.gdt, gate.selector)
    if not code.is_code:
        raise DeliveryFault(VEC_GP, gate.selector & ~3, "gate selector is not a code segment")
    if not code.present:
        raise DeliveryFault(VEC_NP, gate.selector & ~3, "handler code segment not present")
    conforming = bool(code.access & 0x04)
    new_cpl = cpl if conforming else code.dpl
    if new_cpl > cpl:
        raise DeliveryFault(VEC_GP, gate.selector & ~3, "handler less privileged than caller")

    frame: list[int] = []
    esp, ss = state.esp, state.ss
    switched = new_cpl < cpl
    if switched:
        if tables.tss is None or tables.tss[1] < TSS_MIN_LIMIT:
            raise DeliveryFault(VEC_TS, 0, "no usable TSS for the stack switch")
        raw_tss = memory.read(tables.tss[0], TSS_MIN_LIMIT + 1)
        ss, esp = tss_stack(raw_tss, new_cpl)
        stack = read_descriptor(memory, tables.gdt, ss)
        if stack.is_code or not stack.present or stack.dpl != new_cpl:
            raise DeliveryFault(VEC_TS, ss & ~3, f"TSS stack selector {ss:#06x} is not usable")
        frame += [state.ss, state.esp]
    frame += [state.eflags, state.cs, state.eip]
    if source == "exception" and vector in HAS_ERROR_CODE:
        frame.append(error_code)
    esp = (esp - 4 * len(frame)) & 0xFFFFFFFF
    memory.write(esp, struct.pack(f"<{len(frame)}I", *reversed(frame)), user=new_cpl == 3)

    eflags = state.eflags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM)
    if gate.is_interrupt_gate:
        eflags &= ~EFLAGS_IF
    new_state = state.copy()  # (a copy and five stores: `replace` costs several times more)
    new_state.eip = gate.offset if gate.is_32bit else gate.offset & 0xFFFF
    new_state.cs = (gate.selector & ~3) | new_cpl
    new_state.eflags = eflags
    new_state.esp = esp
    if switched:
        new_state.ss = (ss & ~3) | new_cpl
    return Delivered(new_state, new_cpl, gate)


class TripleFault(Exception):
    """Delivery failed, then delivering the resulting fault failed, then #DF did: the CPU
    shuts down."""


def deliver_escalating(
    memory: CpuMemory,
    state: CpuState,
    cpl: int,
    tables: Tables,
    vector: int,
    source: Source,
    error_code: int = 0,
) -> tuple[Delivered, int]:
    """`deliver()`, and when delivery itself faults, what the CPU does next: the new fault,
    or #DF for two contributory faults or a page fault and a second one, or a triple fault.
    Returns (delivered, vector); `delivered.cr2` is set when a page fault happened on the way."""
    first = vector
    cr2: int | None = None
    while True:
        try:
            done = deliver(memory, state, cpl, tables, vector, source, error_code)
            return (done if cr2 is None else replace(done, cr2=cr2)), vector
        except (DeliveryFault, PageFault) as raised:
            fault = _as_delivery_fault(raised, vector)
            if fault.cr2 is not None:
                cr2 = fault.cr2
            if vector == VEC_DF:
                raise TripleFault(
                    f"triple fault: {vector_name(first)} could not be delivered ({fault.why})"
                ) from None
            double = vector == VEC_PF or (vector in CONTRIBUTORY and fault.vector in CONTRIBUTORY)
            vector, error_code = (VEC_DF, 0) if double else (fault.vector, fault.error_code)
            source = "exception"


def _as_delivery_fault(raised: DeliveryFault | PageFault, vector: int) -> DeliveryFault:
    if isinstance(raised, DeliveryFault):
        return raised
    why = f"page fault at {raised.linear:#010x} while delivering {vector_name(vector)}"
    return DeliveryFault(VEC_PF, raised.error_code, why, raised.linear)
