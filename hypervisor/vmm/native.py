"""Bare metal: the guest at real CPL 0 with no monitor — the reference for equivalence.

Nothing intercepts the guest here. The only Python on the path is what the physical machine
itself must do because unicorn leaves it out: deliver interrupts and exceptions through the
guest's own IDT (fact 2) and its page tables, give a page fault the error code unicorn does
not report, apply the IOPL rule to port I/O (fact 4), sleep on HLT, and answer RDMSR and
WRMSR from vmlab's MSR table, which unicorn cannot be made to consult (fact 16).
"""

from __future__ import annotations

from dataclasses import replace

from unicorn.x86_const import UC_X86_REG_CR2 as _CR2
from unicorn.x86_const import UC_X86_REG_EFLAGS as _EFLAGS

from hypervisor.events import InterruptDelivered
from hypervisor.isa import MAX_INSN_SIZE, decode
from hypervisor.machine.cpu import EFLAGS_IF, CpuState, SystemState
from hypervisor.machine.descriptors import DESCRIPTOR_SIZE, SegmentDescriptor
from hypervisor.machine.hostram import PAGE
from hypervisor.machine.interrupts import (
    VEC_GP,
    VEC_PF,
    VEC_UD,
    Source,
    Tables,
    TripleFault,
    deliver_escalating,
)
from hypervisor.machine.machine import EntryError, Exit, ExitKind
from hypervisor.machine.msr import Msr, MsrFault, execute
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
from hypervisor.vmm.guestcpu import DEBUG_REGS, FpuState, GuestCpu, ResumeRefused
from hypervisor.vmm.pagefault import page_fault_code


