"""pv: paravirtualization, Xen's method — the guest kernel is ported to call the monitor.

The kernel runs directly at real CPL 1, as under trap-and-emulate, but a paravirtualized
kernel (its image carries vmlab.inc's -DPARAVIRT signature) does not execute the privileged
and sensitive instructions: it makes hypercalls (`int 0x82`, see hypercalls.py). Everything
else is trap-and-emulate, so an unmodified kernel under pv behaves exactly as under trap —
holes included: the port is what makes paravirtualization correct.
"""

from __future__ import annotations

from unicorn.x86_const import UC_X86_REG_EIP as _EIP

from hypervisor.events import Hypercall
from hypervisor.isa import decode
from hypervisor.machine.cpu import CpuState
from hypervisor.machine.interrupts import VEC_GP
from hypervisor.machine.machine import Exit, ExitKind
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.emulate import EMULATORS
from hypervisor.vmm.pv.hypercalls import (
    E_NOSYS,
    HYPERCALL_VECTOR,
    HYPERCALLS,
    Call,
    HypercallError,
)
from hypervisor.vmm.trap import TrapAndEmulate, real_eflags

_INT_SIZE = 2  # cd 82


class Paravirtual(TrapAndEmulate):
    mode = Mode.PV
    shadow_paging = False  # direct paging is not there yet: paging stops unsupported
    CHECKPOINTED = ()
    NOT_CHECKPOINTED = ("paravirtual",)
    runs_paravirtual = True

    def start(self, entry: CpuState) -> None:
        self.paravirtual = self.vm.image.paravirtual  # only a ported kernel gets hypercalls
        super().start(entry)

    def handle(self, exit_: Exit) -> None:
        is_hypercall = (
            self.paravirtual
            and exit_.kind is ExitKind.EXCEPTION
            and exit_.is_trap
            and exit_.vector == HYPERCALL_VECTOR
        )
        if not is_hypercall:
            super().handle(exit_)
            return
        if exit_.retired:
            self.vcpu.interrupt_shadow = False
        if self.vcpu.cpl == 0:
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
