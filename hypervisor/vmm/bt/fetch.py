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

from hypervisor.events import PageFaultHandled
from hypervisor.machine.hostram import PAGE
from hypervisor.machine.interrupts import VEC_PF
from hypervisor.machine.paging import PageFault
from hypervisor.vmm.bt.cache import Fragment
from hypervisor.vmm.bt.translator import Rule, rule_for
from hypervisor.vmm.contract import ExitInfo, ExitReason

if TYPE_CHECKING:
    from hypervisor.vmm.bt.executor import BinaryTranslation

FAULTS_IN_A_ROW = 64  # fetch faults delivered one after another before the VM stops


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
    """The guest instruction whose inline sequence faulted at `tc_eip` (between guest
    instruction boundaries), with the registers it had saved put back: its accesses fault
    before it changes anything else the guest sees. None in the prologue: its checks read
    guest code the monitor mapped on entry, so a fault there is never the guest's."""
    owner = fragment.guest_eip_owning(tc_eip)
    index = next((i for i, insn in enumerate(fragment.insns) if insn.address == owner), None)
    first = min(fragment.instruction_starts, default=fragment.tc_end)
    if index is None or tc_eip < first:
        return None
    if rule_for(fragment.insns[index]) is Rule.DESCRIPTOR_TABLE:  # SGDT/SIDT to memory
        saved = bt.machine.read(bt.area.save_a, 8)
        eax, ebx = (int.from_bytes(saved[i : i + 4], "little") for i in (0, 4))
        bt.machine.set_registers(eax=eax, ebx=ebx)
    return index
