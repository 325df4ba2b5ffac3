"""Exact counts with paging on: both clocks, bare metal and trap, stop at the same step in
the same state on kernels whose code is not where its linear address says (a higher-half
kernel; two address spaces with different code at one address, an alias of a code frame,
fetch faults true and hidden)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.guest.image import GuestImage, load_guest
from hypervisor.machine import clock
from hypervisor.machine.clockbuild import ClockChoice, ClockKind
from hypervisor.session import run_guest
from hypervisor.vmm.contract import DEFAULT_RAM
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm
from tests.test_clock import needs_block

GUESTS = Path(__file__).parent / "guests"
SPACES = str(GUESTS / "bt_spaces.asm")
COUNTS = str(GUESTS / "paged_counts.asm")
RAM = 32 << 20  # course_hh's kernel wants it
HH_STEPS = 40_000  # course_hh's start-up, higher half, tasks and faults
SPACES_STEPS = 12_500  # bt_spaces: both spaces, the alias, the fetch faults, the timer
COUNTS_STEPS = 7_150  # paged_counts: paging on at about step 5,200, debug-exit at 7,157


def _stop(image: GuestImage, mode: str, kind: ClockKind, step: int, ram: int) -> tuple[object, ...]:
    with mock.patch.object(clock, "choice", return_value=ClockChoice(kind, "")):
        vm = Vm(image, mode, ram_size=ram)
        vm.run(step)
    state = vm.executor.virtual_state()
    return vm.stats.total, state, vm.executor.guest_cpu().cr2, bytes(vm.console)


def _same_everywhere(image: GuestImage, step: int, ram: int = DEFAULT_RAM) -> None:
    reference = _stop(image, "native", ClockKind.COUNT, step, ram)
    assert reference[0] == step
    for mode in ("native", "trap"):
        for kind in (ClockKind.COUNT, ClockKind.BLOCK):
            assert _stop(image, mode, kind, step, ram) == reference, (mode, kind)


@needs_block
@settings(max_examples=4, deadline=None)
@given(step=st.integers(min_value=1, max_value=HH_STEPS))
def test_a_higher_half_kernel_stops_at_the_same_step_under_both_clocks(step: int) -> None:
    """course_hh runs at 0xC01xxxxx from physical 0x1xxxxx: a block's bytes are read
    through its tables, not from RAM at its linear address."""
    _same_everywhere(load_guest("course_hh", cmdline="exit"), step, RAM)


@needs_block
@needs_nasm
@settings(max_examples=5, deadline=None)
@given(step=st.integers(min_value=5_500, max_value=SPACES_STEPS))
def test_code_at_one_address_in_two_spaces_stops_at_the_same_step_under_both_clocks(
    step: int,
) -> None:
    """bt_spaces: different code at one linear address in two address spaces, a store
    through a second mapping of a code frame, CALLs into pages not mapped (the CALL
    retired, its push done: the fault is at the target) and trap's hidden fetch faults."""
    _same_everywhere(load_guest(SPACES), step)


@needs_block
@needs_nasm
@pytest.mark.parametrize("step", [11_119, 11_121, 11_125])
def test_a_call_whose_target_fetch_faults_counts_once(step: int) -> None:
    """Around bt_spaces' first fetch fault (step ~11,120)."""
    _same_everywhere(load_guest(SPACES), step)


@needs_block
@needs_nasm
@settings(max_examples=5, deadline=None)
@given(step=st.integers(min_value=5_200, max_value=COUNTS_STEPS))
def test_one_block_with_other_instructions_in_another_space_or_after_a_rewrite(
    step: int,
) -> None:
    """paged_counts: one block (linear address and size) of 6 instructions in one space
    and 4 in the other, then rewritten through a second mapping of its frame, twice: the
    helper checks a kept count against the bytes its linear address maps to now."""
    _same_everywhere(load_guest(COUNTS), step)


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap"])
def test_paged_counts_adds_what_each_space_runs(mode: str) -> None:
    report = run_guest(load_guest(COUNTS), mode)
    assert report.console == "CODE added 0x00000384\n" and report.exit.status == 0
