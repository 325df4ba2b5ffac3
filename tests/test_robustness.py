"""Hostile and broken guests: whatever a guest does, the monitor ends it with a reason."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.guest.image import GuestImage
from hypervisor.vmm.contract import ExitReason
from hypervisor.vmm.vm import Vm


def _random_guest(seed: int) -> GuestImage:
    rng = random.Random(seed)
    return GuestImage(f"random-{seed}", bytes(rng.getrandbits(8) for _ in range(4096)))


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_two_hundred_random_guests_end_with_a_known_reason(mode):
    for seed in range(200):
        vm = Vm(_random_guest(seed), mode)
        exit_info = vm.run(100_000)
        assert exit_info.reason in ExitReason, (seed, exit_info)
        assert exit_info.detail


@settings(max_examples=60, deadline=None)
@given(code=st.binary(min_size=1, max_size=64), mode=st.sampled_from(["native", "trap", "bt"]))
def test_any_short_guest_ends_with_a_known_reason(code, mode):
    exit_info = Vm(GuestImage("fuzz", code), mode).run(20_000)
    assert exit_info.reason in ExitReason
