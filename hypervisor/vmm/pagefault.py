"""The error code of a page fault that unicorn raised.

Unicorn reports #PF as vector 14 with CR2 set but no error code (fact 2, measured). The code
is rebuilt here as the CPU built it, at the fault (never per access): the walk of the tables
for CR2 gives P (the page was there: a protection or reserved-bit violation) and RSVD; U is
the CPL; W is what the faulting access was, which the walk decides when it could only have
been a write (a present page the CPU may read) and the instruction otherwise: its memory
operands, implicit stack accesses and string operands, whichever covers CR2, reads first
(the CPU reads a source before it writes), a read-modify-write counting as a write (as
Intel's CPUs report it). An instruction fetch is a read. I/D stays 0: it exists only with
PAE/NX or SMEP. The same list of an instruction's accesses finds the linear address of a
store that unicorn reports by its physical one (`store_address`, for recordings).
"""

from __future__ import annotations

from hypervisor.isa import Instruction, decode
from hypervisor.isa.decode import ACCESS_READ, ACCESS_WRITE
from hypervisor.machine.cpu import CpuState
from hypervisor.machine.paging import PF_USER, Access, LinearMemory, fault_code, fetch_faulted
from hypervisor.vmm.operands import effective_address

_PUSHES = {"push": 1, "pushal": 8, "pushaw": 8, "pushfd": 1, "pushfw": 1, "call": 1, "enter": 1}
_POPS = {"pop": 1, "popal": 8, "popaw": 8, "popfd": 1, "popfw": 1, "ret": 1, "iretd": 3}
_ALWAYS_WRITE = frozenset({"cmpxchg", "cmpxchg8b", "xadd", "xchg"})  # locked RMW cycles


def page_fault_code(memory: LinearMemory, state: CpuState, cpl: int, cr2: int) -> int:
    """The error code the CPU pushed for the #PF at `state.eip` with CR2 = `cr2`."""
    registers = memory.registers()
    user = cpl == 3
    found = memory.lookup(cr2, registers)
    if found is None:  # paging is off: no page fault can have happened
        return PF_USER if user else 0
    as_read = fault_code(found, Access(user=user), registers)
    if as_read is None:  # reading would have been allowed: the access was a write
        return fault_code(found, Access(write=True, user=user), registers) or 0
    insn = decode(memory.peek(state.eip, 15), state.eip)
    fetch = fetch_faulted(insn, state.eip, cr2)
    write = not fetch and insn is not None and _writes_at(insn, state, cr2)
    return fault_code(found, Access(write=write, user=user), registers) or 0


def _writes_at(insn: Instruction, state: CpuState, cr2: int) -> bool:
    """Was the access of `insn` that reached `cr2` a write?"""
    made = accesses(insn, state)
    hits = [write for begin, end, write in made if begin <= cr2 < end]
    if hits:
        return hits[0]
    return any(write for _, _, write in made)  # an access the list does not model


def store_address(memory: LinearMemory, state: CpuState, physical: int) -> int:
    """The linear address of a store the CPU is making at guest-`physical` with paging on,
    from the instruction running (`state`, as it began): unicorn's write hook reports the
    address after translation, and a recording shows the one the guest's instruction names
    (what the page-tables pane walks). The instruction's writes (a destination, the stack of
    a push) are the candidates: the one whose page the CPU's tables map onto the store's page
    is it. Where none is (a store this list does not model), the physical address stays."""
    insn = decode(memory.peek(state.eip, 15), state.eip)
    if insn is None:
        return physical
    frame = physical & ~0xFFF
    for begin, end, write in accesses(insn, state):
        for linear in (begin, end - 1) if write else ():
            found = memory.lookup(linear & 0xFFFFFFFF)
            if found is not None and found.present and found.physical(linear) & ~0xFFF == frame:
                return (linear & ~0xFFF) | (physical & 0xFFF)
    return physical


def accesses(insn: Instruction, state: CpuState) -> list[tuple[int, int, bool]]:
    """(begin, end, is_write) of each memory access of `insn`, in the order the CPU makes
    them: reads (explicit sources, stack pops), then writes (destinations, stack pushes)."""
    reads: list[tuple[int, int, bool]] = []
    writes: list[tuple[int, int, bool]] = []
    for op in insn.operands:
        if op.kind != "mem":
            continue
        begin = effective_address(op, state)
        span = (begin, begin + op.size)
        if op.access & ACCESS_WRITE or insn.mnemonic in _ALWAYS_WRITE:
            writes.append((*span, True))
        elif op.access & ACCESS_READ:
            reads.append((*span, False))
    width = insn.operand_size
    if insn.mnemonic in _PUSHES:
        size = width * _PUSHES[insn.mnemonic]
        writes.append((state.esp - size, state.esp, True))
    elif insn.mnemonic in _POPS:
        reads.insert(0, (state.esp, state.esp + width * _POPS[insn.mnemonic], False))
    elif insn.mnemonic == "leave":
        reads.append((state.ebp, state.ebp + width, False))
    return reads + writes
