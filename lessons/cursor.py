"""A lesson being followed: which stop is shown, and where every stop reached so far landed.

Each stop goes on from where the one before it landed, whatever the user did in between, so
a lesson always shows the same places. The front end (the UI's engine) owns the VMs and
moves them; the cursor says where to go and what the stop shown did not expect there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hypervisor.events import EventKind
from hypervisor.trace.hosttimeline import HostTimeline
from hypervisor.trace.timetravel import TimeMachine
from lessons.branches import Branches
from lessons.lesson import Lesson, Stop
from lessons.walk import check, land, missing, on_cpu, revert, take_and_give

# Record VM `vm` ahead until its recording holds the next `kind` after its step `after`
# (with progress, cancellable): False if the user cancelled.
RecordAhead = Callable[[int, str, int], bool]


@dataclass(frozen=True)
class Reach:
    """Where going to a stop leads: the clock's reading, or None with the reason (empty
    when the search was cancelled)."""

    target: int | None
    problem: str = ""


@dataclass
class Cursor:
    """With `runs` (one per VM, the front end's time machines in them), stops take
    snapshots, revert to them and give input; `replaced` tells the front end the time
    machine a revert put in place of VM N's. A revert abandons the run before it: going
    back over it finds the reverted run."""

    lesson: Lesson
    shown: int = -1  # the stop shown (-1: none yet)
    problems: tuple[str, ...] = ()  # what the stop shown did not expect
    landed: list[int] = field(default_factory=list)  # where each stop reached so far landed
    runs: list[Branches] = field(default_factory=list)
    replaced: Callable[[int, TimeMachine], None] = lambda vm, tm: None
    acted: dict[int, tuple[str, ...]] = field(default_factory=dict)  # stop -> its problems

    @property
    def stop(self) -> Stop:
        return self.lesson.stops[self.shown]

    def reach(
        self,
        change: int,
        machines: Sequence[TimeMachine],
        timeline: HostTimeline | None,
        record_ahead: RecordAhead,
    ) -> tuple[int, Reach]:
        """The stop `change` stops away from the one shown (kept within the lesson), and
        where it lands: every stop before it is landed first, in order."""
        index = min(max(self.shown + change, 0), len(self.lesson.stops) - 1)
        machines = list(machines)
        while len(self.landed) <= index:
            stop = self.lesson.stops[len(self.landed)]
            now = self.landed[-1] if self.landed else 0
            run = self.runs[stop.vm] if self.runs else None
            acted = revert(stop, run) if run is not None else ()
            if run is not None and run.tm is not machines[stop.vm]:
                machines[stop.vm], now = run.tm, run.tm.position
                self.replaced(stop.vm, run.tm)
            if stop.go.verb == "next" and stop.go.argument != EventKind.SWITCH:
                own = timeline.steps_at(now)[stop.vm] if timeline else now
                if not record_ahead(stop.vm, stop.go.argument, own):
                    return index, Reach(None)
            target = land(machines[stop.vm], stop.go, now, timeline, stop.vm)
            if target is None:
                return index, Reach(None, missing(stop.go, now, timeline is not None))
            if run is not None and (stop.snapshot is not None or stop.input is not None):
                run.tm.seek(target)  # snapshots are on each VM's own steps: target is one
                acted += take_and_give(stop, run)
            self.acted[len(self.landed)] = acted
            self.landed.append(target)
        return index, Reach(self.landed[index])

    def show(
        self, index: int, machines: Sequence[TimeMachine], timeline: HostTimeline | None, at: int
    ) -> None:
        """Stop `index` is shown, the machines moved to where it landed (clock reading `at`):
        check what they show against what it expects."""
        self.shown = index
        stop = self.stop
        checked = check(stop, machines[stop.vm], on_cpu(timeline, at, stop.vm))
        self.problems = (*self.acted.get(index, ()), *checked)
