"""Fast-forward (issue 13.7): a recording may run untraced to a step, a breakpoint or the next
event of a kind; its events stay exact, its counts by class come from the monitor, and time
travel over it stays exact (checkpoints and re-execution)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.machine.cpu import CpuState
from hypervisor.machine.machine import MONITOR_BASE
from hypervisor.trace import tracefile
from hypervisor.trace.recording import StepRecord
from hypervisor.trace.timetravel import Goal, TimeMachine
from hypervisor.vmm.vm import Vm

SPAN = 25_000
TRACED = 2_000  # traced before the fast-forward
GUEST_VISIBLE = {"trap", "interrupt", "io", "console", "isolation", "state"}
RUNS = [("timer", "native"), ("timer", "trap"), ("syscalls", "bt")]


@pytest.fixture(scope="module")
def traced() -> Iterator[Callable[[str, str], TimeMachine]]:
    """Traced reference recordings, made once per module (and freed after it)."""
    machines: dict[tuple[str, str], TimeMachine] = {}

    def get(guest: str, mode: str) -> TimeMachine:
        if (guest, mode) not in machines:
            machines[guest, mode] = TimeMachine(load_guest(guest), mode)
            machines[guest, mode].extend(SPAN)
        return machines[guest, mode]

    yield get
    for machine in machines.values():
        machine.close()


def fast(guest: str, mode: str, goal: Goal) -> TimeMachine:
    machine = TimeMachine(load_guest(guest), mode)
    machine.extend(TRACED)
    machine.fast_forward(goal)
    return machine


def guest_events(events: list) -> list:
    """The events the guest causes (the translation cache's own depend on where runs
    stopped: bt translates and chains where it is entered)."""
    return [e for e in events if e.KIND in GUEST_VISIBLE]


def straight(guest: str, mode: str, step: int) -> CpuState:
    vm = Vm(load_guest(guest), mode)
    if step:
        vm.run(step)
    return vm.executor.virtual_state()


@pytest.mark.parametrize(("guest", "mode"), RUNS)
def test_a_fast_forwarded_recording_has_the_events_and_counts_of_a_traced_one(traced, guest, mode):
    reference = traced(guest, mode).recording
    machine = fast(guest, mode, Goal(SPAN - TRACED))
    assert machine.frontier == SPAN - TRACED
    machine.extend(SPAN)  # and traced again after it
    recording = machine.recording
    assert len(recording) == SPAN and len(recording.skips) >= 1
    if mode == "bt":
        assert guest_events(recording.events) == guest_events(reference.events)
    else:
        assert recording.events == reference.events
    assert recording.class_counts(SPAN) == reference.class_counts(SPAN)
    assert recording.record(SPAN // 2) is None  # no per-instruction columns in the stretch
    for step in (TRACED - 2, SPAN - TRACED, SPAN - 1):
        ours, theirs = recording.record(step), reference.record(step)
        if mode == "bt":  # the real registers in the translation cache depend on the stops
            assert (ours.insn, ours.cls) == (theirs.insn, theirs.cls)
        else:
            assert ours == theirs


@pytest.mark.parametrize(("guest", "mode"), RUNS)
def test_seeking_into_a_fast_forwarded_stretch_is_exact(guest, mode):
    machine = fast(guest, mode, Goal(SPAN))
    for step in (SPAN // 2, TRACED + 1, SPAN - 3, 17, SPAN // 3):
        assert machine.seek(step) == step
        assert machine.vm.executor.virtual_state() == straight(guest, mode, step)


@pytest.mark.parametrize("mode", ["trap", "bt"])  # bt: the kernel runs as translated code
def test_a_breakpoint_stops_the_next_time_the_instruction_is_about_to_run(traced, mode):
    reference = traced("timer", mode).recording
    # an instruction of the kernel that runs again and again after the traced start
    later = [reference.record(s) for s in range(TRACED + 5_000, TRACED + 5_100)]
    address = next(r.insn.eip for r in later if r.cpl == 0)
    expected = next(s for s in range(TRACED + 1, SPAN) if reference.record(s).insn.eip == address)
    machine = fast("timer", mode, Goal(SPAN, breakpoints=frozenset({address})))
    assert machine.frontier == expected
    assert machine.vm.executor.virtual_state().eip == address  # about to run it
    machine.extend(expected + 100)  # traced from there: the very same steps
    assert machine.recording.record(expected).insn == reference.record(expected).insn
    for step in range(expected, expected + 100):
        assert seen(machine.recording.record(step), mode) == seen(reference.record(step), mode)
    if mode == "bt":
        events = guest_events(machine.recording.events)
        assert events == guest_events(reference.events)[: len(events)]
    else:
        assert machine.recording.events == reference.events[: len(machine.recording.events)]


def seen(record: StepRecord | None, mode: str) -> object:
    """A step as the guest sees it: under bt the real EIP and the stores of translated
    code into the vCPU area depend on the translation cache's layout."""
    if record is None or mode != "bt":
        return record
    changes = {r: v for r, v in record.changes.items() if r != "eip" or record.cpl == 3}
    writes = tuple(w for w in record.writes if w.address < MONITOR_BASE)
    return record.insn, record.cls, record.hole, record.cpl, changes, writes


