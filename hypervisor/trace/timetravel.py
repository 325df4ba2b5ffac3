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

from hypervisor.guest.image import GuestImage
from hypervisor.machine.hostram import HostRam
from hypervisor.trace.checkpoints import CheckpointStore
from hypervisor.trace.recording import Recorder, Recording, StepRecord, registers_of
from hypervisor.vmm.contract import DEFAULT_RAM
from hypervisor.vmm.inputs import Input, InputDevice, InputScript
from hypervisor.vmm.vm import Vm

DEFAULT_LIMIT = 20_000_000  # the longest run a time machine records (as `vmlab run`)
EXTEND_CHUNK = 20_000  # how far a search for the next event records at a time
SLACK = 64  # steps short of a seek's target a stride may end late (bt ends fragments whole)


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
    ) -> None:
        self.image = image
        self.mode = mode
        self.name = name or image.name
        self.host = host
        self.limit = limit
        self.ram_size = recording.ram_size if recording else DEFAULT_RAM
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
        self.position = 0
        self.vm = self._head or self._cursor_at(0)
        if not len(self.checkpoints):  # the initial state: going back never builds a VM
            self.checkpoints.take(self.vm)

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

    def last_record(self) -> StepRecord | None:
        """The recorded instruction that brought the VM to `position` (None at step 0)."""
        return self.recording.record(self.position - 1) if self.position else None

    def verify(self) -> list[str]:
        """Re-execute a whole recording and say where the run disagrees with it: an engine
        or image that changed since it was recorded shows here. Empty when it replays."""
        end = self.frontier
        vm = self._new_vm()
        try:
            if end:
                vm.run(end)
            problems = []
            if vm.step != end:
                problems.append(f"the run stops at step {vm.step:,}, the recording at {end:,}")
            elif registers_of(vm) != self.recording.registers_at(end):
                problems.append(f"the registers at step {end:,} differ from the recording")
            recorded = self.recording.exit
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
            if not self._run(moving, step, lambda n: _stride(moving, n, step)):
                break
        return vm

    def _run(self, vm: Vm, target: int, run: Callable[[int], object]) -> bool:
        """One stride of `vm` towards `target` with `run`, then a checkpoint if one is due.
        False when the VM did not move."""
        store = self.checkpoints
        began, start = vm.step, time.perf_counter()
        run(store.stride(began, target))
        store.ran(began, time.perf_counter() - start)
        if store.due(vm.step) and not _stopped(vm):
            store.take(vm)
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
