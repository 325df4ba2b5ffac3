"""The host's clock: the schedule of a real host, and each VM's step at any host step, equal
to a real host stopped there."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypervisor.events import WorldSwitch
from hypervisor.guest.image import load_guest
from hypervisor.trace.hosttimeline import HostTimeline
from hypervisor.trace.recording import registers_of
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.host import Host

QUANTUM = 700
BUDGET = 40_000
GUESTS = [(load_guest(name), "trap", f"{name}/trap") for name in ("hello", "hog", "escape")]


def host() -> tuple[Host, list]:
    real = Host(len(GUESTS) * (4 << 20), QUANTUM, watch_reads=False)
    switches: list = []
    real.events.subscribe(lambda e: isinstance(e, WorldSwitch) and switches.append(e))
    for image, mode, name in GUESTS:
        real.create(image, mode, name=name, budget=BUDGET)
    return real, switches


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 5_000), min_size=1, max_size=12))
def test_a_host_run_in_pieces_has_the_schedule_of_one_run(pieces):
    whole, expected = host()
    whole.run(sum(pieces))
    cut, switches = host()
    for piece in pieces:
        cut.run(piece)
    assert switches == expected
    assert [h.vm.step for h in cut.vms.values()] == [h.vm.step for h in whole.vms.values()]


TIMELINE = HostTimeline(GUESTS, QUANTUM, BUDGET)
MACHINES = [TimeMachine(image, mode) for image, mode, _ in GUESTS]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 30_000))
def test_each_vm_at_a_host_step_is_where_a_real_host_stopped_there_has_it(host_step):
    steps = TIMELINE.steps_at(host_step)
    assert sum(steps) == host_step  # every host step is one instruction of one VM
    real, _ = host()
    real.run(host_step)
    assert [h.vm.step for h in real.vms.values()] == steps
    for machine, hosted, step in zip(MACHINES, real.vms.values(), steps, strict=True):
        machine.seek(step)
        assert registers_of(machine.vm) == registers_of(hosted.vm)


def test_turns_and_switches_follow_the_quantum():
    turns = TIMELINE.turns
    TIMELINE.extend(10 * QUANTUM)
    assert [t.vm for t in turns[:6]] == [0, 1, 2, 0, 1, 2]
    assert [t.host_start for t in turns[:4]] == [0, QUANTUM, 2 * QUANTUM, 3 * QUANTUM]
    assert TIMELINE.switch_after(QUANTUM // 2) == QUANTUM
    assert TIMELINE.switch_before(QUANTUM + 1) == QUANTUM
    assert TIMELINE.host_step_of(1, 10) == QUANTUM + 10  # hog's step 10, in its first turn
    assert TIMELINE.turns[TIMELINE.turn_at(QUANTUM)].vm == 1


def test_two_vms_of_the_same_guest_and_mode_keep_their_own_turns():
    twins = [TimeMachine(load_guest("hog"), "trap", name="hog/trap") for _ in range(2)]
    timeline = HostTimeline.of(twins, QUANTUM)
    timeline.extend(4 * QUANTUM)
    assert [t.vm for t in timeline.turns[:4]] == [0, 1, 0, 1]
    assert len(set(timeline.names)) == 2  # the host tells them apart by name too
    assert timeline.steps_at(3 * QUANTUM) == [2 * QUANTUM, QUANTUM]
