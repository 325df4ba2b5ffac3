"""The model-specific registers: one table (hypervisor/machine/msr.py) answers RDMSR and WRMSR
in every mode, as QEMU's one-CPU PC does, and raises #GP where hardware does."""

from __future__ import annotations

import pytest

from hypervisor.encap.state import capture, restore
from hypervisor.guest.image import load_guest
from hypervisor.machine import msr
from hypervisor.session import run_guest
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm
from tests.test_platform import QEMU, build, probes_pass, qemu_serial

CHECKS = 30


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_the_msr_probes_pass_under_every_mode(tmp_path, mode):
    probes_pass(tmp_path, "msr_probes", mode, CHECKS, max_insns=100_000)


@needs_nasm
@pytest.mark.parametrize("mode", ["trap", "bt", "pv"])
def test_the_probes_run_as_many_instructions_as_on_bare_metal(tmp_path, mode):
    """A faulting RDMSR/WRMSR or RDTSCP does not retire in any mode (under bt its fragment
    paid for the callout beforehand)."""
    kernel = load_guest(str(build(tmp_path, "msr_probes")))
    native = run_guest(kernel, "native", max_insns=100_000).instructions["total"]
    assert run_guest(kernel, mode, max_insns=100_000).instructions["total"] == native


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="QEMU is not installed")
def test_qemu_answers_the_same_except_where_its_tcg_departs_from_hardware(tmp_path):
    kernel = build(tmp_path, "msr_probes")
    lines = qemu_serial(kernel).splitlines()
    ours = run_guest(load_guest(str(kernel)), "native", max_insns=100_000).console.splitlines()
    assert len(lines) == len(ours) == CHECKS
    for qemu, vmlab in zip(lines, ours, strict=True):
        # "(hw)": QEMU's TCG reads 0 from a missing MSR, keeps no TSC there and answers
        # on a globally disabled APIC's page
        assert qemu == vmlab or (qemu.startswith("(hw)") and qemu.endswith(": FAIL"))


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_rdmsr_of_the_tsc_counts_instructions_exactly_at_a_block_start(tmp_path, mode):
    report = run_guest(load_guest(str(build(tmp_path, "tsc_msr_delta"))), mode, max_insns=1000)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 6)


@needs_nasm
@pytest.mark.parametrize(
    ("step", "before", "after"),
    [(3000, "native", "trap"), (6000, "trap", "bt"), (9000, "bt", "pv"), (12000, "pv", "native")],
)
def test_the_msrs_travel_with_the_vm_into_another_mode(tmp_path, step, before, after):
    vm = Vm(load_guest(str(build(tmp_path, "msr_probes"))), before)
    vm.run(step)
    moved = restore(capture(vm), after)
    moved.run(100_000)
    assert "FAIL" not in bytes(moved.console).decode()
    assert (moved.exit.reason, moved.exit.status) == ("debug_exit", 0)


def test_a_written_tsc_is_an_offset_from_the_instruction_clock():
    stored: dict[int, int] = {}
    msr.write(msr.Msr.TSC, 1 << 32, stored, clock=1000)
    assert msr.read(msr.Msr.TSC, stored, clock=1010) == (1 << 32) + 10
    assert msr.time_stamp(1010, stored) == (1 << 32) + 10


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (0x12345, 0),  # no such MSR
        (msr.Msr.MTRRCAP, 0),  # read-only
        (msr.Msr.PLATFORM_ID, 0),
        (msr.Msr.APIC_BASE, 0xFEE00900 | 1),  # a reserved bit
        (msr.Msr.PAT, 0x0007040600070403),  # memory type 3 is reserved
    ],
)
def test_writes_the_hardware_refuses_raise_gp(index, value):
    with pytest.raises(msr.MsrFault):
        msr.write(index, value, {}, clock=0)


def test_the_bootstrap_flag_of_the_apic_base_cannot_be_cleared():
    stored: dict[int, int] = {}
    msr.write(msr.Msr.APIC_BASE, 0xFEE00800, stored, clock=0)
    assert msr.read(msr.Msr.APIC_BASE, stored, clock=0) == 0xFEE00900
