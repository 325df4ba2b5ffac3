"""Clones: eight VMs from one suspended whoami, each told its own name by the platform, their
RAM one copy in host memory but for the pages each writes."""

from __future__ import annotations

import pytest

from hypervisor.encap.clones import clone
from hypervisor.encap.state import capture
from hypervisor.guest.image import load_guest
from hypervisor.machine.hostram import PAGE
from hypervisor.vmm.vm import Vm

BOOTED = 1_049_975  # whoami has built its table and printed "ready", not yet read its name


@pytest.mark.parametrize("mode", ["native", "trap"])
def test_clones_share_ram_until_written_and_each_knows_its_name(mode: str) -> None:
    booted = Vm(load_guest("whoami"), mode)
    booted.run(BOOTED)
    clones = clone(capture(booted), 8, prefix="web")
    try:
        for vm in clones.vms:
            vm.run(2_000_000)
        for number, vm in enumerate(clones.vms, 1):
            lines = bytes(vm.console).decode().splitlines()
            assert lines[-2:] == [f"I am web-{number}", "table checksum 0xADF80000"]
            assert vm.exit is not None and vm.exit.status == 0
        report = clones.memory()
        ram = booted.machine.ram_size
        assert all(0 < c.private_pages < 8 for c in report.clones)  # stack, name buffer, GDT
        assert all(c.private_pages + c.shared_pages == ram // PAGE for c in report.clones)
        assert report.host_bytes < ram + 64 * PAGE
        assert report.saved_bytes > 7 * ram - 64 * PAGE
    finally:
        clones.close()


def test_a_clone_that_writes_a_page_gets_its_own_copy_and_the_others_keep_theirs() -> None:
    booted = Vm(load_guest("hello"), "native")
    booted.run(100)
    clones = clone(capture(booted), 2)
    try:
        first, second = clones.vms
        before = bytes(second.machine.read(0x300000, 16))
        first.machine.write(0x300000, b"only in clone 1.")
        assert second.machine.read(0x300000, 16) == before
        private = [c.private_pages for c in clones.memory().clones]
        assert private[0] == private[1] + 1
    finally:
        clones.close()
