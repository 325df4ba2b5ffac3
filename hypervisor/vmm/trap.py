"""Trap-and-emulate: the guest runs directly, deprivileged, and the monitor emulates what faults.

The guest kernel runs at real CPL 1 on shadow descriptor tables (ring compression), its user
code at real CPL 3. Privileged instructions fault (#GP) and are emulated on the virtual CPU;
port I/O is intercepted; interrupts and exceptions are delivered through the guest's
*virtual* IDT. Sensitive-but-unprivileged instructions (POPF, PUSHF, SGDT, MOV from CS, …)
run directly and behave as the deprivileged CPU makes them — the holes of x86 that Popek and
Goldberg's theorem predicts and Robin and Irvine listed. This mode does not hide them: that
is the lesson.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import ClassVar

from unicorn.x86_const import UC_X86_REG_CR4 as _CR4
from unicorn.x86_const import UC_X86_REG_IDTR as _IDTR
from unicorn.x86_const import UC_X86_REG_TR as _TR

from hypervisor.events import InterruptDelivered, Trap
from hypervisor.isa import Category, Instruction, decode
from hypervisor.machine.cpu import (
    CR0_EM,
    CR0_ET,
    CR0_MP,
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR4_MIRRORED,
    EFLAGS_IF,
    EFLAGS_IOPL,
    CpuState,
)
from hypervisor.machine.hostram import PAGE
from hypervisor.machine.interrupts import (
    VEC_GP,
    VEC_NP,
    VEC_PF,
    VEC_UD,
    Source,
    Tables,
    TripleFault,
    deliver_escalating,
)
from hypervisor.machine.machine import EntryError, Exit, ExitKind
from hypervisor.machine.paging import LinearMemory, PageFault, PagingRegisters
from hypervisor.vmm import holes
from hypervisor.vmm.contract import LOADER_GDT, LOADER_GDT_LIMIT, ExitInfo, ExitReason, Mode
from hypervisor.vmm.emulate import (
    Emulation,
    Emulator,
    GuestMmu,
    Reflect,
    Unsupported,
    trapped_emulator,
)
from hypervisor.vmm.executors import Executor, trap_name
from hypervisor.vmm.guestcpu import FpuState, GuestCpu, ResumeRefused
from hypervisor.vmm.isolation import descriptors_outside_ram
from hypervisor.vmm.mmu.faults import page_fault
from hypervisor.vmm.mmu.introspect import PagingIntrospection
from hypervisor.vmm.mmu.shadow import POOL_PAGES, ShadowMmu
from hypervisor.vmm.shadow import (
    MONITOR_CODE0,
    MONITOR_CODE1,
    MONITOR_CODE3,
    MONITOR_DATA0,
    MONITOR_DATA1,
    MONITOR_DATA3,
    MONITOR_TSS,
    SHADOW_GDT_SIZE,
    ShadowGdt,
    monitor_entries,
)
from hypervisor.vmm.vcpu import VirtualCpu

# The monitor's own memory, mapped in the guest's address space at MONITOR_BASE (+ offset).
SHADOW_GDT_OFFSET = 0x0
MONITOR_IDT_OFFSET = SHADOW_GDT_SIZE  # the real IDT: SIDT in the guest shows its address
MONITOR_TSS_OFFSET = MONITOR_IDT_OFFSET + 0x800
SCRATCH_OFFSET = MONITOR_IDT_OFFSET + PAGE  # executable: IRETD used to build CPL templates
SHADOW_POOL_OFFSET = 0x20000  # shadow page tables (after bt's vCPU area and door)
MONITOR_CR0 = CR0_PE | CR0_ET | (1 << 5) | (1 << 16)  # + NE, WP: visible through SMSW
# The guest's own FPU bits are the real CPU's too: with TS (or EM) set the CPU itself raises
# the #NM a lazy-FPU kernel waits for at its next FPU instruction, reflected to vector 7.
GUEST_FPU_CR0 = CR0_MP | CR0_EM | CR0_TS
REAL_CPL = {0: 1, 3: 3}  # ring compression: guest ring -> real ring

_FAULTS_TO_EMULATE = (VEC_GP, VEC_NP)


def real_eflags(virtual: int) -> int:
    """The flags the CPU runs a deprivileged guest with: the host keeps IF on and IOPL 0."""
    return (virtual & ~EFLAGS_IOPL) | EFLAGS_IF


class TrapAndEmulate(Executor):
    mode = Mode.TRAP
    shadow_paging = True  # the guest may turn paging on (shadow page tables)
    CHECKPOINTED: ClassVar[tuple[str, ...]] = (
        "vcpu",
        "mmu",
        "shadow",
        "_user_view",
        "_tables_checked",
        "_descriptor_tricks",
    )
    NOT_CHECKPOINTED: ClassVar[tuple[str, ...]] = (
        *("shadow_gdt", "_tsd_mirrored"),
        *("_paging", "_memory", "_tables"),  # made again from the vCPU's when they change
    )

    def start(self, entry: CpuState) -> None:
        m = self.machine
        self.vcpu = VirtualCpu(gdtr=(LOADER_GDT, LOADER_GDT_LIMIT))
        self._tsd_mirrored = False  # the real CR4 holds guest bits (CR4_MIRRORED, _mirror_tsd)
        self._paging: PagingRegisters | None = None  # guest_paging's, while they hold
        self._memory: tuple[PagingRegisters, LinearMemory] | None = None  # guest_memory's
        self._tables: Tables | None = None  # the vCPU's, as deliveries last used them
        # unicorn runs RDTSCP whatever the CPU model: stop before it (a DOOR exit) for #UD
        m.stop_before(frozenset(("rdtscp",)))
        self.mmu: ShadowMmu | None = None
        if self.shadow_paging:
            pool = m.map_monitor(SHADOW_POOL_OFFSET, POOL_PAGES * PAGE)
            self.mmu = ShadowMmu(pool, m.ram_size)
        self.shadow = ShadowGdt()
        self._user_view: bool | None = None
        self._tables_checked: tuple[tuple[int, int], tuple[int, int]] | None = None
        self._descriptor_tricks: set[tuple[int, str]] = set()
        self.shadow_gdt = m.map_monitor(SHADOW_GDT_OFFSET, SHADOW_GDT_SIZE)
        monitor_page = m.map_monitor(MONITOR_IDT_OFFSET, PAGE)
        scratch = m.map_monitor(SCRATCH_OFFSET, PAGE, executable=True)
        tss = monitor_page + (MONITOR_TSS_OFFSET - MONITOR_IDT_OFFSET)
        for selector, descriptor in monitor_entries(tss).items():
            m.write_monitor(self.shadow_gdt + selector, descriptor.pack())
        # A real IDT of the monitor's own (never consulted by unicorn, but SIDT shows it).
        gate = struct.pack("<HHBBH", 0, MONITOR_CODE0, 0, 0x8E, scratch >> 16)
        m.write_monitor(monitor_page, gate * 256)
        self._sync_shadow(force=True)
        m.uc.reg_write(_IDTR, (0, monitor_page, 256 * 8 - 1, 0))
        m.uc.reg_write(_TR, (MONITOR_TSS, tss, 0x67, 0x8B00))
        m.build_templates(
            (self.shadow_gdt, SHADOW_GDT_SIZE - 1),
            MONITOR_CODE0,
            MONITOR_DATA0,
            outer={
                1: (MONITOR_CODE1 | 1, MONITOR_DATA1 | 1),
                3: (MONITOR_CODE3 | 3, MONITOR_DATA3 | 3),
            },
            scratch=scratch,
            cr0=MONITOR_CR0,
        )
        self.enter(entry)

    # ------------------------------------------------------------------ virtual <-> real
    def guest_cpl(self) -> int:
        return self.vcpu.cpl

    def guest_tables(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return self.vcpu.gdtr, self.vcpu.idtr

    def guest_interrupts_enabled(self) -> bool:
        return self.vcpu.interrupts_enabled

    def guest_iopl(self) -> int:
        return self.vcpu.iopl

    def interrupt_shadow(self) -> bool:
        return self.vcpu.interrupt_shadow

    def hole_probe(self, insn: Instruction) -> Callable[[], bool] | None:
        return holes.probe(self, insn)

    def shadow_differs(self, selector: int) -> bool:
        """Does the CPU see another descriptor for `selector` than the guest wrote?"""
        index = selector & ~7
        guest = self.shadow.guest_bytes[index : index + 8]
        real = self.shadow.image(self._user_view or False)[index : index + 8]
        ignore_accessed = bytes([0, 0, 0, 0, 0, 0x01, 0, 0])
        return bytes(a | m for a, m in zip(guest, ignore_accessed, strict=False)) != bytes(
            a | m for a, m in zip(real, ignore_accessed, strict=False)
        )

    def virtual_state(self) -> CpuState:
        """The guest's view of its registers (what it would see on bare metal)."""
        state = self.machine.state()
        if self.vcpu.cpl == 0:
            state.cs &= ~3
            state.ss &= ~3
        state.eflags = self.vcpu.virtual_eflags(state.eflags)
        return state

    # ------------------------------------------------------------------ guest-visible CPU
    def guest_cpu(self) -> GuestCpu:
        v = self.vcpu
        return GuestCpu(
            registers=GuestCpu.registers_of(self.virtual_state()),
            cpl=v.cpl,
            cr0=v.cr0,
            cr2=v.cr2,
            cr3=v.cr3,
            cr4=v.cr4,
            gdtr=v.gdtr,
            idtr=v.idtr,
            ldtr=v.ldtr,
            tr=v.tr,
            tss=v.tss,
            dr=tuple(v.dr),
            msr=tuple(sorted(v.msr.items())),
            interrupt_shadow=v.interrupt_shadow,
            halted=self.waiting_for_interrupt,
            fpu=FpuState.read(self.machine.uc),
        )

    def load_guest_cpu(self, cpu: GuestCpu) -> None:
        """The virtual CPU takes what the real one cannot hold; the rest is entered, ring
        compressed. The shadow GDT is rebuilt from the guest's GDT on that entry."""
        if cpu.cpl not in REAL_CPL:
            raise ResumeRefused(
                f"the guest runs in ring {cpu.cpl}: {self.mode} runs guest rings 0 and 3 only "
                "(ring compression puts the kernel in ring 1)"
            )
        state = cpu.state()
        self.vcpu = VirtualCpu(
            cpl=cpu.cpl,
            cr0=cpu.cr0,
            cr2=cpu.cr2,
            cr3=cpu.cr3,
            cr4=cpu.cr4,
            gdtr=cpu.gdtr,
            idtr=cpu.idtr,
            ldtr=cpu.ldtr,
            tr=cpu.tr,
            tss=cpu.tss,
            dr=list(cpu.dr),
            msr=dict(cpu.msr),
            interrupt_shadow=cpu.interrupt_shadow,
        )
        self.vcpu.load_eflags(state.eflags)
        self.waiting_for_interrupt = cpu.halted
        mmu = self.paging_mmu()
        try:
            if mmu is not None:  # the guest's tables are in RAM already: paging as it was
                mmu.flush(self.machine, bool(cpu.cr0 & CR0_PG), cpu.cr3)
        except Unsupported as refused:
            raise ResumeRefused(f"the guest's paging cannot be resumed: {refused}") from None
        try:
            self.enter(state)
        except EntryError as err:
            why = f"the guest's CPU cannot be entered under {self.mode}: {err}"
            raise ResumeRefused(why) from err
        cpu.fpu.write(self.machine.uc)

    def enter(self, virtual: CpuState) -> None:
        """World switch into the guest: its virtual state, compressed onto the real rings."""
        real = virtual.copy()
        if self.vcpu.cpl == 0:
            real.cs |= 1
            real.ss = (real.ss & ~3) | 1
        real.eflags = real_eflags(virtual.eflags)
        self._sync_shadow()
        self.machine.enter(real, REAL_CPL[self.vcpu.cpl])  # (the template's CR0: MONITOR_CR0)
        if self.mmu is not None and self.mmu.active:
            self.machine.load_paging(self.mmu.real_registers(self.real_cr0()))
        elif self.vcpu.cr0 & GUEST_FPU_CR0:
            self.machine.load_cr0(self.real_cr0())
        if self.vcpu.cr4 & CR4_MIRRORED or self._tsd_mirrored:
            self._mirror_tsd()

    def real_cr0(self) -> int:
        """CR0 as the real CPU runs the guest: the monitor's, with the guest's FPU bits."""
        return MONITOR_CR0 | self.vcpu.cr0 & GUEST_FPU_CR0

    def _mirror_tsd(self) -> None:
        """The guest's CR4.TSD on the real CPU too, so that RDTSC outside the guest's ring 0
        faults (unicorn raises it, cpumodel.py); the kernel's own, at ring 1, is emulated.
        And its OSFXSR and OSXMMEXCPT, which decide whether SSE runs or raises #UD."""
        uc = self.machine.uc
        real = uc.reg_read(_CR4)
        wanted = real & ~CR4_MIRRORED | self.vcpu.cr4 & CR4_MIRRORED
        if wanted != real:
            uc.reg_write(_CR4, wanted)
        self._tsd_mirrored = bool(wanted & CR4_MIRRORED)

    @property
    def guest_memory(self) -> LinearMemory:
        """Guest memory at linear addresses through the guest's own (virtual) paging (its
        registers as they are now: the monitor asks again after a MOV CR)."""
        registers = self.guest_paging()
        known = self._memory
        if known is None or (known[0] is not registers and known[0] != registers):
            memory = LinearMemory(self.machine.read, self.machine.write, lambda: registers)
            self._memory = known = (registers, memory)
        return known[1]

    def paging(self) -> PagingIntrospection:
        """The guest's tables beside the shadow the CPU runs on."""
        stats = self.vm.stats  # MOV CR3: a trap, or under bt a callout from translated code
        loads = (("MOV CR3", stats.traps["mov cr3"] + stats.callouts["mov cr3"]),)
        registers = self.guest_paging()
        return PagingIntrospection(self.machine, registers, self.mmu, counts=loads, monitored=True)

    def guest_paging(self) -> PagingRegisters:
        vcpu = self.vcpu
        cr0 = vcpu.cr0 if self.mmu is not None else vcpu.cr0 & ~CR0_PG
        known = self._paging
        if known is None or (known.cr0, known.cr3, known.cr4) != (cr0, vcpu.cr3, vcpu.cr4):
            self._paging = known = PagingRegisters(cr0, vcpu.cr3, vcpu.cr4)  # (a trap asks)
        return known

    def paging_mmu(self) -> GuestMmu | None:
        """What virtualizes the guest's paging (None: turning it on is unsupported)."""
        return self.mmu

    def _sync_shadow(self, force: bool = False) -> None:
        base, limit = self.vcpu.gdtr
        changed = self.shadow.update(self.guest_memory.peek(base, min(limit + 1, 0x10000)))
        user_view = self.vcpu.cpl == 3
        if changed or force or user_view != self._user_view:
            # a table, not code (the guest cannot fetch from it): no compiled block to drop
            self.machine.write_monitor(self.shadow_gdt, self.shadow.image(user_view), code=False)
            self._user_view = user_view
        if changed or (self.vcpu.gdtr, self.vcpu.idtr) != self._tables_checked:
            self._report_descriptor_tricks()

    def _report_descriptor_tricks(self) -> None:
        """Each table or segment the guest newly points outside its RAM, once."""
        self._tables_checked = (self.vcpu.gdtr, self.vcpu.idtr)
        mmu = self.paging_mmu()
        paging = mmu is not None and mmu.active
        found = descriptors_outside_ram(
            self.shadow.guest_bytes, self.vcpu, self.machine.ram_size, paging
        )
        for address, detail in found:
            if (address, detail) not in self._descriptor_tricks:
                self._descriptor_tricks.add((address, detail))
                self.isolation_event("descriptor", address, detail)

    def model_specific_registers(self) -> dict[int, int]:
        return self.vcpu.msr

    # ------------------------------------------------------------------ exits
    def handle(self, exit_: Exit) -> None:
        if exit_.retired:
            self.vcpu.interrupt_shadow = False
        kind = exit_.kind
        if kind is ExitKind.EXCEPTION:
            vector = exit_.vector or 0
            if exit_.is_trap:
                self._reflect_software(vector)
            elif vector in _FAULTS_TO_EMULATE and self.vcpu.cpl == 0:
                self._emulate(vector)
            elif vector == VEC_PF and self.mmu is not None and self.mmu.active:
                page_fault(self, self.mmu)
            else:
                self.deliver(vector, "exception", 0)
        elif kind is ExitKind.DOOR:  # before an RDTSCP (start): the model has none
            self.deliver(VEC_UD, "exception", 0)
        elif kind is ExitKind.HALT:  # HLT cannot complete at CPL 1/3: a unicorn surprise
            self.vm.finish(ExitInfo(ExitReason.CRASHED, detail="HLT completed outside ring 0"))
        else:
            self.machine_failure(exit_)

    def resume_faulted(self) -> None:
        """After a fault the monitor handled for the guest (a hidden #PF): run the faulting
        instruction again."""
        self.enter(self.virtual_state())

    def reflect_fault(self, vector: int, error_code: int) -> None:
        """A fault the guest's own CPU would raise: through its virtual IDT."""
        self.deliver(vector, "exception", error_code)

    def _reflect_software(self, vector: int) -> None:
        state = self.virtual_state()  # read once: its EIP is past the INT (fact 2)
        eip = state.eip
        code = self.guest_memory.peek
        size = 1 if vector in (3, 4) and code(eip - 1, 1) != b"\xcd" else 2
        insn = decode(code(eip - size, size), eip - size)
        text = insn.text if insn else f"int {vector:#x}"
        self.note_trap(trap_name(insn) if insn else "int")
        self.vm.emit(
            Trap(
                self.vm.name,
                self.vm.step,
                vector,
                eip - size,
                text,
                "reflected",
                "software interrupt through the virtual IDT",
            )
        )
        self._deliver_from(state, vector, "software")

    def _emulate(self, vector: int) -> None:
        virtual = self.virtual_state()
        eip = virtual.eip
        memory = self.guest_memory
        insn = decode(memory.peek(eip, 15), eip)
        text = insn.text if insn else "(undecodable)"
        handler = trapped_emulator(insn.mnemonic) if insn else None
        privileged = insn is not None and insn.category in (Category.PRIVILEGED, Category.IOPL)
        np_only = ("iretd", "retf")  # #NP is emulated only where a far return met it
        if insn is None or handler is None or (vector == VEC_NP and insn.mnemonic not in np_only):
            if privileged:
                self._unsupported(vector, eip, text, "no emulation for this instruction")
            else:  # a genuine fault: bare metal would fault here too
                self.deliver(vector, "exception", 0)
            return
        emulation = self._run_emulator(insn, handler, vector, virtual, memory)
        if emulation is None:
            return
        self.note_trap(trap_name(insn))
        self.vm.retire_emulated()
        self._trap_event(vector, eip, text, "emulated")
        self.enter(emulation.state)
        if emulation.halt:
            self._halt()

    def _run_emulator(
        self,
        insn: Instruction,
        handler: Emulator,
        vector: int,
        virtual: CpuState | None = None,
        memory: LinearMemory | None = None,
    ) -> Emulation | None:
        """Emulate `insn` on the guest's virtual registers (`virtual` if the caller has
        just read them: changed in place). None when it did not complete: the guest got the
        fault bare metal would raise, or the VM stopped (unsupported)."""
        state = self.virtual_state() if virtual is None else virtual
        state.eip = insn.next_address
        mmu = self.paging_mmu()
        guest = None if mmu is None else self.guest_memory if memory is None else memory
        emulation = Emulation(insn, state, self.vcpu, self.machine, mmu=mmu, guest=guest)
        try:
            handler(emulation)
        except PageFault as fault:  # the guest's tables refused an access of the emulation
            self._trap_event(vector, insn.address, insn.text, "reflected", str(fault))
            self.vcpu.cr2 = fault.linear
            self.deliver(VEC_PF, "exception", fault.error_code)
            return None
        except Reflect as reflect:
            self._trap_event(vector, insn.address, insn.text, "reflected", reflect.why)
            self.deliver(reflect.vector, "exception", reflect.error_code)
            return None
        except Unsupported as why:
            self._unsupported(vector, insn.address, insn.text, str(why))
            return None
        return emulation

    def _halt(self) -> None:
        """HLT: sleep until an interrupt — or forever, with interrupts off."""
        if self.vcpu.interrupts_enabled:
            self.wait_for_interrupt()
        else:
            self.vm.finish(ExitInfo(ExitReason.HALTED, detail="HLT with interrupts off"))

    def _trap_event(self, vector: int, eip: int, text: str, outcome: str, detail: str = "") -> None:
        self.vm.emit(Trap(self.vm.name, self.vm.step, vector, eip, text, outcome, detail))

    def _unsupported(self, vector: int, eip: int, text: str, why: str) -> None:
        self._trap_event(vector, eip, text, "unsupported", why)
        self.vm.finish(ExitInfo(ExitReason.UNSUPPORTED, detail=f"{text} at {eip:#010x}: {why}"))

    # ------------------------------------------------------------------ delivery
    def deliver(
        self, vector: int, source: Source, error_code: int = 0, irq: int | None = None
    ) -> None:
        """Through the guest's virtual IDT, as its CPU would, then enter the handler."""
        self._deliver_from(self.virtual_state(), vector, source, error_code, irq)

    def _deliver_from(
        self,
        state: CpuState,
        vector: int,
        source: Source,
        error_code: int = 0,
        irq: int | None = None,
    ) -> None:
        """`deliver`, from the virtual state the caller has just read."""
        vcpu = self.vcpu
        tables = self._tables
        if tables is None or (tables.idt, tables.gdt, tables.tss) != (
            vcpu.idtr,
            vcpu.gdtr,
            vcpu.tss,
        ):
            self._tables = tables = Tables(idt=vcpu.idtr, gdt=vcpu.gdtr, tss=vcpu.tss)
        try:
            done, vector = deliver_escalating(
                self.guest_memory, state, vcpu.cpl, tables, vector, source, error_code
            )
            if done.cr2 is not None:
                vcpu.cr2 = done.cr2
        except TripleFault as fault:
            self.vm.finish(ExitInfo(ExitReason.CRASHED, detail=str(fault)))
            return
        if done.cpl not in REAL_CPL:
            self.vm.finish(
                ExitInfo(
                    ExitReason.UNSUPPORTED,
                    None,
                    f"handler for {vector:#x} runs in guest ring {done.cpl}",
                )
            )
            return
        vcpu.cpl = done.cpl
        vcpu.interrupts_enabled = bool(done.state.eflags & EFLAGS_IF)
        try:
            self.enter(done.state)
        except EntryError as err:
            self.vm.finish(ExitInfo(ExitReason.CRASHED, detail=f"cannot enter handler: {err}"))
            return
        self.vm.emit(
            InterruptDelivered(
                self.vm.name, self.vm.step, vector, source, state.eip, done.state.eip, irq
            )
        )
