"""What every execution mode shares: the slice, port I/O with the IOPL rule, interrupt
acceptance, tracing.

A mode (bare metal, trap-and-emulate, binary translation, paravirtualization) is an
`Executor`: it owns the machine while its VM runs and decides what each exit means
(`modes.py` says which executor runs which mode).
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from unicorn.x86_const import UC_X86_REG_EAX as _EAX

from hypervisor.events import (
    InsnClass,
    InstructionExecuted,
    IsolationViolation,
    PortAccess,
)
from hypervisor.isa import MAX_INSN_SIZE, SEGMENT_REGISTERS, Instruction, decode
from hypervisor.machine import msr
from hypervisor.machine.blockclock import BlockClock
from hypervisor.machine.cpu import STATE_FIELDS, CpuState
from hypervisor.machine.interrupts import Source
from hypervisor.machine.machine import Exit, ExitKind
from hypervisor.vmm.contract import ExitInfo, ExitReason, Mode
from hypervisor.vmm.guestcpu import GuestCpu
from hypervisor.vmm.mmu.introspect import PagingIntrospection

if TYPE_CHECKING:
    from hypervisor.vmm.bt.introspect import CacheIntrospection
    from hypervisor.vmm.vm import Vm

# Ports whose writes can change when the next interrupt is due: stop the slice after them.
_TIMING_PORTS = frozenset({0x20, 0x21, 0xA0, 0xA1, 0x40, 0x41, 0x42, 0x43})
_PIT_PORTS = frozenset({0x40, 0x41, 0x42, 0x43, 0x61, 0x71})  # reads that see the clock
_JUMPS_TO_SELF = (b"\xeb\xfe", b"\xe9\xfb\xff\xff\xff")  # jmp short $, jmp near $


class Traced(NamedTuple):
    """The traced instruction now running: classified and emitted when the next one starts
    (or forgotten, when it faults without retiring). A named tuple, not a frozen dataclass:
    one is made per traced instruction, and a frozen dataclass costs three times as much."""

    step: int
    eip: int
    insn: Instruction | None
    cpl: int  # the guest's own privilege level
    probe: Callable[[], bool] | None = None  # a sensitive one's divergence test (holes)
    subkind: str = ""  # translated code: ident / rewritten / callout


_TRAPPED = InsnClass.TRAPPED.value  # (an enum member's value is a descriptor: each trap asks)

# A Traced made from a tuple at C speed (a named tuple's own __new__ is a Python function).
_traced = partial(tuple.__new__, Traced)


class Executor(ABC):
    mode: Mode
    # What a checkpoint captures, and what stays the receiving VM's own (its parts, its
    # configuration, caches): each class names its own attributes, every one is in either.
    CHECKPOINTED: ClassVar[tuple[str, ...]] = (
        "waiting_for_interrupt",
        "tracing",
        "_io_fault",
        "_pending",
        "_pending_trapped",
        "_pending_hypercall",
    )
    NOT_CHECKPOINTED: ClassVar[tuple[str, ...]] = (
        *("vm", "machine", "_memory_operands", "_texts"),
        "_device_store",  # only ever set inside one slice
    )
    monitored = True  # False on bare metal: nothing intercepts the guest
    cpl_in_cs = False  # True on bare metal: the guest's privilege level is the real CS's RPL
    runs_paravirtual = False  # answers a paravirtualized kernel's hypercalls (pv only)

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self.machine = vm.machine
        self.machine.owner = self
        self.waiting_for_interrupt = False
        self.tracing = False
        self._io_fault: tuple[int, int] | None = None  # (eip, eax) of an I/O that must fault
        self._pending: Traced | None = None  # the traced instruction now running
        self._pending_trapped = False
        self._memory_operands: dict[tuple[int, bytes], bool] = {}
        self._texts: dict[tuple[int, bytes], str] = {}  # (EIP, bytes) -> instruction text
        self._pending_hypercall = False
        self._device_store: tuple[Callable[[], None], int] | None = None  # (write, next EIP)

    def watch_code(self, addresses: frozenset[int], hit: Callable[[int], None]) -> None:
        """Guest code the CPU runs somewhere else than at its own address (translated
        code) calls `hit` with the step each time an instruction at one of `addresses` is
        about to run there, until `unwatch_code`. Elsewhere a code hook at the guest
        address sees it (the recorder's breakpoints): nothing to do."""
        return None

    def unwatch_code(self) -> None:
        """Stop what `watch_code` started."""
        return None

    # ------------------------------------------------------------------ mode hooks
    @abstractmethod
    def start(self, entry: CpuState) -> None:
        """Put the CPU at the guest's entry state."""

    @abstractmethod
    def handle(self, exit_: Exit) -> None:
        """Act on why the CPU stopped."""

    @abstractmethod
    def guest_cpl(self) -> int:
        """The privilege level the guest believes it runs at."""

    counts_each_instruction = True  # the CPU runs with a count: it stops at any step

    def guest_tables(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(GDTR, IDTR) as (base, limit), as the guest believes them: on bare metal, the
        real ones."""
        system = self.machine.system_state()
        return system.gdtr, system.idtr

    def virtual_state(self) -> CpuState:
        """The guest's view of its registers (what it would see on bare metal): on bare
        metal, the real ones."""
        return self.machine.state()

    @abstractmethod
    def guest_cpu(self) -> GuestCpu:
        """The guest-visible CPU between two runs, the same value in every mode."""

    @abstractmethod
    def load_guest_cpu(self, cpu: GuestCpu) -> None:
        """Continue from `cpu` (taken in any mode), the guest's RAM and devices already in
        place; raises ResumeRefused when this mode cannot run that state."""

    @abstractmethod
    def guest_interrupts_enabled(self) -> bool: ...

    @abstractmethod
    def guest_iopl(self) -> int: ...

    @abstractmethod
    def deliver(
        self, vector: int, source: Source, error_code: int = 0, irq: int | None = None
    ) -> None:
        """Hand an interrupt or exception to the guest's handler."""

    @abstractmethod
    def interrupt_shadow(self) -> bool:
        """True for one instruction after STI: interrupts are not yet accepted."""

    def translated_instructions(self) -> int:
        """Guest instructions translated so far (binary translation only)."""
        return 0

    def introspect(self) -> CacheIntrospection | None:
        """A look into the translation cache, for modes that have one."""
        return None

    def paging(self) -> PagingIntrospection:
        """A look at the MMU: on bare metal the guest's tables are the CPU's own."""
        return PagingIntrospection(self.machine, self.machine.paging_registers())

    def retired_are_guest_instructions(self) -> bool:
        """False while the CPU runs code the monitor generated (binary translation)."""
        return True

    def uncounted_in_slice(self) -> int | None:
        """While the CPU runs code that keeps its own clock (translated code): the guest
        instructions of the running slice, up to the one the CPU is in, that the VM has not
        counted yet. None: the machine's counter counts them."""
        return None

    def before_slice(self, count: int) -> int:
        """A last look before the CPU runs; returns the instruction count to run it with
        (0: no limit — the code run keeps its own clock, as translated code does)."""
        return count

    def machine_failure(self, exit_: Exit) -> None:
        """A fetch outside RAM or a CPU error: in every mode the VM has crashed."""
        if exit_.kind is ExitKind.FETCH_FAULT:
            self.fetch_outside_ram(exit_.address or 0)
        elif exit_.kind is ExitKind.ERROR:
            self.vm.finish(ExitInfo(ExitReason.CRASHED, detail=f"CPU error: {exit_.detail}"))

    def fetch_outside_ram(self, address: int) -> None:
        detail = f"instruction fetch outside RAM at {address:#010x}"
        self.vm.finish(ExitInfo(ExitReason.CRASHED, detail=detail))

    # ------------------------------------------------------------------ the slice
    def run_slice(self, count: int) -> None:
        vm = self.vm
        if self.waiting_for_interrupt and not self._wake():
            return
        # An interrupt raised between two slices (a key typed at this step) comes before the
        # next instruction, not when the slice after it ends: that may be millions of
        # instructions later in a guest idling in a busy loop. (Translated code stops only
        # where it may take one, and looks for it there itself.)
        if self.counts_each_instruction and self.accept_interrupt() and vm.exit is not None:
            return
        if self.interrupt_shadow() and self.vm.irqs.pending_vector() is not None:
            # an interrupt waits: let the instruction after STI run, then take it (with
            # none pending, any that comes stops the slice: it may run on)
            count = 1
        count = self.before_slice(count)
        if vm.exit is not None:  # the last look ended the VM: the CPU does not run it
            return
        vm.begin_slice()
        exit_ = self.machine.run(self.machine.read_eip(), count)
        vm.end_slice(exit_.retired)
        stored = self._device_store is not None
        if self._device_store is not None:
            self._finish_device_store(*self._device_store)
        if exit_.kind is ExitKind.STOP and self._announced_but_not_run():
            self._pending = None  # the tracer saw it start, then the CPU stopped before it
        if self._io_fault is not None:
            eip, eax = self._io_fault
            self._io_fault = None
            self.machine.set_registers(eip=eip, eax=eax)
            self.vm.stats.total -= 1  # the faulting IN/OUT did not retire
            self._pending = None
            self.deliver(13, "exception", 0)
        elif not stored:
            self.handle(exit_)
        if exit_.kind is ExitKind.EXCEPTION and not exit_.is_trap and not self._retired_pending():
            self._pending = None  # a fault the monitor did not emulate: it never retired
        self._finish_traced()
        if vm.exit is None and not self.waiting_for_interrupt:
            self.accept_interrupt()

    def device_store(self, write: Callable[[], None]) -> None:
        """A guest store to a device's registers (an APIC page), from the memory hook. Its
        effect (an interrupt requested or ended, a timer armed) must be seen right after
        the store, but a CPU stopped inside a memory access runs the access again when it
        resumes. So a plain MOV does not complete: the CPU stops before it, and the
        monitor does the store's work and steps over it (`_finish_device_store`). Any other
        instruction (and translated code) stores at once, seen when the slice ends."""
        eip = self.machine.read_eip()
        insn = decode(self.machine.code(eip, 15), eip)
        if insn is None or insn.mnemonic != "mov" or not self.retired_are_guest_instructions():
            self.device_clock_now()
            write()
            return
        self._count_io("mmio")
        self._device_store = (write, eip + insn.size)
        self.machine.stop_before_this()

    def _finish_device_store(self, write: Callable[[], None], next_eip: int) -> None:
        self._device_store = None
        write()
        self.machine.set_registers(eip=next_eip)
        self.vm.tick(1)  # it ran on the CPU, all but its end: a guest instruction retired
        self.vm.stats.total += 1

    def _retired_pending(self) -> bool:
        """Did the guest instruction the tracer announced retire before the CPU faulted? The
        jump before a fetch fault did (the clock counted it): it is recorded."""
        pending = self._pending
        return pending is not None and not pending.subkind and pending.step < self.vm.stats.total

    def _announced_but_not_run(self) -> bool:
        """Did the tracer announce an instruction that then never ran? A stop from a code
        hook of its own (the interrupt window opening at it) comes after the tracer's."""
        pending = self._pending
        return pending is not None and not pending.subkind and pending.step >= self.vm.stats.total

    def idle_spinning(self) -> bool:
        """Does the guest spin on a jump to itself with interrupts on (a kernel's `while (1);`
        after STI)? It waits for an interrupt as surely as HLT would, without saying so."""
        if not self.guest_interrupts_enabled() or self.waiting_for_interrupt:
            return False
        return self.machine.code(self.virtual_state().eip, 5).startswith(_JUMPS_TO_SELF)

    def spinning_for_ever(self) -> bool:
        """Does the guest spin on a jump to itself with interrupts off (a tutorial kernel's
        `while (1);` that never ran STI)? Nothing can reach it: it has halted, as surely as
        with `cli; hlt`."""
        if self.guest_interrupts_enabled():
            return False
        return self.machine.code(self.virtual_state().eip, 5).startswith(_JUMPS_TO_SELF)

    def accept_interrupt(self) -> bool:
        """Deliver the PIC's pending interrupt if the guest's IF allows it now."""
        if not self.guest_interrupts_enabled() or self.interrupt_shadow():
            return False
        irqs = self.vm.irqs
        if irqs.pending_vector() is None:
            return False
        irq_vector = irqs.acknowledge()
        self.deliver(irq_vector, "external", irq=irqs.irq_of(irq_vector))
        return True

    def wait_for_interrupt(self) -> None:
        """HLT with interrupts on: sleep until the next interrupt."""
        self.waiting_for_interrupt = True

    def _wake(self) -> bool:
        """Skip idle time to the next interrupt; finish the VM if none can ever come."""
        vm = self.vm
        while vm.irqs.pending_vector() is None:
            if vm.wake_with_input():
                continue
            due = vm.timer_due()
            if due is None:
                if vm.inputs.interactive:  # paused, as at the end of a budget, until input
                    why = "the guest sleeps until input arrives"
                    vm.exit = ExitInfo(ExitReason.BUDGET, None, why)
                    return False
                vm.finish(
                    ExitInfo(
                        ExitReason.HALTED,
                        None,
                        "HLT with interrupts on, but no unmasked interrupt source is "
                        "armed and no input is left to come: the machine sleeps forever",
                    )
                )
                return False
            vm.irqs.advance(due)
        self.waiting_for_interrupt = False
        self.accept_interrupt()
        return False

    # ------------------------------------------------------------------ port I/O
    def io_allowed(self) -> bool:
        """The IOPL rule, which unicorn never applies (docs/unicorn-facts.md, fact 4)."""
        return self.guest_cpl() <= self.guest_iopl()

    def run_ended(self) -> bool:
        """Has the run ended during the slice now running (a debug exit, a reset)? Translated
        code runs its block on to the end before the CPU stops, but no device sees the
        accesses of a machine that has stopped, nor any event report them."""
        return self.vm.exit is not None

    def port_in(self, port: int, size: int) -> int:
        if self.run_ended():
            return (1 << 8 * size) - 1
        eip = self.machine.read_eip()
        if not self.io_allowed():
            self._fault_io(eip)
            return 0
        self._count_io("in")
        if port in _PIT_PORTS:
            self.clock_now()
        value = self.machine.io.read(port, size)
        self._report_io(port, size, value, False)
        return value

    def port_out(self, port: int, size: int, value: int) -> None:
        if self.run_ended():
            return
        eip = self.machine.read_eip()
        if not self.io_allowed():
            self._fault_io(eip)
            return
        self._count_io("out")
        if port in _TIMING_PORTS:
            self.clock_now()
        self.machine.io.write(port, size, value)
        self._report_io(port, size, value, True)
        if port in _TIMING_PORTS:
            self.machine.request_stop()

    def time_stamp(self) -> int:
        """RDTSC: the time stamp counter on the instruction clock, brought up to the
        instruction now running."""
        self.clock_now()
        return msr.time_stamp(self.vm.pit.ticks, self.model_specific_registers())

    def clock_now(self) -> None:
        """Bring the machine's clock up to the instruction now running (from a hook: a
        timer read, or a write that moves a deadline, happens at its exact instruction)."""
        self.vm.retire(self.machine.counter.read() - 1)

    def device_clock_now(self) -> None:
        """`clock_now`, for a device's memory-mapped registers (the APICs): a timer read at
        its exact instruction. Under a monitor the access is a trap (the monitor emulates
        the device's page), counted as `mmio`."""
        self._count_io("mmio")
        self.clock_now()

    def instruction_clock(self) -> int:
        """Guest instructions retired before the one being emulated (the TSC's base)."""
        return self.vm.pit.ticks

    @abstractmethod
    def model_specific_registers(self) -> dict[int, int]:
        """Where this CPU's MSR values live (`machine/msr.py` reads and writes them)."""

    def local_apic(self) -> msr.ApicBase:
        """The device that holds IA32_APIC_BASE."""
        return self.vm.lapic

    def _fault_io(self, eip: int) -> None:
        self._io_fault = (eip, self.machine.uc.reg_read(_EAX))
        self.machine.request_stop()

    def _count_io(self, mnemonic: str) -> None:
        if self.monitored:
            self.note_trap(mnemonic)

    def _report_io(self, port: int, size: int, value: int, write: bool) -> None:
        """The access as an event; one that nothing answered is an isolation event too, at
        the same instruction (looked up once: a guest may poke such a port millions of
        times, as kvm-unit-tests' port80 does)."""
        owner = self.machine.io.owner(port)
        where = eip, text = self.guest_instruction_running()
        self.vm.emit(
            PortAccess(
                self.vm.name,
                self.vm.step,
                port,
                size,
                value,
                write,
                owner.name if owner else "",
                self.monitored,
                eip,
                text,
            )
        )
        if owner is None:
            detail = (
                f"out {value:#x} to port {port:#x}: ignored"
                if write
                else f"in from port {port:#x}: all ones"
            )
            self.isolation_event("foreign_port", port, detail, where=where)

    def memory_violation(self, kind: str, address: int, size: int, value: int) -> None:
        if kind == "monitor_read" and not self._reads_memory_operand():
            return  # the CPU itself reading a descriptor of the shadow GDT (a segment load)
        detail = f"{size}-byte {'write of ' + hex(value) if 'write' in kind else 'read'}"
        self.isolation_event(kind, address, detail, self.memory_access_eip())

    def _reads_memory_operand(self) -> bool:
        """Does the instruction now running name memory? (Asked for each descriptor the CPU
        loads on a host, so the answers are kept, by address and bytes.)"""
        eip = self.machine.read_eip()
        key = (eip, self.machine.code(eip, 15))
        answer = self._memory_operands.get(key)
        if answer is None:
            insn = decode(key[1], eip)
            answer = insn is None or any(op.kind == "mem" for op in insn.operands)
            self._memory_operands[key] = answer
        return answer

    def isolation_event(
        self,
        kind: str,
        address: int,
        detail: str,
        eip: int | None = None,
        where: tuple[int, str] | None = None,
    ) -> None:
        """Report an access outside what this VM owns, at the instruction now running (as the
        guest sees its EIP, unless the caller knows it better, or `where` it is already known
        with its text); it was contained (open bus, dropped write, ignored port) and the VM
        goes on."""
        eip, text = where or self.guest_instruction_running(eip)
        self.vm.emit(
            IsolationViolation(self.vm.name, self.vm.step, kind, address, eip, detail, text)
        )

    def guest_eip_running(self) -> int:
        """The guest EIP of the instruction the CPU is running (from inside a hook)."""
        return self.virtual_state().eip

    def memory_access_eip(self) -> int:
        """The guest EIP of the instruction whose memory access a memory hook sees."""
        return self.guest_eip_running()

    def guest_instruction_running(self, eip: int | None = None) -> tuple[int, str]:
        """(guest EIP, text) of the instruction the CPU is running (or of the one at `eip`),
        for the event it causes (decoded once per address and bytes: I/O instructions run
        again and again)."""
        eip = self.guest_eip_running() if eip is None else eip
        key = (eip, self.machine.code(eip, 15))
        text = self._texts.get(key)
        if text is None:
            insn = decode(key[1], eip)
            text = self._texts[key] = insn.text if insn else "(undecodable)"
        return eip, text

    def code_page_written(self, address: int, size: int, stored: bool = False) -> None:
        """Only binary translation write-protects guest pages (those holding translated code)."""
        raise AssertionError(f"{self.mode}: no guest page is write-protected")

    # ------------------------------------------------------------------ tracing
    def set_tracing(self, on: bool) -> None:
        self.tracing = on
        fused = self._recording_tracer() if on else None
        tracer = fused or (self._trace if on else None)
        self.machine.set_tracer(tracer, checks_deadline=fused is not None)

    def _recording_tracer(self) -> Callable[[int, int], None] | None:
        """The hook a traced run into a recording (an instruction sink and a register watch)
        calls before every instruction: `_trace` and `_finish_traced` fused into one function
        for the common case (an instruction that ran as it is), since each Python call more
        is a tenth of what recording an instruction costs. None where there is no recording
        (`_trace` is the hook then)."""
        events = self.vm.events
        sink, watch = events.instructions, events.watch
        if sink is None or watch is None:
            return None
        vm, machine, stats = self.vm, self.machine, self.vm.stats
        by_class, begun_at = stats.by_class, machine.counter.begun_at
        registers_now, code_at = machine.trace_registers, machine.traced_code
        guest_cpl, hole_probe, finish = self.guest_cpl, self.hole_probe, self._finish_traced
        plain = InsnClass.DIRECT if self.monitored else InsnClass.NATIVE
        cs_byte = 4 * STATE_FIELDS.index("cs") + (0 if sys.byteorder == "little" else 3)
        cpl_in_cs = self.cpl_in_cs  # (then read from the registers the hook has, not asked)
        clock = machine.counter  # the block clock's deadline inside a block (set_tracer)
        block_clock = clock if isinstance(clock, BlockClock) else None
        # With paging off the code at EIP is RAM at EIP: compared in place with what was
        # decoded there last (self-modifying code decodes again), no copy, no cache key.
        ram, last_start = machine.ram_view, machine.ram_size - MAX_INSN_SIZE
        paging_byte = -1 if sys.byteorder == "little" else -4  # CR0.PG's: CR0 ends the read
        decoded: dict[int, tuple[bytes, Instruction | None, bool]] = {}  # EIP: its code,
        # the decode of that code and whether the instruction is sensitive

        def trace(eip: int, size: int) -> None:
            if block_clock is not None and block_clock.stepping and block_clock.at_deadline():
                return
            step = vm.slice_base() + begun_at(eip) - 1
            registers = registers_now()
            watch(step, registers)
            pending = self._pending
            if pending is not None:
                if pending[4] is None and not (self._pending_trapped or self._pending_hypercall):
                    self._pending = None  # ran as it is: `_finish_traced`'s first case
                    by_class[plain] += 1
                    sink(pending[0], pending[1], pending[2], plain, pending[3], False)
                else:
                    finish()
            if registers[paging_byte] & 0x80 or eip > last_start:
                insn = decode(code_at(eip, MAX_INSN_SIZE, registers), eip)
                sensitive = insn is not None and insn.is_sensitive
            else:
                code = ram[eip : eip + MAX_INSN_SIZE]
                known = decoded.get(eip)
                if known is not None and known[0] == code:
                    insn, sensitive = known[1], known[2]
                else:
                    raw = code.tobytes()
                    insn = decode(raw, eip)
                    sensitive = insn is not None and insn.is_sensitive
                    decoded[eip] = (raw, insn, sensitive)
            probe = hole_probe(insn) if sensitive and insn is not None else None
            cpl = registers[cs_byte] & 3 if cpl_in_cs else guest_cpl()
            self._pending = _traced((step, eip, insn, cpl, probe, ""))
            self._pending_trapped = self._pending_hypercall = False

        return trace

    def _trace(self, eip: int, size: int) -> None:
        step = self.vm.step - 1
        registers = self.machine.trace_registers()
        watch = self.vm.events.watch
        if watch is not None:
            watch(step, registers)
        if self._pending is not None:
            self._finish_traced()
        # Unicorn's `size` is unreliable for instructions that fault: decode from memory.
        insn = decode(self.machine.traced_code(eip, 15, registers), eip)
        probe = self.hole_probe(insn) if insn is not None and insn.is_sensitive else None
        self._pending = _traced((step, eip, insn, self.guest_cpl(), probe, ""))
        self._pending_trapped = False
        self._pending_hypercall = False

    def hole_probe(self, insn: Instruction) -> Callable[[], bool] | None:
        """Under a monitor: how to tell, after `insn` ran directly, whether it diverged."""
        return None

    def _finish_traced(self) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        insn, step = pending.insn, pending.step
        stats = self.vm.stats
        hole = False
        if pending.subkind:  # translated code: the tracer is what counts its guest instructions
            cls = InsnClass.TRANSLATED
            step = stats.total
            stats.total += 1
        elif not self.monitored:
            cls = InsnClass.NATIVE
        elif self._pending_trapped:
            cls = InsnClass.TRAPPED
        elif self._pending_hypercall:
            cls = InsnClass.HYPERCALL
        else:
            cls = InsnClass.DIRECT
            hole = pending.probe is not None and pending.probe()
        if cls is not InsnClass.TRAPPED and cls is not InsnClass.HYPERCALL:  # counted already
            stats.by_class[cls] += 1  # (a StrEnum: the same key as its value)
        if hole and insn:
            stats.holes[trap_name(insn)] += 1
        sink = self.vm.events.instructions
        if sink is not None:  # a recording: straight in, with no call more (the hot path)
            sink(step, pending.eip, insn, cls, pending.cpl, hole)
        else:
            self.executed(step, pending.eip, insn, cls, pending.cpl, hole, pending.subkind)

    def executed(
        self,
        step: int,
        eip: int,
        insn: Instruction | None,
        cls: InsnClass,
        cpl: int,
        hole: bool = False,
        subkind: str = "",
    ) -> None:
        """A traced instruction retired: to the event log's instruction sink if it has one
        (a recording's columns), else as an event."""
        sink = self.vm.events.instructions
        if sink is not None:
            sink(step, eip, insn, cls, cpl, hole)
            return
        text, sensitive = (insn.text, insn.is_sensitive) if insn else ("(bad)", False)
        self.vm.emit(
            InstructionExecuted(self.vm.name, step, eip, text, cls, cpl, hole, sensitive, subkind)
        )

    def note_trap(self, name: str) -> None:
        """Count a trapped instruction (fast and traced runs alike); in a traced run its
        event goes out now, before the events of its emulation."""
        stats = self.vm.stats
        stats.traps[name] += 1
        stats.by_class[_TRAPPED] += 1
        self._pending_trapped = True
        self._finish_traced()

    def note_hypercall(self, name: str) -> None:
        """Count a hypercall; in a traced run its `int 0x82` is classified `hypercall`."""
        self.vm.stats.hypercalls[name] += 1
        self.vm.stats.by_class[InsnClass.HYPERCALL.value] += 1
        self._pending_hypercall = True
        self._finish_traced()


def trap_name(insn: Instruction) -> str:
    """How a trap is counted: the mnemonic, with the special register for MOV ("mov cr3")."""
    if insn.mnemonic == "mov":
        for op in insn.operands:
            if op.reg and (op.reg[:2] in ("cr", "dr") or op.reg in SEGMENT_REGISTERS):
                return f"mov {op.reg}"
    return insn.mnemonic
