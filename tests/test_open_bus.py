"""Open bus under every mode: a stack outside RAM, and isolation events that name the guest
instruction that caused them (the repro guests of issue 11, in tests/guests/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypervisor.events import PortAccess
from hypervisor.guest.image import load_guest
from hypervisor.session import run_guest
from hypervisor.trace.timetravel import TimeMachine
from tests.conftest import needs_nasm
from tests.test_clock import _under, each_clock
from vmlab.cli import main

GUESTS = Path(__file__).parent / "guests"
MODES = ["native", "trap", "bt"]

pytestmark = needs_nasm


def guest(name: str) -> str:
    return str(GUESTS / f"{name}.asm")


def listed(name: str, mode: str, trace: bool) -> list[tuple[str, int, int, str]]:
    report = run_guest(guest(name), mode, trace=trace)
    events = report.isolation["listed"]
    assert report.isolation["events"] == len(events)
    return [(e["kind"], e["address"], e["eip"], e["instruction"]) for e in events]


@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["openbus_call", "openbus_call2"])
def test_a_call_with_the_stack_outside_ram_goes_on_as_on_bare_metal(name, mode, trace):
    report = run_guest(guest(name), mode, trace=trace)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0), report.exit


@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_an_open_bus_read_names_the_instruction_that_made_it(mode, trace):
    assert listed("openbus_read", mode, trace) == [
        ("open_bus_read", 0xD00000, 0x100001, "mov eax, dword ptr [0xd00000]")
    ]


@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_pushes_to_open_bus_name_each_pushing_instruction(mode, trace):
    assert listed("openbus_call", mode, trace) == [
        ("open_bus_write", 0xD0EFFC, 0x100005, "push ebx"),
        ("open_bus_write", 0xD0EFF8, 0x100006, "call 0x10000f"),
    ]


STORE_EVENTS = [
    (4, 0x10001D, "mov dword ptr [esi], 0x5a"),
    (7, 0x10000A, "mov eax, dword ptr [esi]"),
    (10, 0x100011, "mov dword ptr [esi], eax"),
]


@pytest.mark.parametrize("mode", ["native", "trap"])
@each_clock
def test_a_recording_holds_each_open_bus_access_at_the_step_its_event_names(
    kind: str, mode: str, clock_env: pytest.MonkeyPatch
) -> None:
    # the block clock's first hole access stops before the store and runs it again: the
    # tracer sees it twice, the recording must hold it once (lesson 05-isolation's stops)
    _under(clock_env, kind)
    report = run_guest(guest("openbus_store"), mode)
    assert [(e["step"], e["eip"], e["instruction"]) for e in report.isolation["listed"]] == (
        STORE_EVENTS
    )
    tm = TimeMachine(load_guest(guest("openbus_store")), mode)
    landed, step = [], 0
    while (found := tm.next_step("isolation", step)) is not None:
        step = tm.seek(found)
        record = tm.last_record()
        assert record is not None
        landed.append((step, record.insn.eip, record.insn.text))
    tm.close()
    assert landed == STORE_EVENTS


def test_json_lists_the_isolation_events_with_their_total(capsys):
    assert main(["run", guest("openbus_read"), "--mode", "bt", "--json"]) == 0
    isolation = json.loads(capsys.readouterr().out)["vms"][0]["isolation"]
    assert isolation["events"] == 1 and isolation["by_kind"] == {"open_bus_read": 1}
    (event,) = isolation["listed"]
    assert event["kind"] == "open_bus_read" and event["address"] == 0xD00000
    assert event["eip"] == 0x100001
    assert event["instruction"] == "mov eax, dword ptr [0xd00000]"


@pytest.mark.parametrize("trace", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_every_port_access_names_the_instruction_that_made_it(mode, trace):
    report = run_guest("hello", mode, trace=trace, keep_events=True)
    accesses = [e for e in report.events if isinstance(e, PortAccess)]
    assert accesses
    for event in accesses:
        assert event.text.split()[0] in {"in", "out"}, event
        assert 0x100000 <= event.eip < 0x200000
