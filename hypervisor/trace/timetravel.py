"""Time travel: one guest in one mode, at any step of its run, by checkpoints and
deterministic re-execution.

Runs are deterministic (same image, mode and step count ⇒ same state), and `Vm.run(n)` stops
after exactly n retired instructions, so the state at step k is the state of the last
checkpoint at or before k, run forward to k. Checkpoints (`checkpoints.py`: the whole VM —
machine, devices, monitor — with RAM kept as changed pages) are taken every `interval` steps
by whichever VM first passes there: the head while it records, the cursor in a replay. A seek
then re-executes at most one interval: a trap-heavy run (syscalls under trap) that took up
to ~400 ms from the initial state now takes a few ms (benchmarks/bench_timetravel.py).

Two VMs do the work. The *head* runs traced at the frontier of the recording and is the only
one that records; the *cursor* serves every position behind the frontier: it runs forward,
and moves back by restoring a checkpoint. `vm` is whichever sits at `position`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hypervisor.guest.image import GuestImage
from hypervisor.machine.hostram import HostRam
from hypervisor.trace.checkpoints import CheckpointStore
from hypervisor.trace.recorder import Recorder, class_counts
from hypervisor.trace.recording import Recording, StepRecord, registers_of, same_run
from hypervisor.vmm.contract import DEFAULT_RAM
from hypervisor.vmm.inputs import Input, InputDevice, InputScript
from hypervisor.vmm.vm import Vm

DEFAULT_LIMIT = 1_000_000_000  # the longest run a time machine records (fast-forwarding)
EXTEND_CHUNK = 20_000  # how far a search for the next event records at a time
SLACK = 64  # steps short of a seek's target a stride may end late (bt ends fragments whole)
FAST_SLICE = 0.005  # seconds an untraced stride aims at: prompt to stop, cheap to call
MIN_FAST = 4_096  # steps of the first untraced stride (then sized by the measured rate)


@dataclass(frozen=True)
class Goal:
    """Where a fast-forward stops: at `step`, or before, the next time the guest is about to
    run an instruction at one of `breakpoints`, or right after the next event of `kind`."""

    step: int | None = None  # None: the end of the run
    breakpoints: frozenset[int] = frozenset()
    kind: str | None = None


class TimeMachine:
    """`seek`, `step`, `back` and event search over one VM's run; `vm` is the VM at
    `position`. With a `recording` (from a trace file) it replays that recording only."""

    def __init__(
        self,
        image: GuestImage,
        mode: str,
        *,
        name: str | None = None,
        host: HostRam | None = None,
        recording: Recording | None = None,
        limit: int = DEFAULT_LIMIT,
        checkpoints: CheckpointStore | None = None,
        inputs: InputScript | None = None,
        ram_size: int = DEFAULT_RAM,
    ) -> None:
        self.image = image
        self.mode = mode
        self.name = name or image.name
        self.host = host
        self.limit = limit
        self.ram_size = recording.ram_size if recording else ram_size
        self.checkpoints = CheckpointStore() if checkpoints is None else checkpoints
        # Every VM of this run gets the same inputs at the same steps; the head (created
        # first) is the script's live VM, which takes the inputs given "when it waits".
        replayed = InputScript.replaying(recording.events) if recording else None
        self.inputs: InputScript = replayed or inputs or InputScript()
        self._head: Vm | None = None
        self._recorder: Recorder | None = None
        if recording is None:
            self._head = self._new_vm()
            self._recorder = Recorder(self._head)
            recording = self._recorder.recording
        self.recording = recording
        self._cursor: Vm | None = None
        self._spare: Vm | None = None  # prepared one step behind the cursor (`prepare`)
        self._marks: dict[int, tuple[int, str]] = {}  # the recorder's mark at each checkpoint
        self._fast_rate = 0.0  # steps per second untraced strides last ran at
        self.idle = False  # the last fast-forward stopped: the guest runs nothing until input
        self.position = 0
        self.vm = self._head or self._cursor_at(0)
        if not len(self.checkpoints):  # the initial state: going back never builds a VM
            self._checkpoint(self.vm)

    # ------------------------------------------------------------------ where we can go
    @property
    def frontier(self) -> int:
        """Steps recorded so far."""
        return len(self.recording)

    @property
    def end(self) -> int | None:
        """The last step, once known (the guest stopped, the limit, or a replay's end)."""
        if self._recorder is None or self.recording.finished:
            return self.frontier
        return self.limit if self.frontier >= self.limit else None

    @property
    def home(self) -> Vm:
        """The VM that stands for this one in host memory: the head, which runs ahead and
        records (the cursor is a re-execution of it); in a replay, the only VM."""
        return self._head or self.vm

    @property
    def replay(self) -> bool:
        """Replaying a recording made elsewhere: nothing more can be recorded."""
        return self._recorder is None

    @property
    def exhausted(self) -> bool:
        """Nothing more can be recorded: the end of the run is in the recording."""
        end = self.end
        return end is not None and self.frontier >= end

    def clamp(self, step: int) -> int:
        end = self.end
        return max(0, step if end is None else min(step, end))

    # ------------------------------------------------------------------ moving
    def seek(self, step: int) -> int:
        """Go to `step` (clamped to the run); returns the step reached."""
        step = self.clamp(step)
        self.extend(step)
        if step == self.frontier and self._head is not None:
            self.vm = self._head
        else:
            self.vm = self._cursor_at(step)
        self.position = self.vm.step
        return self.position

    def step(self, count: int = 1) -> int:
        return self.seek(self.position + count)

    def back(self, count: int = 1) -> int:
        return self.seek(self.position - count)

    def next_step(self, kind: str, after: int | None = None) -> int | None:
        """The next step after `after` (`position` by default) where an event of `kind` has
        happened, recording further ahead if needed (until the end of the run); None if
        there is none."""
        after = self.position if after is None else after
        while (found := self.recording.next_step(kind, after)) is None:
            if self.exhausted:
                return None
            self.extend(self.frontier + EXTEND_CHUNK)
        return found

    def previous_step(self, kind: str, before: int | None = None) -> int | None:
        return self.recording.previous_step(kind, self.position if before is None else before)

    def class_counts(self) -> dict[str, int]:
        """Instructions by class up to `position`: the recording's, or inside a
        fast-forwarded stretch (which has counts only as a whole) the VM's own counters."""
        step = self.position
        skip = self.recording.skips.containing(step)
        if skip is None or step == skip.start:
            return self.recording.class_counts(step)
        return class_counts(self.vm)

    def last_record(self) -> StepRecord | None:
        """The recorded instruction that brought the VM to `position` (None at step 0)."""
        return self.recording.record(self.position - 1) if self.position else None

    def verify(self) -> list[str]:
        """Re-execute a whole recording and say where the run disagrees with it: an engine
        or image that changed since it was recorded shows here. Empty when it replays."""
        end, recorded = self.frontier, self.recording.exit
        vm = self._new_vm()
        try:
            # a run that ended by itself (halted: asleep for ever) is found to end only by
            # trying one step more, as the recording's own run found it
            ended = recorded is not None and recorded.final
            if end or ended:
                vm.run(end + 1 if ended else end)
            problems = []
            if vm.step != end:
                problems.append(f"the run stops at step {vm.step:,}, the recording at {end:,}")
            elif same_run(self.mode, registers_of(vm)) != same_run(
                self.mode, self.recording.registers_at(end)
            ):
                problems.append(f"the registers at step {end:,} differ from the recording")
            if recorded is not None and (vm.exit is None or vm.exit.reason != recorded.reason):
                problems.append(
                    f"the run ends with {vm.exit.reason if vm.exit else 'no exit'}, "
                    f"the recording with {recorded.reason}"
                )
            return problems
        finally:
            self._discard(vm)

    def extend(self, step: int) -> None:
        """Record up to `step` (clamped to the run), if not recorded yet, checkpointing the
        head on the way."""
        recorder = self._recorder
        while recorder is not None and self.frontier < self.clamp(step):
            if not self._run(recorder.vm, self.clamp(step), recorder.run):
                break  # the guest sleeps until input arrives (an interactive script)

    def fast_forward(
        self,
        goal: Goal,
        seconds: float = float("inf"),
        after: int | None = None,
        trail: int = 0,
    ) -> int | None:
        """Record ahead untraced, at full speed, towards `goal` for at most about `seconds`
        (the UI calls again to go on, showing the head in between); the recording gets a
        fast-forwarded stretch (`skips.py`) and traces again from where this stops. Returns
        the step where the goal was met (the frontier then), or None if not yet (or never:
        see `exhausted`). Breakpoints and events count after step `after` (by default where
        the head stands: the one it is at is not the next). The last `trail` steps before
        the goal are recorded traced, so that the instructions that led there are classified
        (for a goal met on the way, from the checkpoint before if that is later)."""
        recorder = self._recorder
        self.idle = False
        if recorder is None:
            return None
        head = recorder.vm
        target = self.clamp(self.limit if goal.step is None else goal.step)
        if target - trail > head.step:
            met = self._fast_forward(goal, target - trail, seconds, after, trail)
            if met is not None or head.step < target - trail:
                return met  # met on the way, or not there yet
        self.extend(target)
        return self.frontier

    def _fast_forward(
        self, goal: Goal, target: int, seconds: float, after: int | None, trail: int
    ) -> int | None:
        """Untraced strides to `target`; the step where the goal was met, if it was."""
        recorder = self._recorder
        assert recorder is not None
        head, store = recorder.vm, self.checkpoints
        began, start = time.perf_counter(), head.step
        if store.last_step < head.step and not _stopped(head):
            self._checkpoint(head)  # so that a goal met inside this stretch is found again
        after = head.step if after is None else after
        try:
            return self._strides(goal, target, began, seconds, after, trail)
        finally:
            self.recording.skips.merge_from(start)

    def _strides(
        self, goal: Goal, target: int, began: float, seconds: float, after: int, trail: int
    ) -> int | None:
        recorder = self._recorder
        assert recorder is not None
        head, store, start = recorder.vm, self.checkpoints, recorder.vm.step
        while head.step < target and not _stopped(head):
            recorder.hits.clear()
            count = min(target - head.step, self._fast_stride(store, head.step))
            stride_start, clock = head.step, time.perf_counter()
            exact = head.step + count + SLACK >= target  # the last stride ends at the target
            recorder.fast_forward(count, goal.breakpoints, exact=exact)
            elapsed = time.perf_counter() - clock
            self._fast_rate = (head.step - stride_start) / max(elapsed, 1e-6)
            store.ran(stride_start, elapsed)
            met = self._met(goal, after, recorder.hits)
            if met is not None:
                return self._rewind(met, start, trail) if met < head.step or trail else met
            if head.step == stride_start:  # halted with no timer: only input wakes it
                self.idle = True
                break
            if store.due(head.step) and not _stopped(head):
                self._checkpoint(head)
            if time.perf_counter() - began >= seconds:
                break
        return None

    def _met(self, goal: Goal, after: int, hits: list[int]) -> int | None:
        """The first step after `after` where the last stride met the goal (an earlier
        stride would have stopped)."""
        found = [step for step in hits if step > after]
        if goal.kind is not None:
            event = self.recording.next_event(goal.kind, after)
            if event is not None:
                found.append(event)
        return min(found) if found else None

    def _rewind(self, step: int, start: int, trail: int) -> int:
        """The head ran past `step` in an untraced stride: put it back there exactly (from
        the checkpoint before, which this fast-forward took or passed), forgetting what it
        recorded since the checkpoint, which it records again on the way. Returns the step
        reached: the head's own if no checkpoint of it lies inside this fast-forward, from
        step `start` (the store thinned them out)."""
        recorder = self._recorder
        assert recorder is not None
        head = recorder.vm
        usable = [
            c
            for c in (self.checkpoints.nearest(step - trail), self.checkpoints.nearest(step))
            if c is not None and c.step in self._marks and c.step >= start
        ]
        if not usable:  # the store thinned out the checkpoints of this stretch
            return head.step
        checkpoint = usable[0]
        self.checkpoints.restore(head, checkpoint)
        recorder.rewind(self._marks[checkpoint.step])
        if step - trail > head.step:
            recorder.fast_forward(step - trail - head.step)
        if step > head.step:
            recorder.run(step - head.step)
        return head.step

    def _fast_stride(self, store: CheckpointStore, now: int) -> int:
        """Steps for an untraced stride of about FAST_SLICE seconds (or to the next
        checkpoint, where they are placed by steps)."""
        if store.interval:
            return store.stride(now, self.limit)
        return max(MIN_FAST, round(self._fast_rate * FAST_SLICE))

    def _checkpoint(self, vm: Vm) -> None:
        self.checkpoints.take(vm)
        if self._recorder is not None and vm is self._recorder.vm:
            self._marks[vm.step] = self._recorder.mark()

    # ------------------------------------------------------------------ machinery
    def prepare(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Idle-time work: put a VM other than `vm` at the step before `position`, so that
        stepping back is a swap rather than a restore and a re-execution (the UI calls this
        while its user reads the screen; `cancelled` says when a command is waiting)."""
        target = self.position - 1
        if target < 0:
            return
        if self.vm is self._head:  # the cursor is free
            self._cursor = self._bring(self._cursor, target, cancelled)
        else:
            self._spare = self._bring(self._spare, target, cancelled)

    def _cursor_at(self, step: int) -> Vm:
        spare, cursor = self._spare, self._cursor
        if spare is not None and spare.step == step and (cursor is None or cursor.step != step):
            self._cursor, self._spare = spare, cursor  # prepared there: a swap
        self._cursor = self._bring(self._cursor, step)
        return self._cursor

    def _bring(self, vm: Vm | None, step: int, cancelled: Callable[[], bool] = lambda: False) -> Vm:
        """`vm` (a new VM if None) at `step`: run on if it is a little behind, else restored
        from the nearest checkpoint and run on."""
        checkpoint = self.checkpoints.nearest(step)
        # A VM not behind the checkpoint before that one runs on: at most two checkpoints'
        # worth of re-execution, and no restore (after which unicorn translates anew).
        earlier = checkpoint and self.checkpoints.nearest(checkpoint.step - 1)
        behind = vm is None or (earlier is not None and vm.step < earlier.step)
        if vm is None or vm.step > step or behind:
            if checkpoint is None:
                self._discard(vm)
                vm = None
            vm = vm or self._new_vm()
            if checkpoint is not None:
                self.checkpoints.restore(vm, checkpoint)
        moving = vm
        while moving.step < step and not _stopped(moving) and not cancelled():
            if not self._run(moving, step, lambda n: _stride(moving, n, step), untraced=True):
                break
        return vm

    def _run(
        self, vm: Vm, target: int, run: Callable[[int], object], untraced: bool = False
    ) -> bool:
        """One stride of `vm` towards `target` with `run`, then a checkpoint if one is due.
        False when the VM did not move. An untraced stride is sized by the rate untraced
        runs reach (a re-execution of millions of steps in strides of STRIDE would spend
        more on the calls than on the guest)."""
        store = self.checkpoints
        began, start = vm.step, time.perf_counter()
        count = store.stride(began, target)
        if untraced and not store.interval:
            count = min(target - began, max(count, self._fast_stride(store, began)))
        run(count)
        elapsed = time.perf_counter() - start
        store.ran(began, elapsed)
        if untraced and vm.step > began:
            self._fast_rate = (vm.step - began) / max(elapsed, 1e-6)
        if store.due(vm.step) and not _stopped(vm):
            self._checkpoint(vm)
        return vm.step != began

    def send(self, device: InputDevice, text: str) -> bool:
        """Input from the user now: it reaches the guest at the frontier of the recording
        (where the head runs), and every re-execution gets it at that step. False in a
        replay, which can only show the inputs it recorded."""
        if self.replay:
            return False
        self.inputs.add(Input(device, text, self.frontier))
        return True

    def _new_vm(self) -> Vm:
        return Vm(
            self.image,
            self.mode,
            name=self.name,
            ram_size=self.ram_size,
            host=self.host,
            inputs=self.inputs,
        )

    def _discard(self, vm: Vm | None) -> None:
        if vm is not None and self.host is not None:
            self.host.free(vm.machine.ram)

    def close(self) -> None:
        """Give the VMs' memory back to the host."""
        for vm in (self._cursor, self._spare, self._head):
            self._discard(vm)
        self._cursor = self._spare = self._head = None


def _stride(vm: Vm, count: int, target: int) -> None:
    """Run `vm` on by `count` towards `target`. A stride well short of the target may end a
    few instructions late (binary translation runs whole fragments). The one that ends at
    the target runs its last SLACK steps traced, unless the CPU counts every instruction: the
    tracer stops at the very instruction, inside the fragments the run was using (untraced,
    bt would step through one-instruction fragments to get there)."""
    end = vm.step + count
    if end + SLACK < target:
        vm.run(count, quantum=True)
        return
    if vm.executor.counts_each_instruction:  # it stops exactly at no cost
        vm.run(count)
        return
    if count > SLACK:
        vm.run(count - SLACK, quantum=True)
    if not _stopped(vm) and vm.step < end:
        vm.run(end - vm.step, trace=True)


def _stopped(vm: Vm) -> bool:
    """The guest stopped for good: nothing runs after this step."""
    return vm.exit is not None and vm.exit.final
