"""Where a lesson's stops land in real runs, and whether the engine shows what they expect
there. The UI's engine lands each stop with `land` and checks it with `check`; `walk` does
the whole lesson without a UI (`vmlab lesson NAME --walk`, and the tests)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from hypervisor.guest.image import GuestImage, load_guest
from hypervisor.trace.timetravel import TimeMachine
from lessons.lesson import Go, Lesson, Stop


@dataclass(frozen=True)
class Landing:
    index: int
    stop: Stop
    step: int  # the stop's VM's step there
    last: str  # the instruction that brought it there, and how it ran
    problems: tuple[str, ...]  # what the engine shows that the stop did not expect


def land(tm: TimeMachine, go: Go, now: int) -> int | None:
    """The step `go` leads to from step `now` of `tm`'s run (recording ahead if needed);
    None when there is no such step."""
    match go.verb:
        case "start":
            return 0
        case "step":
            return go.count
        case "forward":
            return now + go.count
        case "next":
            return tm.next_step(go.argument, now)
        case _:
            return tm.previous_step(go.argument, now)


def missing(go: Go, now: int) -> str:
    return f"no {go.argument} {'after' if go.verb == 'next' else 'before'} step {now:,}"


def last_instruction(tm: TimeMachine) -> str:
    record = tm.recording.record(tm.position - 1) if tm.position else None
    if record is None:
        return "nothing has run yet"
    hole = ", a hole" if record.hole else ""
    return f"{record.insn.text} at {record.insn.eip:08x} ({record.cls.value}{hole})"


def check(stop: Stop, tm: TimeMachine) -> list[str]:
    """What the engine shows at `tm`'s position that `stop` did not expect."""
    expect, problems = stop.expect, []
    record = tm.recording.record(tm.position - 1) if tm.position else None
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
    return problems


def images(lesson: Lesson) -> list[tuple[GuestImage, str]]:
    """The lesson's guests, each in its mode (the ported build under pv)."""
    return [(load_guest(guest, paravirtual=mode == "pv"), mode) for guest, mode in lesson.guests]


def walk(lesson: Lesson) -> Iterator[Landing]:
    """Each stop of the lesson in turn, landed on fresh VMs (one per guest and mode, all at
    the same step, as in the UI)."""
    machines = [
        TimeMachine(image, mode, name=f"{image.name}/{mode}") for image, mode in images(lesson)
    ]
    now = 0
    try:
        for index, stop in enumerate(lesson.stops):
            tm = machines[stop.vm]
            target = land(tm, stop.go, now)
            if target is None:
                yield Landing(index, stop, tm.position, "", (missing(stop.go, now),))
                continue
            now = target
            for machine in machines:
                machine.seek(target)
            problems = tuple(check(stop, tm))
            yield Landing(index, stop, tm.position, last_instruction(tm), problems)
    finally:
        for machine in machines:
            machine.close()
