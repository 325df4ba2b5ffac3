"""Immutable views of the engine, built in the engine thread and only read by the UI.

A `Snapshot` is everything the screen shows at one moment; the widgets never touch a VM.
This module has no Textual in it: the views are plain data, tested on their own.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

from hypervisor.devices.intc import InterruptsView
from hypervisor.devices.vga import Screen
from hypervisor.events import (
    Callout,
    ConsoleOutput,
    Event,
    EventKind,
    FragmentChained,
    FragmentInvalidated,
    FragmentTranslated,
    InsnClass,
    InterruptDelivered,
    IsolationViolation,
    PageFaultHandled,
    PortAccess,
    TranslationCacheFlushed,
    Trap,
    VmStateChanged,
)
from hypervisor.machine.cpu import EFLAGS_IF, CpuState
from hypervisor.text import visible
from hypervisor.trace.hosttimeline import HostTimeline
from hypervisor.trace.recording import MemoryWrite
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.bt.introspect import CacheView
from hypervisor.vmm.contract import VmState
from hypervisor.vmm.costs import CycleCount
from hypervisor.vmm.mmu.introspect import PagingView
from hypervisor.vmm.trap import TrapAndEmulate
from hypervisor.vmm.vm import Vm
from tui.listing import Listing, instruction

CODE_CONTEXT = 40  # rows listed before and after the current instruction
EVENT_ROWS = 200
CONSOLE_TAIL = 4096
SPARK_BUCKETS = 40
TC_LINES = 64  # translated instructions shown of the current fragment


@dataclass(frozen=True, slots=True)
class CpuView:
    """Registers as one side sees them (the guest's virtual CPU, or the real one)."""

    state: CpuState
    cpl: int
    gdtr: tuple[int, int]
    idtr: tuple[int, int]

    @property
    def interrupts(self) -> bool:
        return bool(self.state.eflags & EFLAGS_IF)

    @property
    def iopl(self) -> int:
        return (self.state.eflags >> 12) & 3

    def values(self) -> dict[str, int]:
        """Every value the registers pane shows, by its row's name."""
        return {
            **self.state.as_dict(),
            "if": int(self.interrupts),
            "iopl": self.iopl,
            "cpl": self.cpl,
            "gdtr": self.gdtr[0],
            "idtr": self.idtr[0],
        }


@dataclass(frozen=True, slots=True)
class Registers:
    guest: CpuView
    real: CpuView
    guest_changed: frozenset[str] = frozenset()
    real_changed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CodeRow:
    address: int
    text: str  # the source line (or, without one, the instruction)
    line: int
    insn: str  # the instruction the CPU runs there (for the last step: the one it ran)
    tag: InsnClass | None  # how it ran the last time before this step (None: not yet)
    hole: bool
    current: bool  # EIP is here: it runs next
    last: bool  # the instruction of the last step


@dataclass(frozen=True, slots=True)
class LastStep:
    """The instruction that brought the VM to this step."""

    step: int
    eip: int
    text: str
    cls: InsnClass
    hole: bool
    cpl: int
    changes: tuple[tuple[str, int], ...]
    writes: tuple[MemoryWrite, ...]


@dataclass(frozen=True, slots=True)
class EventRow:
    step: int
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class TranslationView:
    """One fragment of the translation cache: the guest block and the code that runs."""

    fragment: int
    guest: tuple[tuple[int, str, str], ...]  # (address, instruction, ident/rewritten/…)
    code: tuple[tuple[int, str, bool], ...]  # (TC address, instruction, starts a guest one)
    here: int | None  # the CPU's EIP, when it is inside this fragment
    why: str  # how this fragment was chosen


@dataclass(frozen=True, slots=True)
class VmView:
    """One VM at one step."""

    name: str
    guest: str
    mode: str
    step: int
    end: int | None
    state: str
    exit_detail: str
    language: str  # "nasm" (source lines) or "disassembly"
    code: tuple[CodeRow, ...]
    last: LastStep | None
    registers: Registers
    console: str
    events: tuple[EventRow, ...]
    counts: dict[str, int]
    spark: tuple[int, ...]
    spark_bucket: int
    ram: tuple[int, int]  # host-physical (start, size) of this VM's RAM
    isolation: int  # isolation events so far
    annotation: str
    replay: bool
    aligned: bool  # the engine's trace agrees with its step count
    translation: TranslationView | None  # binary translation only
    cache: CacheView | None
    screen: Screen  # the VGA text screen at this step
    uses_screen: bool  # the guest has written to it (else the pane needs no room)
    interrupts: InterruptsView | None = None  # the 8259, the local and I/O APICs
    snapshots: tuple[tuple[int, str, int, bool], ...] = ()  # (depth, name, step, current)
    paging: PagingView | None = None  # the MMU for one address (the page tables pane)
    cycles: CycleCount | None = None  # the cost model's price of the run so far


@dataclass(frozen=True, slots=True)
class LessonView:
    """The lesson being followed, at its current stop."""

    title: str
    index: int  # of the stop shown
    count: int  # stops in all
    text: str
    go: str  # how the stop got here ("next hole")
    problems: tuple[str, ...]  # what the engine shows that the stop did not expect


@dataclass(frozen=True, slots=True)
class HostView:
    """The host's clock: a real host running the session's VMs round-robin."""

    step: int  # host steps: guest instructions run for all the VMs
    quantum: int
    switches: int  # world switches so far
    running: int | None  # the VM on the CPU (index into `Snapshot.vms`)


@dataclass(frozen=True, slots=True)
class Snapshot:
    vms: tuple[VmView, ...]
    focus: int
    running: bool
    speed: int  # instructions per second in run mode
    busy: str = ""  # what the engine is doing, when it takes a while
    host_size: int = 0
    kinds: tuple[str, ...] = ()  # event kinds known, for the filter
    hidden: frozenset[str] = field(default_factory=frozenset)  # kinds filtered out
    lesson: LessonView | None = None
    host: HostView | None = None  # on the host's clock

    @property
    def vm(self) -> VmView:
        return self.vms[self.focus]


# ---------------------------------------------------------------------- building
def cpu_views(vm: Vm) -> tuple[CpuView, CpuView]:
    """(guest-visible, real) registers of a VM as it is now."""
    machine, executor = vm.machine, vm.executor
    real_state = machine.state()
    system = machine.system_state()
    real = CpuView(real_state, machine.cpl, system.gdtr, system.idtr)
    if not executor.monitored:  # bare metal: the guest owns the real CPU
        return real, real
    guest_state = executor.virtual_state()
    guest_state.eip = executor.guest_eip_running()  # in translated code: whose it is
    gdtr, idtr = executor.guest_tables()
    return CpuView(guest_state, executor.guest_cpl(), gdtr, idtr), real


def registers(now: tuple[CpuView, CpuView], before: tuple[CpuView, CpuView] | None) -> Registers:
    if before is None:
        return Registers(*now)
    return Registers(*now, _changed(before[0], now[0]), _changed(before[1], now[1]))


def _changed(before: CpuView, now: CpuView) -> frozenset[str]:
    old, new = before.values(), now.values()
    return frozenset(name for name, value in new.items() if old[name] != value and name != "eip")


def guest_code(vm: Vm) -> Callable[[int, int], bytes]:
    """Reads the guest's code at its linear addresses, through the guest's own page tables.
    On bare metal those are the CPU's; under a monitor the CPU runs on the monitor's (a
    shadow filled as pages are touched; under bt translated code, which never fetches the
    guest's page), where a paging kernel's code may not be mapped at all."""
    executor = vm.executor
    if isinstance(executor, TrapAndEmulate):
        return executor.guest_memory.peek
    return vm.machine.code


def vm_view(
    tm: TimeMachine,
    listing: Listing,
    regs: Registers,
    hidden: frozenset[str],
    running: bool,
    walk: int | None = None,
) -> VmView:
    """One VM as the panes show it; `running`: the engine is in run mode (the VM's state,
    read by the status line and the VMs pane alike, then says so until the VM stops);
    `walk`: the linear address the page tables pane was asked for (else EIP or the last
    write)."""
    vm, recording, step = tm.vm, tm.recording, tm.position
    eip = regs.guest.state.eip
    last = _last_step(tm)
    read = guest_code(vm)
    rows = listing.window(eip, read, CODE_CONTEXT, CODE_CONTEXT)
    code = []
    for r in rows:
        tag, hole = recording.tag(r.address, step) or (None, False)
        ran_last = last is not None and r.address == last.eip
        insn = last.text if last is not None and ran_last else instruction(r.address, read)
        code.append(
            CodeRow(
                r.address,
                visible(r.text),
                r.line,
                visible(insn),
                tag,
                hole,
                r.address == eip,
                ran_last,
            )
        )
    bucket, spark = _spark(tm)
    stopped = vm.exit is not None and vm.exit.final
    return VmView(
        name=visible(tm.name),
        guest=visible(tm.image.name),
        mode=tm.mode,
        step=step,
        end=tm.end,
        state=vm.state if stopped else _live_state(step, running),
        exit_detail=visible(vm.exit.detail) if stopped and vm.exit else "",
        language=listing.language,
        code=tuple(code),
        last=last,
        registers=regs,
        console=visible(bytes(vm.console[-CONSOLE_TAIL:]).decode("latin-1"), lines=True),
        events=_events(tm, hidden),
        counts=tm.class_counts(),
        spark=spark,
        spark_bucket=bucket,
        ram=(tm.home.machine.ram.start, tm.home.machine.ram.size),
        isolation=recording.count("isolation", step + 1),
        annotation=visible(recording.annotations.get(step, "")),
        replay=tm.replay,
        aligned=recording.aligned,
        translation=_translation(vm, regs),
        cache=_cache(vm),
        screen=(screen := vm.screen()),
        uses_screen=not screen.blank,
        interrupts=vm.irqs.view(),
        paging=_paging(tm, last, eip, walk),
        cycles=vm.cycles(),
    )


def _paging(tm: TimeMachine, last: LastStep | None, eip: int, walk: int | None) -> PagingView:
    """The page tables for the address asked for, else the last step's write, else EIP."""
    if walk is not None:
        address, why = walk, "asked for"
    elif last is not None and last.writes:
        address, why = last.writes[-1].address, "last write"
    else:
        address, why = eip, "EIP"
    return tm.vm.executor.paging().view(address, why, tm.home.machine.ram.start)


def _live_state(step: int, running: bool) -> VmState:
    if running:
        return VmState.RUNNING
    return VmState.PAUSED if step else VmState.CREATED


def _translation(vm: Vm, regs: Registers) -> TranslationView | None:
    tc = vm.executor.introspect()
    eip = regs.real.state.eip
    found = None if tc is None else tc.around(eip, regs.guest.state.eip, TC_LINES)
    if found is None:
        return None
    view, why = found
    fragment = view.fragment
    here = eip if fragment.tc_start <= eip < fragment.tc_end else None
    return TranslationView(fragment.id, view.guest, view.tc, here, why)


def _cache(vm: Vm) -> CacheView | None:
    tc = vm.executor.introspect()
    return None if tc is None else tc.cache_view()


def _last_step(tm: TimeMachine) -> LastStep | None:
    r = tm.last_record()
    if r is None:
        return None
    return LastStep(
        r.step, r.insn.eip, r.insn.text, r.cls, r.hole, r.cpl, tuple(r.changes.items()), r.writes
    )


def _spark(tm: TimeMachine) -> tuple[int, tuple[int, ...]]:
    """Trapped instructions per bucket over the last SPARK_BUCKETS buckets."""
    step = tm.position
    trapped = InsnClass.TRAPPED.value
    bucket = _round_up(max(100, -(-step // SPARK_BUCKETS)))
    counts = []
    for stop in range(step, max(step - SPARK_BUCKETS * bucket, 0), -bucket):
        counts.append(tm.recording.class_counts(stop, max(stop - bucket, 0))[trapped])
    return bucket, tuple(reversed(counts))


def _round_up(n: int) -> int:
    """The next 1, 2 or 5 × 10^k at or above n: buckets a reader can take in."""
    scale = 1
    while True:
        for digit in (1, 2, 5):
            if digit * scale >= n:
                return digit * scale
        scale *= 10


def _events(tm: TimeMachine, hidden: frozenset[str]) -> tuple[EventRow, ...]:
    recording, step = tm.recording, tm.position
    # A VM halted at this step wakes with an interrupt at this same step, but only once it
    # runs on: that delivery belongs to the next step (and `seek` stops before it).
    waiting = tm.vm.executor.waiting_for_interrupt
    rows: list[EventRow] = []
    for event in recording.events_before(step + 1, EVENT_ROWS * 4):
        kind = event.KIND
        woke = waiting and event.step == step and isinstance(event, InterruptDelivered)
        if kind not in hidden and not woke:
            rows.append(EventRow(event.step, kind, visible(describe(event))))
    if EventKind.HOLE not in hidden:
        holes = recording.holes
        for index in range(max(0, bisect_right(holes, step - 1) - EVENT_ROWS), len(holes)):
            if holes[index] >= step:
                break
            insn = recording.instruction_at(holes[index])
            assert insn is not None, "a hole is a traced step"
            text = f"⚠ {insn.text} at {insn.eip:08x} ran directly, unseen: a hole"
            rows.append(EventRow(holes[index] + 1, EventKind.HOLE, text))
    if EventKind.NOTE not in hidden:
        notes = recording.annotations.items()
        rows += [EventRow(s, EventKind.NOTE, f"✎ {visible(t)}") for s, t in notes if s <= step]
    rows.sort(key=lambda row: row.step)
    return tuple(rows[-EVENT_ROWS:])


def host_view(timeline: HostTimeline, position: int) -> HostView:
    turn = timeline.turn_at(position)
    switches = 0 if turn is None else turn  # the first turn is no switch
    return HostView(position, timeline.quantum, switches, timeline.running_at(position))


def switch_rows(timeline: HostTimeline, position: int, vm: int, kind: str) -> list[EventRow]:
    """The world switches by `position` in which VM `vm` got or lost the CPU, at its own
    steps (the events pane lists a VM's events by its steps)."""
    rows: list[EventRow] = []
    turns = timeline.turns
    last = timeline.turn_at(position)
    for index in range(last or 0, 0, -1):
        turn, before = turns[index], turns[index - 1]
        why = f"{turn.reason}, host step {turn.host_start:,}"
        if turn.vm == vm and before.vm != vm:
            rows.append(
                EventRow(turn.vm_start, kind, f"⇄ gets the CPU from {turn.previous} ({why})")
            )
        elif before.vm == vm and turn.vm != vm:
            left = before.vm_start + turn.host_start - before.host_start
            to = timeline.names[turn.vm]
            rows.append(EventRow(left, kind, f"⇄ leaves the CPU to {to} ({why})"))
        if len(rows) >= EVENT_ROWS // 4:
            break
    return rows


def describe(event: Event) -> str:
    """One line about an event, for the events pane."""
    match event:
        case Trap():
            detail = f" — {event.detail}" if event.detail else ""
            return f"#{event.vector} {event.text} at {event.eip:08x}: {event.outcome}{detail}"
        case InterruptDelivered():
            irq = f" (IRQ {event.irq})" if event.irq is not None else ""
            return (
                f"{event.source} {event.vector:#x}{irq}: {event.from_eip:08x} → "
                f"handler {event.handler:08x}"
            )
        case PortAccess():
            arrow = "←" if event.write else "→"
            device = event.device or "unassigned"
            direction = "out" if event.write else "in"
            return f"{direction} {event.port:#06x} {arrow} {event.value:#x} ({device})"
        case ConsoleOutput():
            return event.text.rstrip("\n")  # shown with its control characters visible
        case IsolationViolation():
            return (
                f"{event.kind} {event.address:#010x} by {event.text} at {event.eip:08x}: "
                f"{event.detail}"
            )
        case VmStateChanged():
            return f"{event.state}" + (f": {event.reason}" if event.reason else "")
        case FragmentTranslated():
            return (
                f"#{event.fragment}: {event.instructions} instructions at {event.guest_start:08x}"
                f" → TC {event.tc_start:08x}–{event.tc_end:08x}"
            )
        case FragmentChained():
            return f"#{event.source} now jumps straight to #{event.target}"
        case FragmentInvalidated():
            where = f"{event.guest_start:08x}"
            return f"#{event.fragment} ({where}): its page was written at {event.written:08x}"
        case TranslationCacheFlushed():
            return "the cache was full: every fragment dropped"
        case Callout():
            return f"{event.text} at {event.eip:08x}: emulated by the monitor"
        case PageFaultHandled():
            true = event.outcome == "true"
            to_guest = f", error code {event.error_code:#x}: to the guest" if true else ""
            where = f"{event.address:08x} from {event.eip:08x}"
            return f"{event.outcome} page fault at {where}{to_guest}"
    return type(event).__name__
