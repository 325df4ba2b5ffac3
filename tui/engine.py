"""The engine thread: the only code that touches the VMs while the UI runs.

The UI submits commands (step, back, run, seek…); this thread executes them one at a time on
the time machines, and after each one (and ~30 times a second in run mode) publishes an
immutable `Snapshot`. The app applies the latest snapshot when it is told one is ready, so
the UI never waits for the engine and never sees a VM half-way through a step.

Every VM of a session shares one clock (`clock.py`); the engine moves it on the commands'
behalf, records ahead with progress when a search needs it, and runs run mode's frames.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import assert_never

from hypervisor.encap.snapshots import SnapshotError
from hypervisor.encap.state import SuspendError
from hypervisor.events import EventKind
from hypervisor.guest.image import GuestImage
from hypervisor.guest.symbols import NO_SYMBOLS, SymbolTable, symbols_of
from hypervisor.machine.hostram import HostRam
from hypervisor.text import visible
from hypervisor.trace import tracefile
from hypervisor.trace.timetravel import Goal, TimeMachine
from hypervisor.vmm.contract import DEFAULT_RAM, Mode
from hypervisor.vmm.inputs import Input, InputDevice, InputScript
from lessons.branches import Branches
from lessons.cursor import Cursor
from lessons.lesson import Lesson
from tui.clock import Lane, SharedClock
from tui.engine_commands import (
    Annotate,
    Back,
    Clock,
    Command,
    DeleteSnapshot,
    FastForward,
    Filter,
    Focus,
    LessonStop,
    Next,
    Pause,
    Previous,
    RevertSnapshot,
    Run,
    Save,
    Seek,
    SendInput,
    SetMode,
    Speed,
    Step,
    TakeSnapshot,
    Walk,
)
from tui.model import (
    EVENT_ROWS,
    LessonView,
    Snapshot,
    VmView,
    host_view,
    registers,
    switch_rows,
    vm_view,
)
from tui.targets import TargetError, addresses_of

FRAME = 1 / 30  # seconds between snapshots in run mode
SPEEDS = (10, 100, 1_000, 10_000, 100_000, 1_000_000)  # instructions per second
DEFAULT_SPEED = 1_000
CHUNK = 2_000  # instructions per engine call in long searches
WORK = 0.008  # seconds of engine work between looks at the clock in run mode
MIN_CHUNK = 20
ENGINE_SHARE = 0.5  # of each frame of run mode, for the engine's work
FAST_FRAME = 0.1  # seconds a fast-forward runs between two snapshots: the panes follow it
# ten times a second, and making and painting a snapshot costs it a small share of its speed
HIDDEN: frozenset[str] = frozenset({EventKind.IO})  # port accesses are many: on request
FAST_AHEAD = 50_000  # a seek further than this past the frontier fast-forwards
TRAIL = 2_000  # steps traced before where a fast-forward stops: what led there, classified

Publish = Callable[[Snapshot], None]
Notify = Callable[[str, str], None]  # (message, severity)


@dataclass(frozen=True)
class _Prepare:
    """Idle time after a paint (not a command: publishes nothing)."""


@dataclass(frozen=True)
class _Quit:
    """The session ends."""


@dataclass
class Session:
    """What to open: guests in modes, or one recording to replay."""

    vms: list[tuple[GuestImage, Mode]] = field(default_factory=list)
    replay: tracefile.Trace | None = None
    lesson: Lesson | None = None  # opened with the lesson's guests, at its first stop
    breakpoints: tuple[str, ...] = ()  # opened fast-forwarded to the first (address or name)
    ram_size: int = DEFAULT_RAM  # of each VM (a replay's is the recording's)

    @property
    def vm_ram(self) -> int:
        return self.replay.recording.ram_size if self.replay else self.ram_size


class Engine:
    def __init__(self, session: Session, publish: Publish, notify: Notify) -> None:
        self._publish_to = publish
        # what a notification says may come from a file or a guest (a name, an error)
        self._notify: Notify = lambda message, severity: notify(visible(message), severity)
        count = max(1, len(session.vms))
        # a head, a cursor and a spare per lane
        self.host = HostRam(3 * count * session.vm_ram)
        self.clock = SharedClock()
        self._session = session
        self.running = False
        self.speed = DEFAULT_SPEED
        self.hidden = HIDDEN
        self.busy = ""
        self.walk: int | None = None  # the address the page tables pane was asked for
        self._rate = 20_000.0  # steps per second run mode last achieved
        self._submitted = 0  # commands submitted (UI thread) …
        self._done = 0  # … and done and published (engine thread)
        self._opened = False
        self.failed = ""  # why the guests could not start (the UI then has nothing to show)
        self._cursor = None if session.lesson is None else Cursor(session.lesson)
        self._next_frame = 0.0  # when the next frame of run mode is due
        self._queue: queue.Queue[Command | _Prepare | _Quit] = queue.Queue()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._main, name="vmlab-engine", daemon=True)

    # ------------------------------------------------------------------ UI side
    def start(self) -> None:
        self._thread.start()

    def submit(self, command: Command) -> None:
        """Queue a command (from the UI thread). `Pause` also stops a long search."""
        self._submitted += 1
        if isinstance(command, Pause):
            self._cancel.set()
        self._queue.put(command)

    @property
    def settled(self) -> bool:
        """Every command submitted so far is done and published, and nothing runs."""
        return self._opened and self._done == self._submitted and not self.running

    def painted(self) -> None:
        """The screen shows the last snapshot (UI thread): the engine may use the pause
        before the next key to prepare (`TimeMachine.prepare`). Not a command: it publishes
        nothing and gives way to any command that comes."""
        self._queue.put(_Prepare())

    def symbols(self) -> SymbolTable:
        """The focused guest's symbols (UI thread: an image and its table never change)."""
        lanes = self.clock.lanes
        return symbols_of(lanes[self.clock.focus].tm.image) if lanes else NO_SYMBOLS

    def stop(self) -> None:
        self._queue.put(_Quit())
        self._thread.join(timeout=2)

    # ------------------------------------------------------------------ engine thread
    def _main(self) -> None:
        try:
            self._open()
        except Exception as err:  # a guest that cannot start: say why (the UI ends)
            self.failed = f"cannot start: {err}"
            self._notify(self.failed, "error")
            return
        if self._session.lesson is not None:
            self._do_lesson(1)
        if self._session.breakpoints:
            try:
                self._break_at(self._session.breakpoints)
            except Exception as err:  # as for any command: say it, keep the session
                self.busy = ""
                self._notify(f"--break failed: {type(err).__name__}: {err}", "error")
        self._publish()
        self._opened = True
        while True:
            wait = max(0.0, self._next_frame - time.perf_counter()) if self.running else None
            try:
                command = self._queue.get(timeout=wait)
            except queue.Empty:
                self._next_frame = time.perf_counter() + FRAME  # frames start FRAME apart
                self._run_frame()
                continue
            if isinstance(command, _Quit):
                return
            if isinstance(command, _Prepare):
                self._prepare()
                continue
            try:
                self._execute(command)
            except Exception as err:  # an engine bug must not kill the session silently
                self.running = False
                name = type(command).__name__.lower()
                self._notify(f"{name} failed: {type(err).__name__}: {err}", "error")
            self._publish()
            self._done += 1

    def _open(self) -> None:
        replay = self._session.replay
        if replay is not None:
            name = f"{replay.image.name}/{replay.mode}"
            tm = TimeMachine(
                replay.image, replay.mode, name=name, host=self.host, recording=replay.recording
            )
            self.clock.lanes = [Lane.of(tm)]
            problems = tm.verify()
            if problems:
                why = "; ".join(problems)
                self._notify(f"this replay differs from its recording: {why}", "warning")
            return
        self.clock.lanes = [
            Lane.of(self._machine(image, mode)) for image, mode in self._session.vms
        ]
        if self._cursor is not None:  # a lesson's snapshots and inputs act on these lanes
            self._cursor.runs = [
                Branches(partial(self._machine, image, mode), lane.tm)
                for (image, mode), lane in zip(self._session.vms, self.clock.lanes, strict=True)
            ]
            self._cursor.replaced = self._replaced

    def _replaced(self, index: int, tm: TimeMachine) -> None:
        """A lesson reverted VM `index`: its lane follows the new run (the tree stays)."""
        lane = Lane.of(tm)
        lane.tree = self.clock.lanes[index].tree
        self.clock.lanes[index] = lane

    def _machine(self, image: GuestImage, mode: str, given: tuple[Input, ...] = ()) -> TimeMachine:
        inputs = InputScript(given, interactive=True)  # the user may type at any time
        name = f"{image.name}/{mode}"
        ram = self._session.ram_size
        return TimeMachine(image, mode, name=name, host=self.host, inputs=inputs, ram_size=ram)

    def _publish(self) -> None:
        self._publish_to(self.snapshot())

    def snapshot(self) -> Snapshot:
        views: list[VmView] = []
        timeline = self.clock.on_host
        for index, lane in enumerate(self.clock.lanes):
            regs = registers(lane.cpus, lane.before)
            view = vm_view(lane.tm, lane.listing, regs, self.hidden, self.running, self.walk)
            if timeline is not None and EventKind.SWITCH not in self.hidden:
                rows = switch_rows(timeline, self.clock.position, index, EventKind.SWITCH)
                events = sorted((*view.events, *rows), key=lambda row: row.step)
                view = replace(view, events=tuple(events[-EVENT_ROWS:]))
            tree = tuple(
                (r.depth, r.snapshot.name, r.snapshot.step, r.current) for r in lane.tree.rows()
            )
            views.append(replace(view, snapshots=tree) if tree else view)
        kinds = {k for lane in self.clock.lanes for k in lane.tm.recording.event_kinds()}
        if timeline is not None:
            kinds.add(EventKind.SWITCH)
        return Snapshot(
            tuple(views),
            self.clock.focus,
            self.running,
            self.speed,
            self.busy,
            self.host.size,
            (*sorted(kinds), EventKind.HOLE, EventKind.NOTE),
            self.hidden,
            self._lesson_view(),
            None if timeline is None else host_view(timeline, self.clock.position),
        )

    def _lesson_view(self) -> LessonView | None:
        cursor = self._cursor
        if cursor is None or cursor.shown < 0:
            return None
        stop, lesson = cursor.stop, cursor.lesson
        return LessonView(
            visible(lesson.title),
            cursor.shown,
            len(lesson.stops),
            visible(stop.text, lines=True),
            str(stop.go),
            cursor.problems,
        )

    # ------------------------------------------------------------------ moving the clock
    def _record_until(self, step: int, why: str, lane: int | None = None) -> bool:
        """Record a VM (the focused one by default) ahead to `step`, publishing progress;
        False if the user cancelled (escape)."""
        tm = self.clock.lanes[self.clock.focus if lane is None else lane].tm
        while tm.frontier < tm.clamp(step):
            if self._cancel.is_set():
                self.busy = ""
                return False
            self.busy = f"{why}: recording step {tm.frontier:,}…"
            self._publish()
            before = tm.frontier
            tm.extend(min(tm.frontier + CHUNK * 5, step))
            if tm.frontier == before:
                break  # the guest sleeps until the user types
        self.busy = ""
        return True

    def _record_to_next(self, lane: int, kind: str, after: int, why: str) -> bool:
        """Record VM `lane` ahead, in growing chunks with progress (most events are near),
        until its recording holds the next `kind` after its step `after`, or its run ends;
        False if the user cancelled."""
        tm, ahead = self.clock.lanes[lane].tm, CHUNK // 4
        while tm.recording.next_step(kind, after) is None and not tm.exhausted:
            if not self._record_until(tm.frontier + ahead, why, lane):
                return False
            ahead = min(ahead * 2, CHUNK * 25)
        return True

    def _run_frame(self) -> None:
        """One frame of run mode: a frame's worth of instructions at the chosen speed (or
        as many as fit in half a frame: the other half is the UI's, to show the last one),
        in chunks of ~WORK seconds, then a snapshot. Only the frame's last step reads the
        registers (twice, for the highlights)."""
        began = time.perf_counter()
        budget = max(2 * MIN_CHUNK, round(self._rate * FRAME * ENGINE_SHARE))  # keeps measuring
        target = self.clock.position + min(max(1, round(self.speed * FRAME)), budget)
        while (
            self.clock.position < target - 1 and time.perf_counter() - began < FRAME * ENGINE_SHARE
        ):
            chunk = min(target - 1 - self.clock.position, max(MIN_CHUNK, round(self._rate * WORK)))
            started = time.perf_counter()
            self.clock.skip(self.clock.position + chunk)
            self._rate = chunk / max(time.perf_counter() - started, 1e-4)
        self.clock.goto(self.clock.position + 1)
        if self.clock.at_end:
            self.running = False
        self._publish()

    def _prepare(self) -> None:
        """Idle time: each VM gets ready to step back without waiting (not in run mode, and
        never ahead of a waiting command)."""
        if self.running:
            return
        waiting = self._queue.qsize
        for lane in self.clock.lanes:
            if waiting():
                return
            lane.tm.prepare(cancelled=lambda: waiting() > 0)

    # ------------------------------------------------------------------ commands
    def _execute(self, command: Command) -> None:
        match command:
            case Step(count):
                self._do_step(count)
            case Back(count):
                self._do_back(count)
            case Seek(step):
                self._do_seek(step)
            case FastForward(goal):
                self._do_fastforward(goal)
            case Run():
                self._do_run()
            case Pause():
                self._do_pause()
            case Speed(change):
                self._do_speed(change)
            case Next(kind):
                self._do_next(kind)
            case Previous(kind):
                self._do_previous(kind)
            case Focus(change):
                self._do_focus(change)
            case SetMode(mode):
                self._do_mode(mode)
            case Clock():
                self._do_clock()
            case LessonStop(change):
                self._do_lesson(change)
            case Annotate(text):
                self._do_annotate(text)
            case Filter(hidden):
                self._do_filter(hidden)
            case Save(path):
                self._do_save(path)
            case TakeSnapshot(name) | RevertSnapshot(name) | DeleteSnapshot(name):
                self._do_snapshot(command, name)
            case SendInput(device, text):
                self._do_input(device, text)
            case Walk(address):
                self.walk = address
            case _:
                assert_never(command)

    def _do_step(self, count: int) -> None:
        self.running = False
        self.clock.goto(self.clock.position + count)

    def _do_back(self, count: int) -> None:
        self.running = False
        self.clock.goto(self.clock.position - count)

    def _do_seek(self, step: int) -> None:
        self.running = False
        clock = self.clock
        tm = clock.lanes[clock.focus].tm
        if not clock.host_clock and not tm.replay and step > tm.frontier + FAST_AHEAD:
            self._do_fastforward(Goal(step))
        elif clock.host_clock or self._record_until(step, f"going to step {step:,}"):
            clock.goto(step)

    def _do_fastforward(self, goal: Goal) -> None:
        """Fast-forward the focused VM (untraced, at full speed, the panes following it
        live) to a step, the next time it is about to run a breakpoint, or right after the
        next event of a kind; the other VMs follow to the same step. Behind the frontier
        the recording is searched first (a replay's is all there is)."""
        self.running = False
        clock = self.clock
        tm = clock.lanes[clock.focus].tm
        if clock.host_clock:
            why = "the host's clock (c: each VM's own)"
            self._notify(f"fast-forward records ahead: not on {why}", "information")
            return
        found = self._recorded_goal(tm, goal)
        if found is None and tm.replay:
            self._notify(f"not in the recording after step {tm.position:,}", "information")
            return
        idle = False
        while found is None and not tm.exhausted and not idle:
            if self._cancel.is_set():
                break
            found = tm.fast_forward(goal, FAST_FRAME, after=tm.position, trail=TRAIL)
            idle = tm.idle
            self._follow(tm.frontier)
            self.busy = f"fast-forward: step {tm.frontier:,}…"
            self._publish()
        self.busy = ""
        if found is None and idle:
            self._notify(
                f"fast-forward: at step {tm.frontier:,} the guest waits for input "
                "(type into the screen or console pane)",
                "information",
            )
        elif found is None:
            what = "the end of the run" if tm.exhausted else f"step {tm.frontier:,}"
            self._notify(f"fast-forward: not found before {what}", "information")
        if found is None:
            found = tm.frontier
        self._follow(found)
        clock.goto_keeping_focus(found)

    def _break_at(self, names: tuple[str, ...]) -> None:
        """Fast-forward to the first of the breakpoints given on the command line."""
        try:
            addresses = frozenset().union(*(addresses_of(n, self.symbols()) for n in names))
        except TargetError as err:
            self._notify(f"--break: {err}", "error")
            return
        self._do_fastforward(Goal(breakpoints=addresses))

    def _recorded_goal(self, tm: TimeMachine, goal: Goal) -> int | None:
        """Where the goal is met in what is recorded already, after the position."""
        recording, after = tm.recording, tm.position
        found = [recording.next_execution(a, after) for a in goal.breakpoints]
        if goal.kind is not None:
            found.append(recording.next_step(goal.kind, after))
        if goal.step is not None and goal.step <= tm.frontier:
            found.append(goal.step)
        steps = [s for s in found if s is not None]
        return min(steps) if steps else None

    def _follow(self, step: int) -> None:
        """The other VMs fast-forwarded to `step` too (they keep the shared clock), then
        every VM there without re-reading registers (between frames of a fast-forward)."""
        for index, lane in enumerate(self.clock.lanes):
            if index != self.clock.focus and not lane.tm.replay and step > lane.tm.frontier:
                lane.tm.fast_forward(Goal(step))
        self.clock.skip(step)

    def _do_run(self) -> None:
        self.running = not self.running and not self.clock.at_end
        if self.clock.at_end:
            self._notify("the run has ended: step back, or go to a step (g)", "information")

    def _do_pause(self) -> None:
        self.running = False
        self._cancel.clear()

    def _do_speed(self, change: int) -> None:
        index = min(len(SPEEDS) - 1, max(0, SPEEDS.index(self.speed) + change))
        self.speed = SPEEDS[index]

    def _do_next(self, kind: str) -> None:
        self.running = False
        if kind == EventKind.SWITCH:
            self._to_switch(after=True)
            return
        tm = self.clock.lanes[self.clock.focus].tm
        if not self._record_to_next(
            self.clock.focus, kind, tm.position, f"looking for the next {kind}"
        ):
            return
        found = tm.recording.next_step(kind, tm.position)
        clock = None if found is None else self.clock.clock_of(self.clock.focus, found)
        if clock is None:
            self._notify(f"no {kind} after step {tm.position:,}", "information")
            return
        self.clock.goto_keeping_focus(clock)

    def _do_previous(self, kind: str) -> None:
        self.running = False
        if kind == EventKind.SWITCH:
            self._to_switch(after=False)
            return
        found = self.clock.lanes[self.clock.focus].tm.previous_step(kind)
        clock = None if found is None else self.clock.clock_of(self.clock.focus, found)
        if clock is None:
            where = self.clock.lanes[self.clock.focus].tm.position
            self._notify(f"no {kind} before step {where:,}", "information")
            return
        self.clock.goto_keeping_focus(clock)

    def _to_switch(self, after: bool) -> None:
        """To the next (or previous) world switch, on the host's clock."""
        timeline = self.clock.on_host
        if timeline is None:
            self._notify("world switches are on the host's clock: press c", "information")
            return
        now = self.clock.position
        found = timeline.switch_after(now) if after else timeline.switch_before(now)
        if found is None:
            where = "after" if after else "before"
            self._notify(f"no world switch {where} host step {now:,}", "information")
            return
        self.clock.goto(found)

    def _do_clock(self) -> None:
        """Between the VMs' own steps (side by side, in lock-step) and the host's clock: the
        VMs of one real host taking turns on its CPU, a world switch at each turn."""
        self.running = False
        if len(self.clock.lanes) < 2 or any(lane.tm.replay for lane in self.clock.lanes):
            self._notify("the host's clock needs two VMs or more (not a replay)", "information")
            return
        self.clock.use_clock(not self.clock.host_clock)

    def _do_focus(self, change: int) -> None:
        self.clock.focus = (self.clock.focus + change) % len(self.clock.lanes)

    def _do_mode(self, mode: Mode | None) -> None:
        """Restart the focused VM in another mode (the next one by default), from step 0."""
        self.running = False
        lane = self.clock.lanes[self.clock.focus]
        if lane.tm.replay:
            self._notify("a replay keeps the mode it was recorded in", "warning")
            return
        modes = list(Mode)
        mode = mode or modes[(modes.index(Mode(lane.tm.mode)) + 1) % len(modes)]
        image = lane.tm.image
        lane.tm.close()
        self.clock.lanes[self.clock.focus] = Lane.of(self._machine(image, mode))
        if self.clock.timeline is not None:  # a host of other VMs now: made again when asked for
            self.clock.timeline.close()
            self.clock.timeline, self.clock.host_clock = None, False
        self.clock.goto(0)

    def _do_lesson(self, change: int) -> None:
        """To the next (or previous) stop of the lesson, checked against what it expects."""
        self.running = False
        cursor = self._cursor
        if cursor is None:
            return
        self.clock.use_clock(cursor.lesson.clock == "host")
        machines, timeline = [lane.tm for lane in self.clock.lanes], self.clock.on_host
        index, reach = cursor.reach(change, machines, timeline, self._record_ahead)
        if reach.target is None:
            if reach.problem:
                self._notify(f"lesson: {reach.problem}", "warning")
            return
        self.clock.focus = cursor.lesson.stops[index].vm  # the VM the stop is about, whoever runs
        self.clock.goto_keeping_focus(reach.target)
        cursor.show(index, machines, timeline, self.clock.position)

    def _record_ahead(self, lane: int, kind: str, after: int) -> bool:
        return self._record_to_next(lane, kind, after, f"lesson: looking for the next {kind}")

    def _do_annotate(self, text: str) -> None:
        tm = self.clock.lanes[self.clock.focus].tm
        if text:
            tm.recording.annotations[tm.position] = text
        else:
            tm.recording.annotations.pop(tm.position, None)

    def _do_input(self, device: InputDevice, text: str) -> None:
        """Keys typed or bytes sent by the user: they reach the focused guest where its
        recording ends (the step the head runs at)."""
        tm = self.clock.lanes[self.clock.focus].tm
        if not tm.send(device, text):
            self._notify("a replay shows the input it recorded: it takes no more", "warning")
        elif tm.position < tm.frontier:
            where = f"step {tm.frontier:,}, where the recording ends"
            self._notify(f"{device} input for {tm.name}: it arrives at {where}", "information")

    def _do_filter(self, hidden: frozenset[str]) -> None:
        self.hidden = hidden

    def _do_snapshot(
        self, command: TakeSnapshot | RevertSnapshot | DeleteSnapshot, name: str
    ) -> None:
        """Snapshots are the engine's (hypervisor/encap/snapshots.py). Reverting goes to the
        snapshot's step through the time machine, which is the snapshot's state exactly
        (runs are deterministic; tests/test_snapshots.py compares the two)."""
        lane = self.clock.lanes[self.clock.focus]
        try:
            if isinstance(command, TakeSnapshot):
                taken = lane.tree.take(lane.tm.vm, name)
                self._notify(
                    f"snapshot {name} of {lane.tm.name} at step {taken.step:,}", "information"
                )
            elif isinstance(command, DeleteSnapshot):
                lane.tree.delete(name)
            else:
                step = lane.tree[name].step
                lane.tree.current = name
                self.running = False
                self.clock.goto(step)
        except (SnapshotError, SuspendError) as err:
            self._notify(str(err), "warning")

    def _do_save(self, path: str) -> None:
        tm = self.clock.lanes[self.clock.focus].tm
        trace = tracefile.Trace(tm.image, tm.mode, tm.limit, tm.recording)
        tracefile.save(Path(path), trace)
        self._notify(f"saved {len(tm.recording):,} steps of {tm.name} to {path}", "information")
