"""Every sample, recorded under every mode, replays exactly (`vmlab replay --check`'s test):
a fresh untraced run to the recording's last step ends in the same state."""

from __future__ import annotations

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.trace.timetravel import TimeMachine

SAMPLES = [
    "crasher", "escape", "flags", "hello", "hog", "kernel_loop",
    "redpill", "selfmod", "sensitive", "syscalls", "timer", "trapstorm",
]  # fmt: skip
PV = ["hello", "syscalls", "timer", "selfmod"]
SPAN = 3000  # steps recorded: short, and still past several fragments, traps and ticks


def replays(guest: str, mode: str, span: int = SPAN) -> list[str]:
    image = load_guest(guest, paravirtual=mode == "pv")
    recorded = TimeMachine(image, mode)
    recorded.extend(span)
    replay = TimeMachine(image, mode, recording=recorded.recording)
    return replay.verify()


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
@pytest.mark.parametrize("guest", SAMPLES)
def test_every_sample_replays_exactly(guest, mode):
    assert replays(guest, mode) == []


@pytest.mark.parametrize("guest", PV)
def test_paravirtual_samples_replay_exactly(guest):
    assert replays(guest, "pv") == []


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_a_whole_run_to_the_guests_exit_replays_exactly(mode):
    assert replays("hello", mode, 10**6) == []


def test_a_traced_bt_run_takes_interrupts_where_an_untraced_one_does():
    assert replays("flags", "bt", 20_000) == []
