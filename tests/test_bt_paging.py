"""Binary translation on shadow page tables: kernel code translated by guest-virtual address,
fragments kept apart per address space, code tracked by its physical frames."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.events import InterruptDelivered, PageFaultHandled
from hypervisor.guest.image import load_guest
from hypervisor.session import run_guest
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm

SPACES = str(Path(__file__).parent / "guests" / "bt_spaces.asm")
CODE = 0x400000  # the virtual address both address spaces map, to different frames
PAGING_ON = 5_500  # bt_spaces turns paging on at about step 5,950
AFTER_FETCH_FAULTS = 12_500  # its calls into pages not mapped are steps ~11,120 on
OUTPUT = """\
paging on
space A sums 0x000000C8, space B sums 0x00000190
after a store through the alias, CODE gives 0x00000003
#PF cr2=0x00402000 code=0x00000000
the missing page, mapped by the handler, gives 0x00000007
#PF cr2=0x00404000 code=0x00000000
the straddling instruction gives 0x11223344
5 timer ticks while switching; wrong answers: 0x00000000
"""


@needs_nasm
def test_two_address_spaces_with_different_code_at_one_address_each_run_their_own():
    """200 switches between the spaces, each calling CODE: the sums say every call ran
    the code of the space it was made in; then a store through a second mapping of
    CODE's frame, a call into a page not mapped and an instruction straddling into one;
    then the same switching under timer interrupts. Bare metal, trap and bt agree."""
    native = run_guest(load_guest(SPACES), "native")
    assert native.console == OUTPUT and native.exit.status == 0
    for mode in ("trap", "bt"):
        report = run_guest(load_guest(SPACES), mode)
        assert (report.console, report.exit) == (native.console, native.exit), mode


@needs_nasm
def test_a_cr3_switch_keeps_each_spaces_fragments():
    """One translation of CODE per frame it was read from (and one more after the store
    through the alias invalidated space A's): switching spaces flushes nothing and
    retranslates nothing. (Stepping fragments, one instruction each, are a cache of their
    own: the last instructions before each timer interrupt run as those.)"""
    vm = Vm(load_guest(SPACES), "bt")
    vm.run(10**8)
    cache = vm.executor.cache
    at_code = [f for f in cache.fragments.values() if f.guest_start == CODE and not f.stepping]
    assert [(f.frames, f.valid) for f in at_code] == [
        ((0x300000,), False),  # space A's, invalidated by the store through ALIAS
        ((0x301000,), True),  # space B's
        ((0x300000,), True),  # space A's again, from the new bytes
    ]
    assert cache.stats.flushes == 0


@needs_nasm
def test_a_fetch_from_a_page_not_mapped_is_the_guests_page_fault_under_bt():
    report = run_guest(load_guest(SPACES), "bt", keep_events=True)
    faults = [e for e in report.events if isinstance(e, PageFaultHandled)]
    true = [(e.address, e.error_code) for e in faults if e.outcome == "true"]
    assert true == [(0x402000, 0), (0x404000, 0)]
    assert report.traps["#PF true"] == 2
    assert any(e.outcome == "hidden" for e in faults)  # the shadows filled on demand
    ticks = [e for e in report.events if isinstance(e, InterruptDelivered) and e.vector == 0x20]
    assert len(ticks) >= 5  # the timer, delivered through the guest's tables


@needs_nasm
@settings(max_examples=6, deadline=None)
@given(step=st.integers(min_value=PAGING_ON, max_value=AFTER_FETCH_FAULTS))
def test_a_bt_run_with_paging_stops_at_the_exact_step_in_the_state_of_bare_metal(step):
    """Through paging turned on, the switches, the store through the alias and the CALLs
    whose target's fetch faults (the CALL retired, the fault at the target); bare metal
    under either clock (tests/test_clock_paging.py checks that they agree)."""
    image = load_guest(SPACES)
    native = Vm(image, "native")
    bt = Vm(image, "bt")
    native.run(step)
    bt.run(step)
    assert bt.stats.total == native.stats.total == step
    assert bt.executor.virtual_state() == native.executor.virtual_state()
    assert bt.executor.guest_cpu().cr2 == native.executor.guest_cpu().cr2
