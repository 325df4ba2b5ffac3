"""Suspend and resume: a VM written to a .vmlab file and resumed goes on exactly as if it had
never stopped — in its own mode, and in another mode wherever the two modes agree."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from hypervisor.encap import vmfile
from hypervisor.encap.state import SuspendError, capture, restore
from hypervisor.guest.image import load_for_mode, load_guest, sample_names
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.guestcpu import ResumeRefused
from hypervisor.vmm.vm import Vm

BUDGET = 60_000  # every sample ends, or shows what it does, within this


@cache
def straight(build: str, mode: str) -> tuple[bytes, tuple[str, int | None], int]:
    """The uninterrupted run of a sample's build (NAME or NAME.pv): console, exit, steps."""
    vm = Vm(load_guest(build.removesuffix(".pv"), paravirtual=build.endswith(".pv")), mode)
    vm.run(BUDGET)
    assert vm.exit is not None
    return bytes(vm.console), (vm.exit.reason, vm.exit.status), vm.stats.total


def suspended_at_a_third(sample: str, mode: str) -> vmfile.SuspendedVm:
    image = load_for_mode(sample, mode)
    vm = Vm(image, mode)
    vm.run(max(1, straight(image.name, mode)[2] // 3))
    return vmfile.from_bytes(vmfile.to_bytes(capture(vm)))  # through the file format


@pytest.mark.parametrize("sample", sample_names())
def test_a_resumed_run_equals_the_uninterrupted_one_in_every_mode_pair(sample: str) -> None:
    for first in Mode:
        suspended = suspended_at_a_third(sample, first)
        for then in Mode:
            try:
                vm = restore(suspended, then)
            except ResumeRefused as why:
                assert suspended.image.paravirtual and then != "pv", why
                continue
            vm.run(BUDGET - suspended.step)
            assert vm.exit is not None
            outcome = (bytes(vm.console), (vm.exit.reason, vm.exit.status))
            build = suspended.image.name
            if then == first:  # exact: the same instruction count too
                assert (*outcome, vm.stats.total) == straight(build, first), (first, then)
            elif straight(build, first)[:2] == straight(build, then)[:2]:
                assert outcome == straight(build, then)[:2], (first, then)
            else:  # the modes differ for this guest (its holes): what was printed stays
                assert outcome[0].startswith(suspended.console), (first, then)


def test_resuming_a_paravirtual_kernel_outside_pv_is_refused_with_the_reason() -> None:
    suspended = capture(Vm(load_guest("hello", paravirtual=True), "pv"))
    with pytest.raises(ResumeRefused, match=r"paravirtualized kernel.*hypercalls"):
        restore(suspended, "trap")


def test_a_guest_in_ring_1_cannot_resume_under_a_ring_compressing_monitor() -> None:
    suspended = capture(Vm(load_guest("hello"), "native"))
    ring1 = replace(suspended, cpu=replace(suspended.cpu, cpl=1))
    with pytest.raises(ResumeRefused, match=r"ring 1.*rings 0 and 3"):
        restore(ring1, "trap")


def test_an_ended_vm_cannot_be_suspended() -> None:
    vm = Vm(load_guest("hello"), "native")
    vm.run(BUDGET)
    with pytest.raises(SuspendError, match="has ended"):
        capture(vm)


def test_the_file_is_written_atomically_and_reads_back_equal(tmp_path: Path) -> None:
    vm = Vm(load_guest("timer"), "bt")
    vm.run(30_000)
    suspended = capture(vm)
    path = tmp_path / "vm.vmlab"
    path.write_bytes(b"an older file")
    vmfile.write(path, suspended)
    assert vmfile.read(path) == suspended
    assert [p.name for p in tmp_path.iterdir()] == ["vm.vmlab"]  # no temporary left
