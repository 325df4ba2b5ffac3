"""Guest kernel code through the guest's page tables, for the translator and its monitor.

The CPU never fetches guest kernel code under binary translation: the translator reads it.
So the translator reads it where the guest's CPU would fetch it: at its guest-virtual
address, through the guest's own page tables (with paging off, linear = physical). The
guest-physical frame the bytes come from is part of the fragment's key (`cache.py`); the
walk sets the code page's accessed bit as the CPU's fetch would.

A fetch those tables refuse is the guest's page fault (a true #PF: supervisor read, page not
present, CR2 = the address), never a monitor error. It is found while the monitor looks for
a fragment — inside a world switch, a callout, a chain — so it is kept and delivered before
the next slice rather than from where it was found: the handler's own fetch may be refused
too, and that must not recurse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_EAX

from hypervisor.events import PageFaultHandled
from hypervisor.isa import decode
from hypervisor.machine.hostram import PAGE
from hypervisor.machine.interrupts import VEC_PF
from hypervisor.machine.paging import PageFault
from hypervisor.vmm.bt.cache import Fragment
from hypervisor.vmm.bt.translator import Rule, rule_for
from hypervisor.vmm.contract import ExitInfo, ExitReason

if TYPE_CHECKING:
    from hypervisor.vmm.bt.executor import BinaryTranslation

FAULTS_IN_A_ROW = 64  # fetch faults delivered one after another before the VM stops
MAX_INSTRUCTION = 15  # bytes
_LAHF = 0xD5  # SF ZF AF PF CF, as LAHF puts them in AH
_OF = 0x800
_ARITHMETIC = _LAHF | _OF


class KernelFetch:
    """Where the translator reads guest kernel code, and the fetch fault not yet delivered."""

    def __init__(self, bt: BinaryTranslation) -> None:
        self.bt = bt
        self.pending: tuple[int, int] | None = None  # (CR2, error code) to deliver

    def read(self, address: int, size: int) -> bytes:
        """Guest code at a guest-virtual address (the bytes stop at the first page the
        guest's tables do not map)."""
        return self.bt.guest_memory.peek(address, size)

    def frame(self, guest_eip: int, paged: bool) -> int:
        """The guest-physical frame `guest_eip` is fetched from; raises PageFault where the
        guest's tables refuse the fetch."""
        if not paged:
            return guest_eip & ~(PAGE - 1)
        return self.bt.guest_memory.translate(guest_eip) & ~(PAGE - 1)

    def next_frame(self, guest_eip: int, paged: bool) -> tuple[int, ...]:
        """The frame of the page after `guest_eip`'s, if the guest maps it (a block's last
        instruction may straddle into it); no side effect."""
        following = (guest_eip | (PAGE - 1)) + 1
        if not paged:
            return (following,)
        found = self.bt.guest_memory.lookup(following)
        return (found.physical(following) & ~(PAGE - 1),) if found and found.present else ()

    def whole_instruction(self, guest_eip: int) -> None:
        """Raise PageFault when the instruction at `guest_eip` runs on into a page the
        guest's tables do not map: its fetch faults there (CR2 = that page), as the CPU's
        does, before anything of it runs."""
        code = self.read(guest_eip, MAX_INSTRUCTION)
        if len(code) < MAX_INSTRUCTION and decode(code, guest_eip) is None:
            self.bt.guest_memory.translate(guest_eip + len(code))

    def refused(self, fault: PageFault) -> None:
        """The guest's tables refused a fetch: its #PF, delivered before the next slice
        (the guest is parked at the instruction it could not fetch)."""
        self.pending = (fault.linear, fault.error_code)

    def deliver_pending(self) -> None:
        """Deliver the refused fetch's #PF through the guest's IDT. A handler that is not
        mapped either is refused in turn, a bounded number of times (bare metal would push
        frames until its stack ran out)."""
        bt = self.bt
        vm = bt.vm
        for _ in range(FAULTS_IN_A_ROW):
            fault, self.pending = self.pending, None
            if fault is None or vm.exit is not None:
                return
            cr2, code = fault
            assert bt.mmu is not None  # only the guest's paging refuses a fetch
            bt.mmu.true_faults += 1
            vm.stats.traps["#PF true"] += 1
            eip = bt.parked if bt.parked is not None else cr2
            vm.emit(PageFaultHandled(vm.name, vm.step, eip, cr2, code, "true"))
            bt.vcpu.cr2 = cr2
            bt.deliver(VEC_PF, "exception", code)
        if self.pending is not None:
            detail = "instruction fetch page faults in a row: the #PF handler is not mapped"
            vm.finish(ExitInfo(ExitReason.CRASHED, detail=detail))


def sequence_faulted(bt: BinaryTranslation, fragment: Fragment, tc_eip: int) -> int | None:
    """The guest instruction whose translation faulted at `tc_eip`, between two guest
    instruction boundaries, with what the translation had set aside put back: its accesses
    fault before it changes anything else the guest sees. In the prologue, the
    self-check's reads of guest code (the flags are in EAX then, as LAHF and SETO left
    them): the fragment's first instruction."""
    m = bt.machine
    saved = m.read(bt.area.save_a, 8)
    eax, ebx = (int.from_bytes(saved[i : i + 4], "little") for i in (0, 4))
    if tc_eip < min(fragment.instruction_starts, default=fragment.tc_end):
        flags = m.state().eflags
        kept = m.uc.reg_read(UC_X86_REG_EAX)  # AH = SF ZF AF PF CF, AL = OF
        flags = (flags & ~_ARITHMETIC) | ((kept >> 8) & _LAHF) | (_OF if kept & 0xFF else 0)
        m.set_registers(eax=eax, eflags=flags)
        return 0
    owner = fragment.guest_eip_owning(tc_eip)
    index = next((i for i, insn in enumerate(fragment.insns) if insn.address == owner), None)
    if index is not None and rule_for(fragment.insns[index]) is Rule.DESCRIPTOR_TABLE:
        m.set_registers(eax=eax, ebx=ebx)  # SGDT/SIDT to memory: its scratch registers
    return index
