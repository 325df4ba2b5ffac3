"""A page fault while the guest runs on shadow page tables: hidden or true.

Both are traps the monitor handles (counted as "#PF hidden" and "#PF true", priced as trap
round trips by the cost model).

The CPU faulted on the shadow. What the access was (a write or not, from CPL 3 or not: the
guest kernel at real CPL 1 is a supervisor, as at its CPL 0) is rebuilt as on bare metal
(`vmm/pagefault.py`); the guest's own tables then decide. If they allow the access the
fault is hidden: the shadow gets the entry and the guest resumes at the same instruction.
If they refuse it, the guest gets the #PF its CPU would raise, with its CR2 and error code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_CR2

from hypervisor.events import PageFaultHandled
from hypervisor.machine.interrupts import VEC_PF
from hypervisor.machine.paging import PF_USER, PF_WRITE, Access, fault_code
from hypervisor.vmm.mmu.shadow import WINDOW_PDE, ShadowMmu
from hypervisor.vmm.pagefault import page_fault_code

if TYPE_CHECKING:
    from hypervisor.vmm.trap import TrapAndEmulate


def page_fault(monitor: TrapAndEmulate, mmu: ShadowMmu) -> None:
    m = monitor.machine
    cr2 = m.uc.reg_read(UC_X86_REG_CR2)
    state = m.state()
    user = m.cpl == 3
    on_shadow = page_fault_code(m.linear_fixed(), state, m.cpl, cr2)
    access = Access(write=bool(on_shadow & PF_WRITE), user=user)
    guest = monitor.guest_paging()
    found = monitor.guest_memory.lookup(cr2)
    code = fault_code(found, access, guest) if found is not None else None
    eip = monitor.guest_eip_running()
    vm = monitor.vm
    if found is not None and code is None and cr2 >> 22 != WINDOW_PDE:
        frame = found.physical(cr2) & ~0xFFF
        if access.write and mmu.traces(frame):  # the guest changes its page tables
            mmu.page_table_written(m, frame)
            vm.stats.traps["ptemod"] += 1
            vm.emit(PageFaultHandled(vm.name, vm.step, eip, cr2, 0, "ptemod"))
        if not mmu.fill(m, guest, found, cr2, access):
            detail = f"page {cr2 & ~0xFFF:#010x} mapped to {frame:#010x}: open bus instead"
            monitor.isolation_event("monitor_mapping", frame, detail)
        vm.stats.traps["#PF hidden"] += 1
        vm.emit(PageFaultHandled(vm.name, vm.step, eip, cr2, 0, "hidden"))
        monitor.resume_faulted()
        return
    if code is None:  # the monitor's window: not the guest's to map for its user code
        code = (PF_WRITE if access.write else 0) | (PF_USER if user else 0)
    mmu.true_faults += 1
    vm.stats.traps["#PF true"] += 1
    vm.emit(PageFaultHandled(vm.name, vm.step, eip, cr2, code, "true"))
    monitor.vcpu.cr2 = cr2
    monitor.reflect_fault(VEC_PF, code)
