"""pv: paravirtualization, Xen's method — the guest kernel is ported to call the monitor.

The kernel runs directly at real CPL 1, as under trap-and-emulate, but a paravirtualized
kernel (its image carries vmlab.inc's -DPARAVIRT signature) does not execute the privileged
and sensitive instructions: it makes hypercalls (`int 0x82`, see hypercalls.py). Everything
else is trap-and-emulate, so an unmodified kernel under pv behaves exactly as under trap —
holes included, and its paging on shadow page tables: the port is what makes
paravirtualization correct. A ported kernel pages directly (directmmu.py): the CPU walks its
own page tables, which it changes only through hypercalls.
"""

from __future__ import annotations

from unicorn.x86_const import UC_X86_REG_CR2
from unicorn.x86_const import UC_X86_REG_EIP as _EIP

from hypervisor.events import Hypercall, PageFaultHandled
from hypervisor.isa import decode
from hypervisor.machine.cpu import CR0_PG, CR0_WP, CR4_PSE, CpuState
from hypervisor.machine.interrupts import VEC_GP, VEC_PF
from hypervisor.machine.machine import Exit, ExitKind
from hypervisor.machine.paging import PF_PRESENT, PF_WRITE, PagingRegisters
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.emulate import EMULATORS, GuestMmu
from hypervisor.vmm.mmu.introspect import PagingIntrospection
from hypervisor.vmm.pagefault import page_fault_code
from hypervisor.vmm.pv.directmmu import FRAME, DirectMmu
from hypervisor.vmm.pv.errors import E_INVAL, E_NOSYS, HypercallError
from hypervisor.vmm.pv.hypercalls import HYPERCALL_VECTOR, HYPERCALLS, Call
from hypervisor.vmm.trap import TrapAndEmulate, real_eflags

_INT_SIZE = 2  # cd 82