def test_a_fast_forward_can_trace_the_steps_that_led_to_its_goal(traced):
    reference = traced("timer", "trap").recording
    address = reference.record(SPAN - 100).insn.eip
    expected = reference.next_execution(address, TRACED + 3_000)
    machine = TimeMachine(load_guest("timer"), "trap")
    machine.extend(TRACED)
    goal = Goal(SPAN, breakpoints=frozenset({address}))
    assert machine.fast_forward(goal, after=TRACED + 3_000, trail=500) == expected
    recording = machine.recording
    assert recording.traced_end == expected  # traced up to the goal …
    assert all(recording.record(s) == reference.record(s) for s in range(expected - 500, expected))
    assert recording.record(expected - 501) is None  # … and only those


def test_fast_forward_to_the_next_event_of_a_kind_stops_right_after_it(traced):
    reference = traced("timer", "native").recording
    expected = reference.next_step("console", TRACED)
    machine = fast("timer", "native", Goal(SPAN, kind="console"))
    assert expected is not None and machine.frontier == expected
    assert machine.vm.executor.virtual_state() == straight("timer", "native", expected)


def test_a_trace_file_keeps_the_fast_forwarded_stretches_and_replays_exactly(tmp_path):
    machine = fast("timer", "trap", Goal(SPAN))
    path = tmp_path / "ff.vmtrace"
    tracefile.save(path, tracefile.Trace(machine.image, "trap", machine.limit, machine.recording))
    trace = tracefile.load(path)
    assert trace.recording.skips.items == machine.recording.skips.items
    replay = TimeMachine(trace.image, "trap", recording=trace.recording)
    assert replay.verify() == []
    assert replay.seek(SPAN // 2) == SPAN // 2
    assert replay.vm.executor.virtual_state() == straight("timer", "trap", SPAN // 2)


def test_steps_map_to_columns_around_stretches_end_to_end():
    from hypervisor.trace.skips import Skip, Skips

    # columns 0-9 traced, steps 10-29 skipped in two pieces, then columns 10-14 (steps 30-34)
    skips = Skips([Skip(10, 20, 10, 0, (), ()), Skip(20, 30, 10, 0, (), ())])
    assert [skips.column(s) for s in (0, 9, 10, 25, 29, 30, 34)] == [0, 9, None, None, None, 10, 14]
    assert [skips.column_from(s) for s in (9, 10, 19, 20, 29, 30)] == [9, 10, 10, 10, 10, 10]
    assert [skips.step(c) for c in (0, 9, 10, 14)] == [0, 9, 30, 34]
    assert skips.skipped == 20 and skips.between(0, 30) == skips.items
    skips.merge_from(10)
    assert skips.items == [Skip(10, 30, 10, 0, (), ())] and skips.column(30) == 10
