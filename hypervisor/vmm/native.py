"""Bare metal: the guest at real CPL 0 with no monitor — the reference for equivalence.

Nothing intercepts the guest here. The only Python on the path is what the physical machine
itself must do because unicorn leaves it out: deliver interrupts and exceptions through the
guest's own IDT (fact 2), apply the IOPL rule to port I/O (fact 4), and sleep on HLT.
"""

from __future__ import annotations

from unicorn.x86_const import UC_X86_REG_EFLAGS as _EFLAGS
from unicorn.x86_const import UC_X86_REG_EIP as _EIP

from hypervisor.events import InterruptDelivered
from hypervisor.machine.cpu import EFLAGS_IF, CpuState, SystemState
from hypervisor.machine.interrupts import Source, Tables, TripleFault, deliver_escalating
from hypervisor.machine.machine import EntryError, Exit, ExitKind
from hypervisor.vmm.contract import (
    KERNEL_CS,
    KERNEL_DS,
    LOADER_GDT,
    LOADER_GDT_LIMIT,
    ExitInfo,
    ExitReason,
    Mode,
)
from hypervisor.vmm.executors import Executor


class BareMetal(Executor):
    mode = Mode.NATIVE
    CHECKPOINTED = ("_sti_eip",)
    NOT_CHECKPOINTED = ()
    monitored = False

    def start(self, entry: CpuState) -> None:
        self.machine.build_templates((LOADER_GDT, LOADER_GDT_LIMIT), KERNEL_CS, KERNEL_DS)
        system = SystemState(
            cr0=0x11,
            cr3=0,
            cr4=0,
            gdtr=(LOADER_GDT, LOADER_GDT_LIMIT),
            idtr=(0, 0),
            ldtr=(0, 0, 0, 0),
            tr=(0, 0, 0, 0),
        )
        self.machine.enter(entry, 0, system)
        self._sti_eip: int | None = None

    def guest_cpl(self) -> int:
        return self.machine.cpl

    def guest_interrupts_enabled(self) -> bool:
        return bool(self.machine.uc.reg_read(_EFLAGS) & EFLAGS_IF)

    def guest_iopl(self) -> int:
        return (self.machine.uc.reg_read(_EFLAGS) >> 12) & 3

    def interrupt_shadow(self) -> bool:
        # STI delays interrupts by one instruction (so STI; HLT cannot miss a wake-up).
        eip = self.machine.uc.reg_read(_EIP)
        return self.machine.read(eip - 1, 1) == b"\xfb"

    def before_slice(self, count: int) -> int:
        blocked = self.vm.pic.pending_vector() is not None and not self.guest_interrupts_enabled()
        self.machine.watch_interrupt_window(blocked)
        return count

    def handle(self, exit_: Exit) -> None:
        kind = exit_.kind
        if kind is ExitKind.EXCEPTION:
            self.deliver(exit_.vector or 0, "software" if exit_.is_trap else "exception")
        elif kind is ExitKind.HALT:
            if self.guest_interrupts_enabled():
                self.wait_for_interrupt()
            else:
                self.vm.finish(ExitInfo(ExitReason.HALTED, detail="HLT with interrupts off"))
        else:
            self.machine_failure(exit_)

    def deliver(
        self, vector: int, source: Source, error_code: int = 0, irq: int | None = None
    ) -> None:
        """Through the guest's real IDT, escalating to #DF and triple fault like the CPU."""
        machine = self.machine
        state, system = machine.state(), machine.system_state()
        tables = Tables(
            idt=system.idtr,
            gdt=system.gdtr,
            tss=(system.tr[1], system.tr[2]) if system.tr[0] & ~3 else None,
        )
        try:
            done, vector = deliver_escalating(
                machine.read, machine.write, state, machine.cpl, tables, vector, source, error_code
            )
            machine.enter(done.state, done.cpl, system)
        except (TripleFault, EntryError) as err:
            self.vm.finish(ExitInfo(ExitReason.CRASHED, detail=str(err)))
            return
        self.vm.emit(
            InterruptDelivered(
                self.vm.name, self.vm.step, vector, source, state.eip, done.state.eip, irq
            )
        )
