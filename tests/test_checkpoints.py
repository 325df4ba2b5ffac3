"""Checkpoints: seeking through them lands exactly where a straight run does, in every mode."""

from __future__ import annotations

import ctypes
from functools import cache

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hypervisor.guest.image import load_guest
from hypervisor.trace.checkpoints import Checkpoint, CheckpointStore, declared
from hypervisor.trace.recording import registers_of, same_run
from hypervisor.trace.timetravel import Goal, TimeMachine
from hypervisor.vmm.vm import Vm
from tests.conftest import examples
from tui.model import cpu_views

# Trap-heavy with user mode and timer interrupts; self-modifying code (bt protects, aliases
# and invalidates pages); the PIT and PIC; the POPF/CLI holes.
RUNS = [
    ("syscalls", "trap"),
    ("syscalls", "bt"),
    ("syscalls", "native"),
    ("selfmod", "bt"),
    ("timer", "trap"),
    ("flags", "bt"),
]
SPAN = 6000  # steps recorded per run
INTERVAL = 300  # steps between checkpoints: many of them in SPAN


def memory(vm: Vm) -> bytes:
    """The guest's RAM, all of it: translated code never uses the guest's stack as scratch."""
    return ctypes.string_at(vm.machine.host.pointer(vm.machine.ram), vm.machine.ram_size)


def observed(vm: Vm) -> tuple:
    """What a straight run and a seek must agree on: the guest's registers as it sees them,
    its memory and console, where it stands. Under bt, the real CPU's EIP is left out: the
    translation cache's layout depends on where earlier runs stopped (a block entered
    half-way is translated from there), so the same guest step may run at another TC
    address. An exit's wording says how the run was sliced, not where it is."""
    exit_ = vm.exit and (vm.exit.reason, vm.exit.status)
    real = same_run(vm.mode, registers_of(vm))
    guest = cpu_views(vm)[0]
    return vm.step, guest, real, memory(vm), bytes(vm.console), exit_, vm.stats.total


@pytest.fixture(autouse=True, scope="module")
def _free_cached_runs():
    """The cached time machines and states go with this module, not with the suite."""
    yield
    recorded.cache_clear()
    straight.cache_clear()


@cache
def recorded(guest: str, mode: str) -> TimeMachine:
    machine = TimeMachine(load_guest(guest), mode, checkpoints=CheckpointStore(interval=INTERVAL))
    machine.extend(SPAN)
    return machine


@cache
def straight(guest: str, mode: str, step: int) -> tuple:
    """A fresh VM that ran `step` instructions."""
    vm = Vm(load_guest(guest), mode)
    if step:
        vm.run(step)
    return observed(vm)


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    run=st.sampled_from(RUNS),
    targets=st.lists(st.integers(0, SPAN), min_size=1, max_size=4),
)
# a traced run stopped inside a fragment, after its clock had clobbered EFLAGS (issue 11)
@example(run=("flags", "bt"), targets=[4519])
# a bt run ending right after a store retried alone into its code page (flags fills its IDT
# there), before its fragment's jump on: the guest EIP read as the store's
@example(run=("flags", "bt"), targets=[1339, 1400])
# back from 4519 to 1401: a fragment that paid for its whole block was left at a store
# retried alone into its code page, and the run ended there counting the rest of the block
@example(run=("flags", "bt"), targets=[4519, 1401])
# into flags' timer handler: the interrupt came a block late under one slicing, not another
@example(run=("flags", "bt"), targets=[3966, 3968])
def test_seeking_through_checkpoints_equals_a_straight_run(run, targets):
    machine = recorded(*run)
    assert len(machine.checkpoints) >= 5
    for target in targets:
        machine.seek(target)
        assert observed(machine.vm) == straight(*run, target)


@pytest.mark.parametrize("guest, mode", [("syscalls", "trap"), ("selfmod", "bt")])
def test_a_replay_checkpoints_as_it_goes_and_seeks_back_exactly(guest, mode):
    recording = recorded(guest, mode).recording
    replay = TimeMachine(
        load_guest(guest), mode, recording=recording, checkpoints=CheckpointStore(interval=500)
    )
    replay.seek(len(recording))
    assert len(replay.checkpoints) >= len(recording) // 500 - 1
    for target in (len(recording) - 1, 4321, 777, 5000):
        replay.seek(target)
        assert observed(replay.vm) == straight(guest, mode, target)


