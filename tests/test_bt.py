"""Binary translation: equivalence with bare metal, and what the trace says it did."""

from __future__ import annotations

import pytest

from hypervisor.guest.image import sample_names
from hypervisor.session import run_guest
from hypervisor.trace.events import (
    AdaptiveRetranslation,
    FragmentInvalidated,
    FragmentTranslated,
    InsnClass,
    InstructionExecuted,
)

REWRITTEN = {"cli", "sti", "pushfd", "popfd", "mov cs", "push"}


# escape reads the monitor's window, which bare metal does not have (tests/test_host.py)
@pytest.mark.parametrize("name", [n for n in sample_names() if n != "escape"])
def test_bt_is_equivalent_to_bare_metal(name):
    native = run_guest(name, "native")
    bt = run_guest(name, "bt")
    assert bt.console == native.console
    assert (bt.exit.reason, bt.exit.status) == (native.exit.reason, native.exit.status)
    assert bt.instructions["translated"] > 0


@pytest.mark.parametrize("name", ["flags", "redpill", "sensitive"])
def test_bt_closes_the_holes_that_break_trap_and_emulate(name):
    trap = run_guest(name, "trap", trace=True)
    bt = run_guest(name, "bt", trace=True)
    native = run_guest(name, "native")
    assert trap.console != native.console
    assert bt.console == native.console
    assert bt.holes == {}
    assert not REWRITTEN & set(bt.traps), bt.traps  # no trap for CLI/STI/PUSHF/POPF/MOV CS


def test_kernel_code_runs_only_from_the_cache_and_user_code_never_enters_it():
    report = run_guest("syscalls", "bt", trace=True, keep_events=True)
    executed = [e for e in report.events if isinstance(e, InstructionExecuted)]
    kernel = [e for e in executed if e.cpl == 0]
    user = [e for e in executed if e.cpl == 3]
    assert kernel and user
    assert {e.cls for e in kernel} == {InsnClass.TRANSLATED}
    assert {e.cls for e in user} <= {InsnClass.DIRECT, InsnClass.TRAPPED}
    translated = [e for e in report.events if isinstance(e, FragmentTranslated)]
    user_eips = {e.eip for e in user}
    for fragment in translated:
        assert not any(fragment.guest_start <= eip < fragment.guest_end for eip in user_eips)


def test_selfmod_code_is_invalidated_and_retranslated():
    report = run_guest("selfmod", "bt", keep_events=True)
    assert report.exit.status == 0, report.console
    assert any(isinstance(e, FragmentInvalidated) for e in report.events)
    assert report.tcache["invalidations"] > 0


def test_data_stores_next_to_hot_code_make_the_page_self_checking():
    report = run_guest("kernel_loop", "bt", keep_events=True)
    adaptive = [e for e in report.events if isinstance(e, AdaptiveRetranslation)]
    assert adaptive and report.tcache["adaptive"] == len(adaptive)
    # once adaptive, the hot loop no longer faults: invalidations stay few
    assert report.tcache["invalidations"] < 100


def test_traced_and_fast_bt_runs_agree():
    fast = run_guest("syscalls", "bt")
    traced = run_guest("syscalls", "bt", trace=True)
    assert traced.console == fast.console
    assert traced.instructions == fast.instructions


def test_json_reports_the_cache_and_the_cost_model():
    report = run_guest("kernel_loop", "bt").as_json()
    assert set(report["tcache"]) == {
        "fragments",
        "bytes",
        "capacity",
        "hits",
        "misses",
        "chains",
        "invalidations",
        "flushes",
        "adaptive",
    }
    assert report["tcache"]["chains"] > 0
    cycles = report["cycles"]
    assert cycles["virtual"] > cycles["native_equivalent"] > 0
    trap = run_guest("kernel_loop", "trap").as_json()["cycles"]
    assert trap["overhead_pct"] > 10 * cycles["overhead_pct"]  # traps cost, translation not


def test_overhead_falls_as_the_cache_warms():
    timeline = [pct for _, pct in run_guest("timer", "bt").as_json()["cycles"]["timeline"]]
    assert len(timeline) >= 5
    assert timeline[-1] < timeline[0] / 10


@pytest.mark.parametrize("name", ["flags", "selfmod"])
def test_a_traced_bt_run_numbers_every_guest_instruction_once(name):
    report = run_guest(name, "bt", trace=True, keep_events=True)
    steps = [e.step for e in report.events if isinstance(e, InstructionExecuted)]
    assert steps == list(range(len(steps)))
    assert len(steps) == report.instructions["total"]
    assert report.console == run_guest(name, "native").console
