"""A virtual machine: a guest image, a machine with its devices, and an execution mode.

The run loop is the same in every mode: run the CPU for a slice of instructions that ends no
later than the next timer interrupt, let the mode's executor handle whatever stopped it (a
trap, a halt, a port write), then deliver a pending interrupt if the guest accepts one.
Time is deterministic: the PIT's input clock advances one tick per retired instruction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial

from hypervisor.devices import (
    DebugExit,
    Kbc8042,
    Pic8259Pair,
    Pit8254,
    PlatformId,
    PortDevice,
    Screen,
    Uart16550,
    VgaText,
)
from hypervisor.devices.cmos import CmosRtc
from hypervisor.devices.debug_exit import DEBUG_EXIT_PORT, ISA_DEBUG_EXIT_PORT
from hypervisor.devices.fw_cfg import FwCfg
from hypervisor.devices.intc import RTC_IRQ, Interrupts
from hypervisor.devices.ioapic import IOAPIC_BASE, IOAPIC_SIZE, IoApic
from hypervisor.devices.lapic import LAPIC_BASE, LAPIC_SIZE, LocalApic
from hypervisor.devices.pci import PciHost
from hypervisor.devices.port92 import SystemControlA
from hypervisor.devices.post import PostCodePort
from hypervisor.devices.scancodes import scancodes
from hypervisor.devices.speaker import SystemControlB
from hypervisor.devices.vga import TEXT_BUFFER, blank_text_buffer
from hypervisor.events import (
    ConsoleOutput,
    Event,
    EventLog,
    InputDelivered,
    InsnClass,
    VmStateChanged,
)
from hypervisor.guest.boot import BootPlan, plan_boot
from hypervisor.guest.image import PV_SUFFIX, GuestImage
from hypervisor.machine.cancel import CANCEL
from hypervisor.machine.clockbuild import ClockKind
from hypervisor.machine.cpu import CpuState
from hypervisor.machine.hostram import RamPool
from hypervisor.machine.machine import Machine
from hypervisor.vmm.contract import (
    DEFAULT_RAM,
    KERNEL_CS,
    KERNEL_DS,
    ExitInfo,
    ExitReason,
    Mode,
    VmState,
)
from hypervisor.vmm.costs import (
    MMU_ROWS,
    PENTIUM4,
    PV_MMU_ROWS,
    CostProfile,
    CycleCount,
    cycles,
)
from hypervisor.vmm.inputs import Input, InputDevice, InputScript
from hypervisor.vmm.modes import MODES

KEYBOARD_IRQ, SERIAL_IRQ = 1, 4
OVERHEAD_SAMPLE = 20_000  # guest instructions between two points of the overhead timeline
SLICE = 1 << 24  # the most one slice may run: a stop from outside that just missed the CPU
# (Ctrl-C between two slices) waits for no more than this (a fraction of a second)
SPIN_PROBE = 100_000  # with input waiting, look this often whether the guest idles in a spin
SPIN_CHECK = 1_000_000  # with interrupts off, a slice at most this long: then look for a spin
SPUN = "a jump to itself with interrupts off: the CPU spins there for ever"


@dataclass
class RunStats:
    """What the run did, by instruction class. Fast runs know totals and traps; traced runs
    know every class and the holes."""

    total: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    traps: Counter[str] = field(default_factory=Counter)
    callouts: Counter[str] = field(default_factory=Counter)
    hypercalls: Counter[str] = field(default_factory=Counter)
    holes: Counter[str] = field(default_factory=Counter)
    traced: bool = False

    def instructions(self, mode_class: InsnClass) -> dict[str, int]:
        counts = {c.value: self.by_class.get(c.value, 0) for c in InsnClass}
        if not self.traced:  # a fast run: what the monitor did not see ran directly
            counts[mode_class.value] = self.total - sum(
                v for k, v in counts.items() if k != mode_class.value
            )
        return {"total": self.total, **counts}


def _no_hypervisor(name: str, mode: Mode) -> str:
    """Why a paravirtualized kernel is not started outside pv (it would crash, or hang)."""
    where = "on bare metal nothing" if mode is Mode.NATIVE else f"under {mode} no monitor code"
    return (
        f"{name} is a paravirtualized kernel (built with -DPARAVIRT): it calls the hypervisor "
        f"with int 0x82, and {where} answers hypercalls; run it with --mode pv"
    )


class Vm:
    # What a checkpoint captures, and what stays the receiving VM's own (its parts, its
    # configuration): every attribute is one or the other (tests/test_checkpoints.py).
    CHECKPOINTED = (
        "console",
        "_line",
        "stats",
        "exit",
        "state",
        "_slice_done",
        "_in_slice",
        "run_end",
        "ticks",
        "overhead_timeline",
        "cost_profile",
        "_last_sample",
        "inputs_done",
        "_input_wanted",
    )
    NOT_CHECKPOINTED = (
        "image",
        "mode",
        "name",
        "events",
        "machine",
        "uart",
        "pic",
        "pit",
        "lapic",
        "ioapic",
        "irqs",  # the wiring of the three interrupt controllers
        "debug_exit",
        "isa_debug_exit",
        "platform",
        "rtc",
        "fw_cfg",
        "pci",
        "port61",
        "port92",
        "post",
        "devices",  # the parts above, as the port bus sees them
        "boot",  # what the loader wrote at boot: configuration, written again from the image
        "kbc",
        "vga",
        "inputs",  # the run's script: the same for all its VMs, wiring like the event log
        "executor",
    )

    def __init__(
        self,
        image: GuestImage,
        mode: Mode | str = Mode.NATIVE,
        *,
        name: str | None = None,
        ram_size: int = DEFAULT_RAM,
        host: RamPool | None = None,
        events: EventLog | None = None,
        identity: str | None = None,
        inputs: InputScript | None = None,
    ) -> None:
        """`identity`: what the platform identity port tells the guest (its name by default)."""
        self.image = image
        self.mode = Mode.parse(mode)
        self.name = name or image.name
        self.events = events or EventLog()
        self.boot: BootPlan = plan_boot(image, ram_size)  # ImageError before any RAM is taken
        # bt's translated code keeps its own clock: its CPU counts the reference way
        counting = ClockKind.COUNT if self.mode is Mode.BT else None
        self.machine = Machine(ram_size, host, self.name, clock=counting)
        self.uart = Uart16550(
            on_output=self._console,
            on_irq=lambda: self._device_irq(SERIAL_IRQ),
            on_wait=lambda: self._guest_waits(InputDevice.SERIAL),
        )
        self.pic = Pic8259Pair()
        self.pit = Pit8254(on_irq0=lambda: self.irqs.raise_isa(0))
        self.lapic = LocalApic(on_eoi=lambda vector: self.ioapic.eoi(vector))
        self.ioapic = IoApic(self.lapic)
        # the PC's start-up probes: the date (and IRQ 8's clock), QEMU's firmware
        # configuration, PCI, port 0x61
        self.rtc = CmosRtc(
            clock=lambda: self.pit.ticks,
            ram_size=ram_size,
            on_irq=lambda: self._device_irq(RTC_IRQ),
        )
        self.irqs = Interrupts(self.pic, self.pit, self.lapic, self.ioapic, self.rtc)
        apics: tuple[tuple[int, int, LocalApic | IoApic], ...] = (
            (LAPIC_BASE, LAPIC_SIZE, self.lapic),
            (IOAPIC_BASE, IOAPIC_SIZE, self.ioapic),
        )
        for base, size, apic in apics:
            self.machine.map_device(
                base, size, partial(self._mmio_read, apic), partial(self._mmio_write, apic)
            )
        self.debug_exit = DebugExit(on_exit=partial(self._debug_exit, port=DEBUG_EXIT_PORT))
        # QEMU's isa-debug-exit, which kernels built for `qemu -kernel` end their runs with.
        self.isa_debug_exit = DebugExit(
            partial(self._debug_exit, port=ISA_DEBUG_EXIT_PORT),
            ISA_DEBUG_EXIT_PORT,
            "isa-debug-exit",
        )
        # a VM named after its guest is that guest, whichever build (a .pv port) it runs
        self.platform = PlatformId(identity or self.name.removesuffix(PV_SUFFIX))
        self.kbc = Kbc8042(
            on_irq=lambda: self._device_irq(KEYBOARD_IRQ),
            on_reset=self._reset,
            on_wait=lambda: self._guest_waits(InputDevice.KEYBOARD),
        )
        self.vga = VgaText()
        self.fw_cfg = FwCfg(ram_size)
        self.pci = PciHost()
        self.port61 = SystemControlB(self.pit)
        self.port92 = SystemControlA(on_reset=partial(self._reset, "port 0x92 (fast reset)"))
        self.post = PostCodePort()  # port 0x80: the I/O delay kernels use
        self.devices: tuple[PortDevice, ...] = (
            self.uart,
            self.pic,
            self.pit,
            self.debug_exit,
            self.isa_debug_exit,
            self.platform,
            self.kbc,
            self.vga,
            self.rtc,
            self.fw_cfg,
            self.pci,
            self.port61,
            self.port92,
            self.post,
        )
        for device in self.devices:
            self.machine.io.attach(device)
        self.inputs = inputs or InputScript()
        if self.inputs.live is None:
            self.inputs.live = self
        self.inputs_done = 0  # timed inputs of the script delivered so far
        self._input_wanted: InputDevice | None = None  # the guest polls this device
        self.console = bytearray()
        self._line = bytearray()
        self.stats = RunStats()
        self.exit: ExitInfo | None = None
        self.state = VmState.CREATED
        self._slice_done = 0
        self._in_slice = False
        self.run_end: int | None = None  # the step the current run stops at
        self.ticks = 0  # instructions the physical CPU retired: the PIT's clock
        self.overhead_timeline: list[tuple[int, float]] = []  # (guest step, overhead %)
        self.cost_profile: CostProfile = PENTIUM4
        self._last_sample = CycleCount(0.0, 0.0)
        self.machine.write(TEXT_BUFFER, blank_text_buffer())  # as the BIOS clears the screen
        for piece in self.boot.pieces:
            self.machine.write(piece.address, piece.data)
        self.executor = MODES[self.mode](self)
        self.executor.start(self.entry_state())
        if image.paravirtual and not self.executor.runs_paravirtual:
            self.finish(
                ExitInfo(ExitReason.UNSUPPORTED, detail=_no_hypervisor(image.name, self.mode))
            )

    # ------------------------------------------------------------------ loading
    def entry_state(self) -> CpuState:
        """The registers the loader leaves (guest contract v1, or multiboot's): `boot.py`."""
        boot = self.boot
        return CpuState(
            eax=boot.eax,
            ebx=boot.ebx,
            eip=boot.eip,
            esp=boot.esp,
            cs=KERNEL_CS,
            ss=KERNEL_DS,
            ds=KERNEL_DS,
            es=KERNEL_DS,
            fs=KERNEL_DS,
            gs=KERNEL_DS,
        )

    # ------------------------------------------------------------------ events
    def emit(self, event: Event) -> None:
        self.events.emit(event)

    @property
    def step(self) -> int:
        """Retired instructions so far, including those of the slice now running."""
        if not self._in_slice:
            return self.stats.total
        uncounted = self.executor.uncounted_in_slice()
        if uncounted is not None:  # code that keeps its own clock (translated code)
            return self.stats.total + uncounted
        return self.stats.total + self.machine.counter.read() - self._slice_done

    def slice_base(self) -> int:
        """`step` less the instructions the CPU began in the slice now running (constant
        through the slice: a tracer that knows EIP adds the clock's count at it)."""
        return self.stats.total - self._slice_done

    def _console(self, data: bytes) -> None:
        self.console += data
        self._line += data
        if b"\n" in data:
            self.flush_console()

    def flush_console(self) -> None:
        if self._line:
            self.emit(ConsoleOutput(self.name, self.step, self._line.decode("latin-1")))
            self._line.clear()

    def _debug_exit(self, status: int, port: int) -> None:
        detail = f"guest wrote {status} to port {port:#x}"
        self.finish(ExitInfo(ExitReason.DEBUG_EXIT, status, detail))
        self.machine.request_stop()

    def _device_irq(self, irq: int) -> None:
        """A device's interrupt line rose. From a port access in a running slice, the slice
        stops after that instruction, so the CPU sees the interrupt where hardware would."""
        self.irqs.raise_isa(irq)
        if self._in_slice:
            self.machine.request_stop()

    def _mmio_read(self, device: LocalApic | IoApic, offset: int, size: int) -> int:
        """A guest read of an APIC's page: at the time of the instruction reading it."""
        if self._in_slice:
            self.executor.device_clock_now()
        return device.read(offset, size)

    def _mmio_write(self, device: LocalApic | IoApic, offset: int, size: int, value: int) -> None:
        """A guest write to an APIC's page: it may request an interrupt, end one, or move
        the timer's deadline, so the CPU looks at interrupts right after it."""
        write = partial(device.write, offset, size, value)
        if self._in_slice:
            self.executor.device_store(write)
        else:
            write()

    def _reset(self, through: str = "the keyboard controller (port 0x64)") -> None:
        detail = f"the guest reset the machine through {through}"
        self.finish(ExitInfo(ExitReason.RESET, None, detail))
        self.machine.request_stop()

    def screen(self) -> Screen:
        """The guest's text screen now, drawn from its RAM and the VGA's registers."""
        return self.vga.screen(self.machine.read)

    # ------------------------------------------------------------------ input
    def _guest_waits(self, device: InputDevice) -> None:
        """`device` saw the guest poll it for input: a waiting input for it goes in after
        this instruction (the slice stops so that it arrives at a step of its own)."""
        if self.inputs.has_waiting(self, device):
            self._input_wanted = device
            self.machine.request_stop()

    def deliver_inputs(self) -> None:
        """Hand the guest every input due by now (between slices, so at an exact step)."""
        if self._input_wanted is not None:
            self.inputs.take_waiting(self, self.step, self._input_wanted)
            self._input_wanted = None
        script = self.inputs
        while (due := script.due(self.inputs_done)) is not None and due <= self.step:
            self._deliver_next()

    def wake_with_input(self) -> bool:
        """The guest sleeps (HLT, interrupts on) and no interrupt is pending: give it a
        waiting input now or, when no timer could wake it, the next timed one early (a sleep
        takes no steps, so its step would never come). True if one was delivered."""
        if self.inputs.take_waiting(self, self.step) is None and self.timer_due() is not None:
            return False
        if self.inputs.due(self.inputs_done) is None:
            return False
        self._deliver_next()
        return True

    def timer_due(self) -> int | None:
        """Ticks until a timer (the PIT, the local APIC's) wakes a sleeping guest; None if
        none can (not armed, or masked: its ticks would wake no one)."""
        return self.irqs.wake_due()

    def _deliver_next(self) -> None:
        item = self.inputs.timed[self.inputs_done]
        self.inputs_done += 1
        self.deliver(item)

    def deliver(self, item: Input) -> None:
        if item.device is InputDevice.KEYBOARD:
            self.kbc.press(scancodes(item.text))
        else:
            self.uart.receive(item.text.encode("latin-1"))
        self.emit(InputDelivered(self.name, self.step, item.device.value, item.text))

    def interrupt(self) -> None:
        """Stopped from outside (Ctrl-C): it ends here, and could go on."""
        detail = f"stopped from outside after {self.stats.total:,} instructions"
        self.finish(ExitInfo(ExitReason.INTERRUPTED, detail=detail))

    def finish(self, info: ExitInfo) -> None:
        if self.exit is None:
            self.exit = info
            self.flush_console()
            self.state = info.state
            self.emit(VmStateChanged(self.name, self.step, info.state, info.detail))

    # ------------------------------------------------------------------ resuming
    @property
    def pending_line(self) -> bytes:
        """Console output of the line not finished yet (its event goes out at the newline)."""
        return bytes(self._line)

    def carry_on(
        self,
        stats: RunStats,
        ticks: int,
        timeline: list[tuple[int, float]],
        console: bytes,
        pending_line: bytes,
    ) -> None:
        """Continue the counts, clock, console and overhead timeline of a run suspended
        elsewhere (a file, another host): this VM's step is that run's step."""
        self.stats = stats
        self.ticks = ticks
        self.overhead_timeline = list(timeline)
        self.console = bytearray(console)
        self.uart.output = bytearray(console)
        self._line = bytearray(pending_line)
        self._last_sample = self.cycles()

    # ------------------------------------------------------------------ time
    def retire(self, began: int) -> None:
        """Account instructions the CPU retired in the running slice up to `began`: each is
        a guest instruction and a tick of the PIT's clock — unless the CPU was running
        translated code, whose guest instructions the translation cache counts itself."""
        delta = began - self._slice_done
        if delta > 0:
            self._slice_done = began
            if self.executor.retired_are_guest_instructions():
                self.tick(delta)
                self.stats.total += delta

    def tick(self, instructions: int) -> None:
        """The machine's clock: the PIT's input ticks once per retired guest instruction."""
        self.ticks += instructions
        self.irqs.advance(instructions)

    def begin_slice(self) -> None:
        self._slice_done, self._in_slice = 0, True

    def end_slice(self, retired: int) -> None:
        self.retire(retired)
        self._in_slice = False

    def retire_emulated(self) -> None:
        """An instruction the monitor emulated retires too, and the clock ticks for it."""
        self.stats.total += 1
        self.irqs.advance(1)

    # ------------------------------------------------------------------ running
    def run(self, max_insns: int, trace: bool = False, *, quantum: bool = False) -> ExitInfo:
        """Run until the guest stops or `max_insns` more instructions have retired.

        With `quantum`, the instructions are a scheduler's time slice: when they are used up
        the VM returns "budget" but stays running (no state change, it was preempted), and
        under bt the slice may end a few instructions late (at the end of a fragment)
        rather than approach its end one instruction at a time."""
        if self.exit is not None and self.exit.final:
            return self.exit
        self.exit = None
        self.stats.traced = self.stats.traced or trace
        self.executor.set_tracing(trace)
        if self.state != VmState.RUNNING:
            self.state = VmState.RUNNING
            self.emit(VmStateChanged(self.name, self.step, VmState.RUNNING))
        end = self.stats.total + max_insns
        try:
            while self.exit is None:
                if CANCEL.requested:
                    self.interrupt()
                    break
                self.deliver_inputs()
                remaining = end - self.stats.total
                if remaining <= 0:
                    done = ExitInfo(
                        ExitReason.BUDGET, detail=f"{self.stats.total} instructions executed"
                    )
                    if quantum:
                        self.exit = done
                    else:
                        self.finish(done)
                    break
                due = self.irqs.next_timer()
                count = min(remaining if due is None else max(1, min(remaining, due)), SLICE)
                # A time slice may end a little late, but never past an input's step: the
                # slice approaches it exactly (as translated code approaches a run's end).
                self.run_end = None if quantum else end
                typed = self.inputs.due(self.inputs_done)
                if typed is not None:
                    count = max(1, min(count, typed - self.step))
                    self.run_end = min(typed, self.run_end or typed)
                if count > SPIN_CHECK and not self.executor.guest_interrupts_enabled():
                    count = SPIN_CHECK  # interrupts off, no timer to end it: look for a spin
                waiting = self.inputs.has_waiting(self)
                if waiting:
                    count = min(count, SPIN_PROBE)
                    if due is not None and due > 1:
                        # end one short of the tick: a slice that ends at it has entered the
                        # timer handler, and a guest idling between ticks is never seen spin
                        count = min(count, due - 1)
                before = self.stats.total
                self.executor.run_slice(count)
                if (
                    self.exit is None
                    and self.stats.total - before >= count
                    and self.executor.spinning_for_ever()
                ):  # a whole slice, and it ends on `jmp $` with interrupts off
                    self.finish(ExitInfo(ExitReason.HALTED, detail=SPUN))
                    break
                if waiting and self.exit is None and self.executor.idle_spinning():
                    self.inputs.take_waiting(self, self.step)  # delivered at this step
                if self.stats.total >= OVERHEAD_SAMPLE * (len(self.overhead_timeline) + 1):
                    self._sample_overhead()
        finally:
            self.executor.set_tracing(False)
            self.flush_console()
        assert self.exit is not None  # the loop runs until there is one
        return self.exit

    def _sample_overhead(self) -> None:
        """Overhead over the last stretch of the run (not since the start), so a warming
        translation cache shows as a falling curve."""
        now = self.cycles()
        before = self._last_sample
        self._last_sample = now
        window = CycleCount(
            now.virtual - before.virtual, now.native_equivalent - before.native_equivalent
        )
        self.overhead_timeline.append((self.stats.total, window.overhead_pct))

    def cycles(self) -> CycleCount:
        """The run so far, priced by the cost model."""
        stats = self.stats
        mmu = {name: n for name, n in stats.traps.items() if name in MMU_ROWS}
        pv_mmu = {name: n for name, n in stats.hypercalls.items() if name in PV_MMU_ROWS}
        return cycles(
            self.cost_profile,
            guest_instructions=stats.total,
            cpu_instructions=self.ticks,
            traps=sum(stats.traps.values()) - sum(mmu.values()),
            mmu=mmu,
            callouts=sum(stats.callouts.values()),
            hypercalls=sum(stats.hypercalls.values()) - sum(pv_mmu.values()),
            pv_mmu=pv_mmu,
            translated=self.executor.translated_instructions(),
        )

    @property
    def mode_class(self) -> InsnClass:
        return InsnClass.NATIVE if self.mode is Mode.NATIVE else InsnClass.DIRECT