class BareMetal(Executor):
    mode = Mode.NATIVE
    CHECKPOINTED = ("_shadow_spent", "msr")
    NOT_CHECKPOINTED = ()
    monitored = False
    cpl_in_cs = True

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
        self._shadow_spent: int | None = None  # the step the presumed STI shadow ended
        self.msr: dict[int, int] = {}  # written MSRs (machine/msr.py), as a monitor's vCPU
        self.machine.stop_before(_MSR_INSTRUCTIONS)

    def model_specific_registers(self) -> dict[int, int]:
        return self.msr

    def guest_cpl(self) -> int:
        return self.machine.cpl

    # ------------------------------------------------------------------ guest-visible CPU
    def guest_cpu(self) -> GuestCpu:
        machine, uc = self.machine, self.machine.uc
        system = machine.system_state()
        tr = system.tr
        return GuestCpu(
            registers=GuestCpu.registers_of(machine.state()),
            cpl=machine.cpl,
            cr0=system.cr0,
            cr2=uc.reg_read(_CR2),
            cr3=system.cr3,
            cr4=system.cr4,
            gdtr=system.gdtr,
            idtr=system.idtr,
            ldtr=system.ldtr[0],
            tr=tr[0],
            tss=(tr[1], tr[2]) if tr[0] & ~3 else None,
            dr=tuple(uc.reg_read(reg) for reg in DEBUG_REGS),
            msr=tuple(sorted(self.msr.items())),
            interrupt_shadow=self.interrupt_shadow(),
            halted=self.waiting_for_interrupt,
            fpu=FpuState.read(uc),
        )

    def load_guest_cpu(self, cpu: GuestCpu) -> None:
        """The registers are the real ones here; an outer ring is entered by a real IRETD."""
        machine, uc = self.machine, self.machine.uc
        tss = cpu.tss or (0, 0)
        system = SystemState(
            cr0=cpu.cr0,
            cr3=cpu.cr3,
            cr4=cpu.cr4,
            gdtr=cpu.gdtr,
            idtr=cpu.idtr,
            ldtr=self._table_register(cpu.ldtr, cpu.gdtr, None),
            tr=self._table_register(cpu.tr, cpu.gdtr, tss),
        )
        try:
            if cpu.cpl == 0:
                machine.enter(cpu.state(), 0, system)
            else:
                machine.enter_outer(cpu.state(), cpu.cpl, system, _scratch_page(cpu.gdtr))
        except EntryError as err:
            raise ResumeRefused(f"the guest's CPU cannot be entered on bare metal: {err}") from err
        uc.reg_write(_CR2, cpu.cr2)
        for reg, value in zip(DEBUG_REGS, cpu.dr, strict=True):
            uc.reg_write(reg, value)
        self.msr = dict(cpu.msr)
        for index in _SYSENTER:
            uc.msr_write(index, self.msr.get(index, 0))  # type: ignore[attr-defined]
        cpu.fpu.write(uc)
        self.waiting_for_interrupt = cpu.halted

    def _table_register(
        self, selector: int, gdtr: tuple[int, int], known: tuple[int, int] | None
    ) -> tuple[int, int, int, int]:
        """LDTR or TR as unicorn holds it (selector, base, limit, access << 8), from the
        descriptor the selector names in the guest's GDT (base and limit as loaded, if known)."""
        if not selector & ~3:
            return (0, 0, 0, 0)
        raw = self.machine.read(gdtr[0] + (selector & ~7), DESCRIPTOR_SIZE)
        descriptor = SegmentDescriptor.unpack(raw)
        base, limit = known if known else (descriptor.base, descriptor.limit)
        return (selector, base, limit, descriptor.access << 8)

    def guest_interrupts_enabled(self) -> bool:
        return bool(self.machine.uc.reg_read(_EFLAGS) & EFLAGS_IF)

    def guest_iopl(self) -> int:
        return (self.machine.uc.reg_read(_EFLAGS) >> 12) & 3

    def interrupt_shadow(self) -> bool:
        """STI delays interrupts by one instruction (so STI; HLT cannot miss a wake-up).
        The CPU does not say what it ran last, so an STI byte just before EIP stands for it,
        until the one instruction after it has run: an idle loop `sti; jmp $` stays at that
        EIP for ever, and its interrupts must still come."""
        if self.vm.step == self._shadow_spent:
            return False
        eip = self.machine.read_eip()
        return self.machine.code(eip - 1, 1) == b"\xfb"

    def before_slice(self, count: int) -> int:
        if count == 1 and self.interrupt_shadow():
            self._shadow_spent = self.vm.step + 1
        blocked = self.vm.irqs.pending_vector() is not None and not self.guest_interrupts_enabled()
        self.machine.watch_interrupt_window(blocked)
        return count

    def handle(self, exit_: Exit) -> None:
        kind = exit_.kind
        if kind is ExitKind.EXCEPTION:
            vector = exit_.vector or 0
            code = 0
            if vector == VEC_PF and not exit_.is_trap:
                m = self.machine
                code = page_fault_code(m.linear_fixed(), m.state(), m.cpl, m.system_state().cr2)
            self.deliver(vector, "software" if exit_.is_trap else "exception", code)
        elif kind is ExitKind.DOOR:
            self._model_specific_register()
        elif kind is ExitKind.HALT:
            if self.guest_interrupts_enabled():
                self.wait_for_interrupt()
            else:
                self.vm.finish(ExitInfo(ExitReason.HALTED, detail="HLT with interrupts off"))
        else:
            self.machine_failure(exit_)

    def _model_specific_register(self) -> None:
        """RDMSR or WRMSR, stopped before (Machine.stop_before): the MSR table's answer, or
        the #GP the CPU gives outside ring 0 or for an MSR it lacks. SYSENTER's MSRs are
        copied into unicorn too, whose SYSENTER reads them there."""
        machine = self.machine
        state = machine.state()
        insn = decode(machine.code(state.eip, MAX_INSN_SIZE), state.eip)
        assert insn is not None, "the machine stops only before a decoded RDMSR/WRMSR"
        if insn.mnemonic == "rdtscp":
            self.deliver(VEC_UD, "exception", 0)  # the model has no RDTSCP (cpumodel.py)
            return
        write = insn.mnemonic == "wrmsr"
        try:
            if machine.cpl:
                raise MsrFault("RDMSR/WRMSR outside ring 0")
            execute(state, write, self.msr, self.instruction_clock(), self.local_apic())
        except MsrFault:
            self.deliver(VEC_GP, "exception", 0)
            return
        if write and state.ecx in _SYSENTER:
            machine.uc.msr_write(state.ecx, self.msr[state.ecx])  # type: ignore[attr-defined]
        machine.set_registers(eax=state.eax, edx=state.edx, eip=insn.next_address)
        self.vm.retire_emulated()

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
                machine.linear_fixed(), state, machine.cpl, tables, vector, source, error_code
            )
            if done.cr2 is not None:
                system = replace(system, cr2=done.cr2)
            machine.enter(done.state, done.cpl, system)
        except (TripleFault, EntryError) as err:
            self.vm.finish(ExitInfo(ExitReason.CRASHED, detail=str(err)))
            return
        self.vm.emit(
            InterruptDelivered(
                self.vm.name, self.vm.step, vector, source, state.eip, done.state.eip, irq
            )
        )


_MSR_INSTRUCTIONS = frozenset(("rdmsr", "wrmsr", "rdtscp"))  # and one unicorn always runs
_SYSENTER = (Msr.SYSENTER_CS, Msr.SYSENTER_ESP, Msr.SYSENTER_EIP)


def _scratch_page(gdtr: tuple[int, int]) -> int:
    """A RAM page clear of the GDT, which the IRETD that enters an outer ring reads."""
    return 0 if gdtr[0] >= PAGE else ((gdtr[0] + gdtr[1]) | (PAGE - 1)) + 1
