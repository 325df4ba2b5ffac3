"""The MMU's stress guests: mmustress (three address spaces switched by the timer, demand
paging, a PTE rewritten in a loop, frames outside RAM and in the monitor's window) prints
under every monitor what it prints on bare metal; escape_paging (page tables aimed at what
it does not own) runs beside others on one host and changes nothing outside its RAM."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypervisor.events import IsolationViolation, PageFaultHandled
from hypervisor.guest.image import load_guest
from hypervisor.session import run_guest, run_host
from hypervisor.vmm.host import Host
from tests.conftest import needs_nasm
from tests.test_host import QUANTUM, EscapeWatch, vm_of

GUESTS = Path(__file__).parent / "guests"
PAGING_MODES = ["native", "trap", "bt", "pv"]  # pv: an unported kernel is shadowed, as trap
MONITORED = [m for m in PAGING_MODES if m != "native"]

MMUSTRESS = """\
mmustress: paging on, three address spaces
spaces seen through one linear page: 0x00000007, wrong reads: 0x00000000
demand paging: pages mapped by the #PF handler 0x00000010, sum read back 0x00000078
PTE rewritten in a loop, stale reads: 0x00000000
frame outside RAM reads 0xFFFFFFFF, frame 0xFFC00000 reads 0xFFFFFFFF
"""


def guest(name: str):
    return load_guest(str(GUESTS / f"{name}.asm"))


@needs_nasm
@pytest.mark.parametrize("mode", PAGING_MODES)
def test_mmustress_prints_what_it_prints_on_bare_metal(mode):
    report = run_guest(guest("mmustress"), mode)
    assert report.console == MMUSTRESS
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)


@needs_nasm
@pytest.mark.parametrize("mode", MONITORED)
def test_mmustress_works_the_shadow_hard(mode):
    report = run_guest(guest("mmustress"), mode, keep_events=True)
    outcomes = [e.outcome for e in report.events if isinstance(e, PageFaultHandled)]
    assert outcomes.count("true") == 16  # the demand pages, each reflected to the guest
    assert outcomes.count("ptemod") >= 64  # the rewritten PTE, every round
    assert outcomes.count("hidden") > outcomes.count("true")
    switches = report.traps.get("mov cr3", 0) + report.callouts.get("mov cr3", 0)
    assert switches >= 4  # the timer switched spaces (bt: a callout from translated code)
    kinds = {e.kind for e in report.events if isinstance(e, IsolationViolation)}
    assert "monitor_mapping" in kinds  # the window frame: open bus instead


@needs_nasm
@pytest.mark.parametrize("mode", PAGING_MODES)
def test_host_ram_outside_a_hostile_paging_kernel_never_changes(mode):
    """escape_paging beside hello and mmustress: its writes through page tables aimed at
    other VMs' RAM and at the monitor's window change nothing outside its own slice."""
    host = Host(quantum=QUANTUM)
    watch = EscapeWatch(host, "escape_paging", hog=None)
    guests = [("hello", mode), (guest("escape_paging"), mode), (guest("mmustress"), mode)]
    report = run_host(guests, host=host, keep_events=True)
    watch.detach()
    assert watch.quanta >= 5 and watch.changed == []
    hostile = vm_of(report, "escape_paging")
    assert "kept beyond RAM: 0x00000000, kept in the window's frames: 0x00000000" in (
        hostile.console
    )
    kept = "1" if mode == "native" else "0"  # native: linear 0xFFC00000 is its own RAM then
    assert f"window write kept: 0x0000000{kept}" in hostile.console
    assert hostile.hosted.isolation.summary()["events"] > 0
    assert vm_of(report, "hello").console == run_guest("hello", mode).console
    assert vm_of(report, "mmustress").console == MMUSTRESS
