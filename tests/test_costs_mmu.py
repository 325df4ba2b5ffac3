"""The cost model's MMU block: shadow paging's traps priced by their own rows, and the MMU's
share of the overhead, on a real paging guest."""

from __future__ import annotations

from pathlib import Path

from hypervisor.guest.image import load_guest
from hypervisor.session import run_guest
from hypervisor.vmm.costs import MMU_ROWS, PENTIUM4, cycles
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm

PAGEFAULT = Path(__file__).parent / "guests" / "pagefault.asm"


def test_each_mmu_counter_is_priced_by_its_own_row():
    profile = PENTIUM4
    base = cycles(profile, guest_instructions=100, cpu_instructions=100)
    for counter, row in MMU_ROWS.items():
        priced = cycles(profile, guest_instructions=100, cpu_instructions=100, mmu={counter: 3})
        assert priced.virtual - base.virtual == 3 * getattr(profile, row)
        assert priced.mmu == 3 * getattr(profile, row)
    assert profile.page_fault_true > profile.page_fault_hidden > profile.trap


@needs_nasm
def test_a_paging_guest_under_trap_pays_for_its_mmu_and_says_how_much():
    vm = Vm(load_guest(str(PAGEFAULT)), "trap")
    vm.run(10**7)
    traps = vm.stats.traps
    cost = vm.cycles()
    expected = sum(n * PENTIUM4.mmu_price(name) for name, n in traps.items() if name in MMU_ROWS)
    assert traps["#PF hidden"] and traps["#PF true"] == 11
    assert cost.mmu == expected
    assert 0 < cost.mmu_share_pct < 100
    report = run_guest(load_guest(str(PAGEFAULT)), "trap")
    assert report.cycles["mmu_share_pct"] == round(cost.mmu_share_pct, 1)


def test_a_guest_without_paging_has_no_mmu_share():
    report = run_guest("hello", "trap")
    assert report.cycles["mmu_share_pct"] == 0.0
