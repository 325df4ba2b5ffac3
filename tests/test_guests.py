"""The sample guests: equivalence with bare metal is the master test.

Trap-and-emulate must reproduce bare metal exactly for guests that only use privileged
instructions (they trap), and must diverge exactly where x86 has holes: `flags` (POPF
silently keeps IF) and `redpill` (SGDT, SIDT, SMSW, STR, MOV from CS show the monitor).
"""

from __future__ import annotations

import itertools

import pytest

from hypervisor.events import Trap
from hypervisor.guest.image import sample_names
from hypervisor.session import run_guest

EQUIVALENT = [
    "hello",
    "syscalls",
    "timer",
    "trapstorm",
    "selfmod",
    "kernel_loop",
    "whoami",
    "misconfig",
]
DIVERGENT = {
    "flags": {"popfd", "pushfd"},
    "redpill": {"mov cs", "sgdt", "sidt", "smsw", "str"},
    "sensitive": {
        "lar",
        "lcall",
        "lsl",
        "mov cs",
        "mov ss",
        "popfd",
        "push",
        "pushfd",
        "sgdt",
        "sidt",
        "smsw",
        "str",
        "verr",
        "verw",
    },
}
SLOW_UNDER_TRAP = {"kernel_loop", "whoami"}  # 400,000 traps; 2 M instructions traced
HOST_GUESTS = {"crasher", "escape", "hog"}  # never exit cleanly: tests/test_host.py


def test_every_sample_is_covered():
    assert set(sample_names()) == set(EQUIVALENT) | set(DIVERGENT) | HOST_GUESTS


@pytest.mark.parametrize("name", sorted(set(EQUIVALENT) | set(DIVERGENT)))
def test_bare_metal_runs_every_sample_to_a_clean_exit(name):
    report = run_guest(name, "native")
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0), report.console
    assert report.console.strip()


@pytest.mark.parametrize("name", [n for n in EQUIVALENT if n not in SLOW_UNDER_TRAP])
def test_trap_and_emulate_is_equivalent_to_bare_metal(name):
    native = run_guest(name, "native")
    trap = run_guest(name, "trap")
    assert trap.console == native.console
    assert (trap.exit.reason, trap.exit.status) == (native.exit.reason, native.exit.status)
    assert trap.instructions["trapped"] > 0


@pytest.mark.parametrize("name", [n for n in EQUIVALENT if n not in SLOW_UNDER_TRAP])
def test_traced_and_fast_runs_agree(name):
    fast = run_guest(name, "trap")
    traced = run_guest(name, "trap", trace=True)
    assert traced.console == fast.console
    assert traced.instructions == fast.instructions
    assert traced.traps == fast.traps


@pytest.mark.parametrize("name", sorted(DIVERGENT))
def test_holes_make_trap_and_emulate_diverge(name):
    native = run_guest(name, "native")
    trap = run_guest(name, "trap", trace=True)
    assert trap.console != native.console
    assert trap.exit.status != native.exit.status
    # The trace names the instructions responsible.
    assert set(trap.holes) == DIVERGENT[name]


def test_flags_loses_timer_ticks_under_trap():
    native = run_guest("flags", "native")
    trap = run_guest("flags", "trap")
    assert "timer ticks: yes" in native.console.lower()
    assert "timer ticks: no" in trap.console.lower()


def test_redpill_sees_the_monitor_tables():
    trap = run_guest("redpill", "trap", trace=True, keep_events=True)
    holes = [e for e in trap.recording.executed_events(trap.guest) if e.hole]
    assert {e.text.split()[0] for e in holes} >= {"sgdt", "sidt", "smsw", "str", "mov"}
    assert "0xffc0" in trap.console.lower() or "ffc0" in trap.console.lower()


def test_a_hundred_consecutive_privileged_instructions_all_trap():
    report = run_guest("trapstorm", "trap", keep_events=True)
    traps = [e for e in report.events if isinstance(e, Trap)]
    assert len(traps) >= 100
    assert {e.vector for e in traps} == {13}  # every one a #GP: never a #DF surprise
    assert {e.outcome for e in traps} == {"emulated"}
    # the storm itself: a run of 100 emulated traps with no other instruction between them
    steps = [e.step for e in traps]
    longest = run = 1
    for a, b in itertools.pairwise(steps):
        run = run + 1 if b == a + 1 else 1
        longest = max(longest, run)
    assert longest >= 100
