"""Where a lesson's stops land in real runs, and whether the engine shows what they expect
there. The UI's engine lands each stop with `land` and checks it with `check`; `walk` does
the whole lesson without a UI (`vmlab lesson NAME --walk`, and the tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hypervisor.events import EventKind, PageFaultHandled
from hypervisor.guest.image import GuestImage, load_for_mode
from hypervisor.trace.hosttimeline import HostTimeline
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.inputs import Input, InputScript
from lessons.branches import Branches
from lessons.lesson import Go, Lesson, SnapshotVerb, Stop


@dataclass(frozen=True)
class Landing:
    index: int
    stop: Stop
    step: int  # the stop's VM's step there
    last: str  # the instruction that brought it there, and how it ran
    problems: tuple[str, ...]  # what the engine shows that the stop did not expect


def land(
    tm: TimeMachine, go: Go, now: int, timeline: HostTimeline | None = None, vm: int = 0
) -> int | None:
    """The clock's reading `go` leads to from `now` (recording ahead if needed), searching
    VM `vm` (`tm`); None when there is no such place. On the host's clock (`timeline`)
    readings are host steps; otherwise steps of the VMs."""
    match go.verb:
        case "start":
            return 0
        case "step":
            return go.count
        case "forward":
            return now + go.count
    if timeline is not None and go.argument == EventKind.SWITCH:
        return timeline.switch_after(now) if go.verb == "next" else timeline.switch_before(now)
    own = now if timeline is None else timeline.steps_at(now)[vm]
    search = tm.next_step if go.verb == "next" else tm.previous_step
    found = search(go.argument, own)
    return found if found is None or timeline is None else timeline.host_step_of(vm, found)


def missing(go: Go, now: int, host: bool = False) -> str:
    where = "after" if go.verb == "next" else "before"
    return f"no {go.argument} {where} {'host step' if host else 'step'} {now:,}"


def last_instruction(tm: TimeMachine) -> str:
    record = tm.last_record()
    if record is None:
        return "nothing has run yet"
    hole = ", a hole" if record.hole else ""
    return f"{record.insn.text} at {record.insn.eip:08x} ({record.cls.value}{hole})"


def check(stop: Stop, tm: TimeMachine, on_cpu: bool | None = None) -> list[str]:
    """What the engine shows at `tm`'s position that `stop` did not expect (`on_cpu`: on
    the host's clock, whether this VM has the CPU)."""
    expect, problems = stop.expect, []
    record = tm.last_record()
    if record is None:
        if expect.keys() & {"last", "class", "hole"}:
            problems.append("no instruction has run yet")
    else:
        last = str(expect.get("last", "")).lower()
        if last and last not in record.insn.text.lower():
            problems.append(f"the last instruction is {record.insn.text!r}, not {last!r}")
        if "class" in expect and record.cls.value != expect["class"]:
            problems.append(f"it ran {record.cls.value}, not {expect['class']}")
        if "hole" in expect and record.hole != expect["hole"]:
            problems.append("it is a hole" if record.hole else "it is not a hole")
    console = str(expect.get("console", ""))
    if console and console not in bytes(tm.vm.console).decode("latin-1"):
        problems.append(f"the console does not show {console!r}")
    if "state" in expect and tm.vm.state != expect["state"]:
        problems.append(f"the VM is {tm.vm.state}, not {expect['state']}")
    if "fault" in expect:
        at = tm.position
        events = tm.recording.events_before(at + 1, 64)
        outcomes = {e.outcome for e in events if isinstance(e, PageFaultHandled) and e.step == at}
        if expect["fault"] not in outcomes:
            seen = ", ".join(sorted(outcomes)) or "none"
            problems.append(f"no {expect['fault']} page fault at this step (seen: {seen})")
    if "cpu" in expect and on_cpu != expect["cpu"]:
        problems.append("the VM has the CPU" if on_cpu else "the VM does not have the CPU")
    return problems


def on_cpu(timeline: HostTimeline | None, host_step: int, vm: int) -> bool | None:
    """Whether VM `vm` has the host's CPU at `host_step` (None off the host's clock)."""
    return None if timeline is None else timeline.running_at(host_step) == vm


def images(lesson: Lesson) -> list[tuple[GuestImage, Mode]]:
    """The lesson's guests, each in its mode (the ported build under pv)."""
    return [(load_for_mode(guest, mode), mode) for guest, mode in lesson.guests]


def walk(lesson: Lesson) -> Iterator[Landing]:
    """Each stop of the lesson in turn, landed on fresh VMs (one per guest and mode, all at
    the same step, as in the UI), its snapshots taken and reverted to, its inputs given."""
    runs = [Branches.start(_maker(image, mode)) for image, mode in images(lesson)]
    machines = [run.tm for run in runs]
    timeline = HostTimeline.of(machines) if lesson.clock == "host" else None
    now = 0
    try:
        for index, stop in enumerate(lesson.stops):
            run = runs[stop.vm]
            problems = revert(stop, run)
            if run.tm is not machines[stop.vm]:
                machines[stop.vm], now = run.tm, run.tm.position
            tm = run.tm
            target = land(tm, stop.go, now, timeline, stop.vm)
            if target is None:
                problem = missing(stop.go, now, timeline is not None)
                yield Landing(index, stop, tm.position, "", (*problems, problem))
                continue
            now = target
            steps = [now] * len(machines) if timeline is None else timeline.steps_at(now)
            for machine, step in zip(machines, steps, strict=True):
                machine.seek(step)
            problems += take_and_give(stop, run)
            problems += tuple(check(stop, tm, on_cpu(timeline, now, stop.vm)))
            yield Landing(index, stop, tm.position, last_instruction(tm), problems)
    finally:
        for run in runs:
            run.close()
        if timeline is not None:
            timeline.close()


def revert(stop: Stop, run: Branches) -> tuple[str, ...]:
    """A stop's revert, done before it lands: what differs from the snapshot (nothing)."""
    if stop.snapshot is None or stop.snapshot.verb is not SnapshotVerb.REVERT:
        return ()
    return run.revert(stop.snapshot.name)


def take_and_give(stop: Stop, run: Branches) -> tuple[str, ...]:
    """A stop's snapshot and input, done where it landed: the problems, if any."""
    problems = []
    if stop.snapshot is not None and stop.snapshot.verb is SnapshotVerb.TAKE:
        problems.append(run.take(stop.snapshot.name))
    if stop.input is not None:
        problems.append(run.give(stop.input))
    return tuple(p for p in problems if p)


def _maker(image: GuestImage, mode: Mode) -> Callable[[tuple[Input, ...]], TimeMachine]:
    def make(inputs: tuple[Input, ...]) -> TimeMachine:
        name = f"{image.name}/{mode}"
        return TimeMachine(image, mode, name=name, inputs=InputScript(inputs))

    return make
