"""Recording, time travel and trace files, on real guests through the public API and CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypervisor.guest.image import load_guest
from hypervisor.machine.machine import MONITOR_BASE
from hypervisor.trace import tracefile
from hypervisor.trace.recorder import Recorder
from hypervisor.trace.recording import registers_of
from hypervisor.trace.timetravel import Goal, TimeMachine
from hypervisor.trace.tracefile import TraceFileError
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm
from tests.test_clock import _under, each_clock

FLAGS = load_guest("flags")
HELLO = load_guest("hello")
POPF_HOLE = 4080  # flags under trap: the step right after the first POPF hole


def fresh(image, mode: str, steps: int) -> Vm:
    vm = Vm(image, mode)
    if steps:
        vm.run(steps)
    return vm


@pytest.fixture(scope="module")
def flags_trap() -> TimeMachine:
    machine = TimeMachine(FLAGS, "trap")
    machine.extend(20_000)
    return machine


def test_a_recording_takes_at_most_64_bytes_per_instruction(flags_trap):
    recording = flags_trap.recording
    assert len(recording) == 20_000
    assert recording.nbytes() / len(recording) <= 64


def test_every_step_is_recorded_with_its_instruction_class_and_hole(flags_trap):
    popf = flags_trap.recording.record(POPF_HOLE - 1)
    assert popf.insn.text == "popfd" and popf.cls == "direct" and popf.hole
    cli = flags_trap.recording.record(4076)
    assert cli.insn.text == "cli" and cli.cls == "trapped" and not cli.hole
    assert popf.insn.raw == b"\x9d" and popf.changes["esp"] == cli.changes.get("esp", 0x400000)


@pytest.mark.parametrize("mode", ["native", "trap"])
def test_recorded_registers_are_those_of_a_fresh_run_to_the_same_step(mode):
    machine = TimeMachine(HELLO, mode)
    machine.extend(3000)
    for step in (0, 1, 2, 17, 500, 1234, 2999, 3000):
        assert machine.recording.registers_at(step) == registers_of(fresh(HELLO, mode, step))
    eips = [machine.recording.registers_at(s)[8] for s in range(0, 3000, 7)]
    assert eips == [machine.recording.record(s).insn.eip for s in range(0, 3000, 7)]


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap"])
@each_clock
def test_a_fetch_fault_keeps_the_recording_in_step_with_a_straight_run(
    kind: str, mode: str, clock_env: pytest.MonkeyPatch
) -> None:
    # pagefault.asm jumps to a missing page: the jump retires, the #PF comes before
    # anything at its target began, and the next step is the handler's first instruction
    _under(clock_env, kind)
    image = load_guest(str(Path(__file__).parent / "guests" / "pagefault.asm"))
    machine = TimeMachine(image, mode)
    machine.extend(10_000)
    recording = machine.recording
    jump = next(s for s in range(len(recording)) if recording.record(s).insn.text == "jmp eax")
    handler = recording.record(jump + 1)
    assert handler.insn.text == "push eax"  # page_fault's first instruction
    for step in range(jump - 1, jump + 4):
        assert recording.registers_at(step) == registers_of(fresh(image, mode, step))
        assert recording.record(step).insn.eip == recording.registers_at(step)[8]
    machine.close()


def test_memory_writes_are_recorded_with_their_step(flags_trap):
    push = next(
        flags_trap.recording.record(s)
        for s in range(100)
        if flags_trap.recording.record(s).insn.text.startswith("push")
    )
    (write,) = push.writes
    assert write.size == 4 and write.address == push.changes["esp"]


def test_seek_reaches_the_state_of_a_fresh_run_forward_and_back(flags_trap):
    for step in (POPF_HOLE, 100, 19_999, 20_000, 5, POPF_HOLE):
        flags_trap.seek(step)
        reference = fresh(FLAGS, "trap", step)
        assert flags_trap.vm.step == step
        assert registers_of(flags_trap.vm) == registers_of(reference)
        assert flags_trap.vm.console == reference.console


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["step", "back", "seek"]), st.integers(0, 400))))
def test_any_walk_through_time_ends_where_a_fresh_run_would(moves):
    machine = TimeMachine(HELLO, "trap")
    for move, amount in moves:
        getattr(machine, move)(amount)
    reference = fresh(HELLO, "trap", machine.position)
    assert registers_of(machine.vm) == registers_of(reference)
    assert machine.vm.console == reference.console


def test_a_recording_does_not_depend_on_how_the_run_was_stepped():
    whole = Recorder(Vm(FLAGS, "trap"))
    whole.run(6000)
    stepped = Recorder(Vm(FLAGS, "trap"))
    for count in [1] * 50 + [7, 333, 1, 4000] + [1] * 20:
        stepped.run(count)
    stepped.run(6000 - stepped.vm.step)
    for field in ("ids", "classes", "cpls", "reg_masks", "reg_values", "mem_steps", "holes"):
        assert getattr(whole.recording, field) == getattr(stepped.recording, field), field
    assert whole.recording.events == stepped.recording.events


def test_next_and_previous_find_instruction_kinds_and_events(flags_trap):
    machine = flags_trap
    machine.seek(0)
    hole = machine.next_step("hole")
    assert hole == POPF_HOLE
    machine.seek(hole)
    assert machine.previous_step("trapped") == 4077  # the CLI before it
    assert machine.recording.record(4076).insn.text == "cli"
    first_trapped = machine.recording.next_step("trapped", 0)
    assert machine.recording.record(first_trapped - 1).cls == "trapped"
    assert all(machine.recording.record(s).cls != "trapped" for s in range(first_trapped - 1))
    assert machine.recording.next_step("translated", 0) is None


def test_next_step_records_ahead_until_the_end_of_the_run():
    machine = TimeMachine(HELLO, "trap")
    assert machine.next_step("trapped") == 1 + next(
        s for s in range(100) if machine.recording.record(s).cls == "trapped"
    )
    machine.seek(machine.end or 10**9)
    assert machine.exhausted and machine.next_step("trapped") is None


def test_a_trace_file_round_trips_and_replays_exactly(tmp_path, flags_trap):
    flags_trap.recording.annotations[POPF_HOLE] = "POPF kept IF at 0: a hole"
    path = tmp_path / "flags.vmtrace"
    tracefile.save(path, tracefile.Trace(FLAGS, "trap", flags_trap.limit, flags_trap.recording))
    loaded = tracefile.load(path)
    assert loaded.image.data == FLAGS.data and loaded.image.lines == FLAGS.lines
    assert loaded.mode == "trap"
    recording = loaded.recording
    assert recording.annotations == {POPF_HOLE: "POPF kept IF at 0: a hole"}
    assert recording.record(POPF_HOLE - 1) == flags_trap.recording.record(POPF_HOLE - 1)
    assert recording.events == flags_trap.recording.events
    assert recording.next_step("hole", 0) == POPF_HOLE
    replay = TimeMachine(loaded.image, loaded.mode, recording=recording)
    assert replay.verify() == []
    assert replay.seek(10**9) == len(recording) and replay.replay


def test_a_replay_notices_a_recording_the_engine_no_longer_reproduces(flags_trap):
    recording = dataclasses.replace(flags_trap.recording, final=(0,) * 16)
    assert TimeMachine(FLAGS, "trap", recording=recording).verify()


@pytest.fixture(scope="module")
def hello_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "hello.vmtrace"
    done = vmlab("record", "hello", "--mode", "trap", "-o", str(path))
    assert done.returncode == 0, done.stderr
    assert "7,571 steps" in done.stdout
    return path


def vmlab(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "vmlab.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_record_then_replay_check_from_the_command_line(hello_trace):
    done = vmlab("replay", str(hello_trace), "--check")
    assert done.returncode == 0 and "replays exactly" in done.stdout


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:40] + bytes([data[40] ^ 0xFF]) + data[41:], "corrupt"),
        (lambda data: data[:8] + (99).to_bytes(2, "little") + data[10:], "newer"),
        (lambda data: b"#!/bin/sh\n" + data, "not a vmlab trace"),
        (lambda data: b"", "not a vmlab trace"),
    ],
)
def test_a_damaged_trace_file_gives_one_line_not_a_traceback(
    tmp_path, hello_trace, damage, message
):
    bad = tmp_path / "bad.vmtrace"
    bad.write_bytes(damage(hello_trace.read_bytes()))
    with pytest.raises(TraceFileError, match=message):
        tracefile.load(bad)
    for args in (["replay", str(bad)], ["replay", str(bad), "--check"]):
        done = vmlab(*args)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and message in done.stderr
        assert "Traceback" not in done.stderr


def test_a_missing_trace_file_gives_one_line(tmp_path):
    done = vmlab("replay", str(tmp_path / "nowhere.vmtrace"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1


# Binary translation's tracer must date a store of translated code by the guest instruction
# whose translation makes it: once, at its own step (a store into a write-protected code page
# is reported again when the CPU restarts it), and after a fast-forward, the first traced step
# its own stores only.


def _ram_writes(machine: TimeMachine, step: int) -> tuple:
    record = machine.recording.record(step)
    assert record is not None
    return record.insn, tuple(w for w in record.writes if w.address < MONITOR_BASE)


@pytest.fixture(scope="module")
def timer_native() -> TimeMachine:
    machine = TimeMachine(load_guest("timer"), "native")
    machine.extend(7_100)
    return machine


def test_a_traced_bt_recording_lists_each_kernel_store_at_its_own_step(timer_native):
    machine = TimeMachine(load_guest("timer"), "bt")
    machine.extend(3_000)
    for step in range(3_000):
        insn, writes = _ram_writes(machine, step)
        if not insn.sensitive:  # (what a monitor emulates, it stores itself: not recorded)
            assert (insn, writes) == _ram_writes(timer_native, step), step


def test_the_first_traced_step_after_a_bt_fast_forward_lists_its_own_stores(timer_native):
    push = 7_060  # push ds, the timer handler's first store
    machine = TimeMachine(load_guest("timer"), "bt")
    machine.extend(2_000)
    assert machine.fast_forward(Goal(push)) == push
    machine.extend(push + 10)
    assert _ram_writes(machine, push) == _ram_writes(timer_native, push)


GUESTS = Path(__file__).parent / "guests"


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
@pytest.mark.parametrize(
    ("guest", "steps"),
    [
        # a page directory cleared by rep stosd (1,025 rounds from step 3), then paging on
        # (steps 1,039-1,041 left out: trap and pv count the MOV to CR0 that turns paging on
        # twice, a step that the next store makes up for)
        ("higher_store", [10_000, 500, 17, 18, 19, 1_027, 1_028, 1_036, 3, 700]),
        ("rep_strings", None),  # every step of each REP form
    ],
)
def test_time_travel_stops_between_two_rounds_of_a_rep_string_instruction(mode, guest, steps):
    """The CPU takes each round of a REP for an instruction: so does every mode's clock, and
    a seek lands between two rounds in the state bare metal has there."""
    image = load_guest(str(GUESTS / f"{guest}.asm"))
    machine = TimeMachine(image, mode)
    end = fresh(image, "native", 100_000).step
    for step in steps or range(end + 1):
        reached = machine.seek(step)
        assert reached == min(step, end)
        native = fresh(image, "native", reached).executor.virtual_state()
        assert machine.vm.executor.virtual_state() == native, step
    machine.close()