class Paravirtual(TrapAndEmulate):
    mode = Mode.PV
    CHECKPOINTED = ("direct",)
    NOT_CHECKPOINTED = ("paravirtual", "shadow_paging")
    runs_paravirtual = True

    def start(self, entry: CpuState) -> None:
        self.paravirtual = self.vm.image.paravirtual  # only a ported kernel gets hypercalls
        self.shadow_paging = not self.paravirtual  # unported = trap, shadow page tables too
        self.direct = DirectMmu(self.machine.ram_size) if self.paravirtual else None
        super().start(entry)

    # ------------------------------------------------------------------ direct paging
    def paging_mmu(self) -> GuestMmu | None:
        return self.direct if self.direct is not None else self.mmu

    def guest_paging(self) -> PagingRegisters:
        """Under direct paging the guest's tables are the CPU's, walked with WP and PSE on."""
        if self.direct is None or not self.direct.active:
            return super().guest_paging()
        vcpu = self.vcpu
        return PagingRegisters(vcpu.cr0 | CR0_WP, self.direct.directory, vcpu.cr4 | CR4_PSE)

    def paging(self) -> PagingIntrospection:
        """Under direct paging, the guest's tables are the ones the CPU walks (validated):
        no shadow beside them; the counts are the hypercalls that changed them."""
        direct = self.direct
        if direct is None or not direct.active:
            return super().paging()
        calls = self.vm.stats.hypercalls
        counts = (
            ("mmu_update entries", direct.updates),
            ("refused", direct.refused),
            ("new_baseptr", calls["new_baseptr"]),
            ("invlpg", calls["invlpg"]),
            ("writes to pinned tables", direct.pinned_writes),
        )
        return PagingIntrospection(
            self.machine, self.guest_paging(), direct=True, counts=counts, monitored=True
        )

    def enter(self, virtual: CpuState) -> None:
        super().enter(virtual)
        if self.direct is not None and self.direct.active:
            self.machine.load_paging(self.direct.real_registers(self.real_cr0()))

    def direct_mmu(self) -> DirectMmu:
        if self.direct is None:  # hypercalls are answered only for a ported kernel
            raise HypercallError(E_INVAL, "this kernel is not paravirtualized")
        return self.direct

    def load_directory(self, directory: int) -> None:
        """new_baseptr: pin and validate the directory, then the CPU pages with it."""
        self.direct_mmu().new_baseptr(self.machine, directory)
        self.vcpu.cr3 = directory
        self.vcpu.cr0 |= CR0_PG | CR0_WP
        self.flush_tlb()

    def flush_tlb(self) -> None:
        self.direct_mmu().flush_tlb(self.machine, self.real_cr0())

    def _direct_page_fault(self, mmu: DirectMmu) -> None:
        """Every page fault under direct paging is the guest's own (there is no shadow to
        fill): reflected with its CR2 and error code. A write that faulted on a pinned
        table is the guest bypassing mmu_update: counted and logged as such."""
        m = self.machine
        cr2 = m.uc.reg_read(UC_X86_REG_CR2)
        code = page_fault_code(m.linear_fixed(), m.state(), m.cpl, cr2)
        found = self.guest_memory.lookup(cr2)
        protected = code & (PF_PRESENT | PF_WRITE) == PF_PRESENT | PF_WRITE
        outcome = "true"
        if protected and found is not None and mmu.is_table(found.physical(cr2) & FRAME):
            mmu.pinned_writes += 1
            outcome = "pinned"
        vm = self.vm
        vm.stats.traps["#PF true" if outcome == "true" else "#PF pinned"] += 1
        vm.emit(PageFaultHandled(vm.name, vm.step, self.virtual_state().eip, cr2, code, outcome))
        self.vcpu.cr2 = cr2
        self.deliver(VEC_PF, "exception", code)

    # ------------------------------------------------------------------ exits
    def handle(self, exit_: Exit) -> None:
        exception = exit_.kind is ExitKind.EXCEPTION
        direct = self.direct if self.direct is not None and self.direct.active else None
        page_fault = direct is not None and exception and not exit_.is_trap
        page_fault = page_fault and exit_.vector == VEC_PF
        is_hypercall = self.paravirtual and exception and exit_.is_trap
        is_hypercall = is_hypercall and exit_.vector == HYPERCALL_VECTOR
        if not (page_fault or is_hypercall):
            super().handle(exit_)
            return
        if exit_.retired:
            self.vcpu.interrupt_shadow = False
        if direct is not None and page_fault:
            self._direct_page_fault(direct)
        elif self.vcpu.cpl == 0:
            self._hypercall()
        else:
            self._refuse_from_user()

    def _hypercall(self) -> None:
        state = self.virtual_state()
        number, args = state.eax, (state.ebx, state.ecx, state.edx)
        spec = HYPERCALLS.get(number)
        name = spec.name if spec else "unknown"
        self.note_hypercall(name)
        result: int | None
        error = ""
        try:
            if spec is None:
                raise HypercallError(E_NOSYS, f"no hypercall number {number:#x}")
            result = spec.handler(self, Call(state, args))
        except HypercallError as refused:
            result, error = refused.code, refused.why
        shown = args[: len(spec.args)] if spec else args
        self.vm.emit(
            Hypercall(
                self.vm.name,
                self.vm.step,
                state.eip - _INT_SIZE,
                number,
                name,
                shown,
                result,
                error,
            )
        )
        if result is not None:
            state.eax = result & 0xFFFFFFFF
            self._resume(state)

    def _resume(self, state: CpuState) -> None:
        """Back into the guest after a hypercall, without a full world switch: the guest stays
        in its ring with its segments, and INT n, unlike a fault, leaves no unacknowledged
        exception behind in unicorn (docs/unicorn-facts.md, fact 3 is about faults), so writing the
        registers the call changed is enough. The shadow GDT is synced as on every entry."""
        self._sync_shadow()
        self.machine.set_registers(eax=state.eax, eflags=real_eflags(state.eflags))

    def _refuse_from_user(self) -> None:
        """User code may not call the hypervisor: #GP, as the gate's DPL 0 would give."""
        eip = self.machine.uc.reg_read(_EIP) - _INT_SIZE
        self.machine.set_registers(eip=eip)
        self.note_trap("int")
        why = "a hypercall from user mode is refused (#GP)"
        self._trap_event(HYPERCALL_VECTOR, eip, "int 0x82", "reflected", why)
        self.deliver(VEC_GP, "exception", HYPERCALL_VECTOR * 8 + 2)

    # ------------------------------------------------------------------ used by hypercalls
    def return_from_interrupt(self, state: CpuState) -> None:
        """The iret hypercall: IRETD's work on the frame at `state.esp`, without the trap."""
        self.machine.set_registers(eax=state.eax, esp=state.esp)
        iretd = decode(b"\xcf", state.eip)
        assert iretd is not None
        emulation = self._run_emulator(iretd, EMULATORS["iretd"], HYPERCALL_VECTOR)
        if emulation is not None:
            self.enter(emulation.state)

    def halt(self) -> None:
        self._halt()
