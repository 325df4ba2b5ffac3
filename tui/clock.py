"""The session's one clock: every VM at the step `position` (or at its last one if its run
ended earlier), so two modes of the same guest side by side stay comparable instruction for
instruction — or, on the host's clock, every VM at the step it has reached when the host
has run `position` instructions of all of them, the VM on the CPU in the panes."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypervisor.encap.snapshots import SnapshotTree
from hypervisor.trace.hosttimeline import HostTimeline
from hypervisor.trace.timetravel import TimeMachine
from tui.listing import Listing
from tui.model import CpuView, cpu_views

VIEWS_KEPT = 4096  # steps whose registers a lane remembers


@dataclass
class Lane:
    """One VM of the session: its time machine and what the UI last saw of it."""

    tm: TimeMachine
    listing: Listing
    cpus: tuple[CpuView, CpuView]
    before: tuple[CpuView, CpuView] | None = None  # registers one step earlier
    synced: bool = True  # `cpus` and `before` are those of the time machine's position
    seen: dict[int, tuple[CpuView, CpuView]] = field(default_factory=dict)
    tree: SnapshotTree = field(default_factory=SnapshotTree)  # the VM's named snapshots

    @classmethod
    def of(cls, tm: TimeMachine) -> Lane:
        return cls(tm, Listing(tm.image), cpu_views(tm.vm))

    def views(self) -> tuple[CpuView, CpuView]:
        """The registers at the time machine's position, kept by step: runs are
        deterministic, so a step's registers never change, and stepping back finds the
        step before the new position's among them instead of going there too."""
        if len(self.seen) >= VIEWS_KEPT:
            self.seen.clear()
        views = self.seen[self.tm.position] = cpu_views(self.tm.vm)
        return views


class SharedClock:
    """The VMs of a session (their lanes) and where the clock stands."""

    def __init__(self) -> None:
        self.lanes: list[Lane] = []
        self.position = 0
        self.focus = 0
        self.timeline: HostTimeline | None = None  # the host's clock, once asked for
        self.host_clock = False  # the clock counts host steps (all VMs), not each VM's

    def clamp(self, target: int) -> int:
        """The shared clock stops when the last VM to finish has finished."""
        ends = [lane.tm.end for lane in self.lanes]
        if all(end is not None for end in ends):
            target = min(target, max(e for e in ends if e is not None))
        return max(0, target)

    @property
    def on_host(self) -> HostTimeline | None:
        """The host's timeline, while the clock is the host's."""
        return self.timeline if self.host_clock else None

    def _targets(self, target: int) -> tuple[int, list[int]]:
        """The clock's `target`, clamped, and each VM's step there: the same step for every
        VM, or on the host's clock the step each VM has reached by that host step."""
        if (timeline := self.on_host) is not None:
            target = timeline.clamp(target)
            steps = timeline.steps_at(target)
        else:
            target = self.clamp(target)
            steps = [target] * len(self.lanes)
        return target, [lane.tm.clamp(step) for lane, step in zip(self.lanes, steps, strict=True)]

    def goto(self, target: int) -> None:
        """Every VM to its step at `target` (or its last step), registers one step before too."""
        target, steps = self._targets(target)
        forward = target > self.position
        for lane, step in zip(self.lanes, steps, strict=True):
            tm = lane.tm
            if step == tm.position or (forward and step < tm.position):
                # There already, or beyond (translated code stops where it can); after a
                # skip in run mode: its registers, without highlights.
                if not lane.synced:
                    lane.before, lane.cpus, lane.synced = None, lane.views(), True
                continue
            before: tuple[CpuView, CpuView] | None
            if step == tm.position + 1:
                before = lane.cpus if lane.synced else lane.views()
            elif step > 0 and (before := lane.seen.get(step - 1)) is not None:
                pass
            elif step > 0 and tm.seek(step - 1) < step:
                before = lane.views()
            else:  # step 0, or translated code that could not stop before `step`
                before = None
            if tm.position != step:
                tm.seek(step)
            lane.before, lane.cpus, lane.synced = before, lane.views(), True
        self.position = target
        self._follow_cpu()

    def skip(self, target: int) -> None:
        """Every VM to its step at `target`, nothing else (run mode, between frames)."""
        self.position, steps = self._targets(target)
        for lane, step in zip(self.lanes, steps, strict=True):
            if step > lane.tm.position:  # a lane already past it (translated code) waits
                lane.tm.seek(step)
                lane.synced = False
        self._follow_cpu()

    def _follow_cpu(self) -> None:
        """On the host's clock the panes show the VM that has the CPU."""
        if (timeline := self.on_host) is not None:
            running = timeline.running_at(self.position)
            if running is not None:
                self.focus = running

    def clock_of(self, lane: int, step: int) -> int | None:
        """The clock's reading when VM `lane` is at its `step`."""
        timeline = self.on_host
        return step if timeline is None else timeline.host_step_of(lane, step)

    @property
    def at_end(self) -> bool:
        if (timeline := self.on_host) is not None:
            return timeline.finished and self.position >= timeline.reached
        return all(
            lane.tm.end is not None and lane.tm.position >= lane.tm.end for lane in self.lanes
        )

    def goto_keeping_focus(self, clock: int) -> None:
        """To what was found in the focused VM: the panes stay on it (on the host's clock,
        another VM may have the CPU by then)."""
        focus = self.focus
        self.goto(clock)
        self.focus = focus

    def use_clock(self, host: bool) -> None:
        """Switch clocks, keeping the focused VM at its step (the others move to theirs)."""
        if host == self.host_clock:
            return
        lane = self.lanes[self.focus]
        if not host:
            self.host_clock = False
            self.goto(lane.tm.position)
            return
        if self.timeline is None:
            self.timeline = HostTimeline.of([ln.tm for ln in self.lanes])
        self.host_clock = True
        # Where the host reaches this VM's step; the others move to theirs there, back or on.
        self.position = self.clock_of(self.focus, lane.tm.position) or 0
        self.goto(self.position)
