"""Hostile and broken guests: whatever a guest does, the monitor ends it with a reason."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.guest.formats import ImageError
from hypervisor.guest.image import GuestImage
from hypervisor.vmm.contract import ExitReason
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm


def _random_guest(seed: int) -> GuestImage:
    rng = random.Random(seed)
    return GuestImage(f"random-{seed}", bytes(rng.getrandbits(8) for _ in range(4096)))


RANDOM_GUESTS = 120  # pages of random bytes per mode: every one must end with a reason


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_random_guests_end_with_a_known_reason(mode):
    for seed in range(RANDOM_GUESTS):
        vm = Vm(_random_guest(seed), mode)
        exit_info = vm.run(100_000)
        assert exit_info.reason in ExitReason, (seed, exit_info)
        assert exit_info.detail


@settings(max_examples=40, deadline=None)
@given(code=st.binary(min_size=1, max_size=64), mode=st.sampled_from(["native", "trap", "bt"]))
def test_any_short_guest_ends_with_a_known_reason(code, mode):
    try:
        vm = Vm(GuestImage("fuzz", code), mode)
    except ImageError as refused:  # e.g. ELF's magic with no multiboot header: one line
        assert "\n" not in str(refused)
        return
    exit_info = vm.run(20_000)
    assert exit_info.reason in ExitReason


@needs_nasm
def test_a_guest_sleeping_with_its_timer_masked_ends_halted(tmp_path):
    """The PIT ticks but the PIC masks IRQ 0 (its state at reset): no interrupt can come, so
    HLT with IF=1 sleeps for ever; the run must end, not skip idle ticks for ever."""
    source = tmp_path / "masked.asm"
    source.write_text(
        "bits 32\norg 0x100000\n"
        "mov al, 0x34\nout 0x43, al\nmov al, 0xff\nout 0x40, al\nout 0x40, al\nsti\nhlt\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "vmlab.cli", "run", str(source), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(done.stdout)["vms"][0]["exit"]["reason"] == "halted"