def test_checkpoints_stay_within_their_budget_by_thinning_out():
    unbounded = CheckpointStore(interval=100)
    TimeMachine(load_guest("syscalls"), "trap", checkpoints=unbounded).extend(SPAN)
    store = CheckpointStore(interval=100, budget=unbounded.stored() - 1)
    machine = TimeMachine(load_guest("syscalls"), "trap", checkpoints=store)
    machine.extend(SPAN)
    assert store.stored() <= store.budget
    assert store.interval > 100 and len(store) >= 3
    for target in (5999, 150, 3333):
        machine.seek(target)
        assert observed(machine.vm) == straight("syscalls", "trap", target)


def test_a_budget_below_the_guests_ram_thins_down_to_two_checkpoints_and_goes_on():
    # A guest whose RAM alone is over the budget (a 128 MiB kernel against the default 64 MiB)
    # kept thinning a store that could drop nothing more, for ever.
    store = CheckpointStore(interval=500, budget=1)
    machine = TimeMachine(load_guest("syscalls"), "trap", checkpoints=store)
    machine.fast_forward(Goal(SPAN))
    assert machine.frontier >= SPAN - 1 and len(store) == 2
    for target in (4321, 150):
        machine.seek(target)
        assert observed(machine.vm) == straight("syscalls", "trap", target)


def test_a_checkpoint_keeps_only_the_pages_that_changed():
    store = CheckpointStore(interval=INTERVAL)
    machine = TimeMachine(load_guest("syscalls"), "trap", checkpoints=store)
    machine.extend(SPAN)
    first, *later = store.checkpoints
    ram_pages = machine.vm.machine.ram_size // 4096
    assert len(first.ram) == ram_pages
    assert max(len(c.ram) for c in later) < ram_pages // 16


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    run=st.sampled_from(RUNS),
    start=st.integers(1, SPAN - 50),
    moves=st.lists(st.sampled_from(["step", "back", "prepare"]), min_size=1, max_size=10),
)
def test_stepping_with_prepared_vms_equals_a_straight_run(run, start, moves):
    """`prepare` (the UI's idle time) puts a spare VM one step behind, and stepping back
    swaps to it: each step shows the very state a straight run reaches there."""
    machine = recorded(*run)
    machine.seek(start)
    for move in moves:
        if move == "prepare":
            machine.prepare()
        else:
            getattr(machine, move)(1)
        assert observed(machine.vm) == straight(*run, machine.position)


class CountingStore(CheckpointStore):
    restores = 0

    def restore(self, vm: Vm, checkpoint: Checkpoint) -> None:
        self.restores += 1
        super().restore(vm, checkpoint)


@pytest.mark.parametrize("mode", ["trap", "bt"])
def test_a_step_back_after_prepare_restores_nothing_and_runs_nothing(mode):
    store = CountingStore(interval=INTERVAL)
    machine = TimeMachine(load_guest("flags"), mode, checkpoints=store)
    machine.seek(2000)
    for step in range(1999, 1979, -1):
        machine.prepare()
        restores, ran = store.restores, machine.vm.stats.total
        machine.back()
        assert machine.position == step
        assert store.restores == restores
        assert machine.vm.stats.total == ran - 1  # the VM that was waiting there


@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_every_attribute_of_a_stateful_object_is_declared_state_or_not(mode):
    """A checkpoint captures what each class declares, so an attribute nobody declared (a
    new piece of state, or a cache) fails here, where it is born."""
    vm = Vm(load_guest("selfmod" if mode == "bt" else "syscalls"), mode)
    vm.run(3000, trace=True)
    vm.run(3000)
    for obj in (vm, *vm.devices, vm.executor):
        state, not_state = set(declared(obj)), set(declared(obj, "NOT_CHECKPOINTED"))
        assert state.isdisjoint(not_state), type(obj).__name__
        assert set(vars(obj)) - state - not_state == set(), type(obj).__name__
        assert all(hasattr(obj, a) for a in state), type(obj).__name__
