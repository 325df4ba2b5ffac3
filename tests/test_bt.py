"""Binary translation: equivalence with bare metal, and what the trace says it did."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hypervisor.events import (
    AdaptiveRetranslation,
    ConsoleOutput,
    FragmentInvalidated,
    FragmentTranslated,
    InsnClass,
    InstructionExecuted,
    InterruptDelivered,
    IsolationViolation,
    PortAccess,
)
from hypervisor.guest.image import load_guest, sample_names
from hypervisor.session import run_guest
from hypervisor.vmm.bt.area import VcpuArea
from hypervisor.vmm.bt.executor import VCPU_AREA_OFFSET
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm

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
    executed = list(report.recording.executed_events(report.guest))
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


def test_a_self_checking_page_is_traced_again_after_its_probation():
    # kernel_loop's boot writes its IDT, which shares a page with the hot loop: the page
    # becomes self-checking; once the boot is over it is write-protected again, and the one
    # store the loop makes there (inc [counter]) is redirected through an alias
    report = run_guest("kernel_loop", "bt", keep_events=True)
    adaptive = [e for e in report.events if isinstance(e, AdaptiveRetranslation)]
    assert [e.how for e in adaptive] == ["self-check", "traced", "alias"]
    assert adaptive[0].page == adaptive[1].page == adaptive[2].page
    assert adaptive[1].step - adaptive[0].step >= 50_000


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
    # the first 300,000 instructions under trap are enough: every pass of its loop traps
    trap = run_guest("kernel_loop", "trap", max_insns=300_000).as_json()["cycles"]
    assert trap["overhead_pct"] > 10 * cycles["overhead_pct"]  # traps cost, translation not


def test_overhead_falls_as_the_cache_warms():
    timeline = [pct for _, pct in run_guest("timer", "bt").as_json()["cycles"]["timeline"]]
    assert len(timeline) >= 5
    assert timeline[-1] < timeline[0] / 10


@pytest.mark.parametrize("name", ["flags", "selfmod"])
def test_a_traced_bt_run_numbers_every_guest_instruction_once(name):
    executed: list[InstructionExecuted] = []  # as events, with the steps the executor counted
    report = run_guest(name, "bt", trace=True, on_event=executed.append)
    steps = [e.step for e in executed if isinstance(e, InstructionExecuted)]
    assert steps == list(range(len(steps)))
    assert len(steps) == report.instructions["total"]
    assert report.console == run_guest(name, "native").console


@pytest.mark.parametrize("name", ["syscalls", "selfmod", "flags"])
@settings(max_examples=8, deadline=None)
@given(step=st.integers(min_value=1, max_value=2_500))  # all run longer
@example(step=1922)  # flags: a stop right after an OUT raising an IRQ, on an exit stub
@example(step=1968)
@example(step=1329)  # flags: a store retried into its code page in a fragment that paid ahead
def test_a_bt_run_stops_at_the_exact_step_in_the_state_of_bare_metal(name, step):
    image = load_guest(name)
    native, bt = Vm(image, "native"), Vm(image, "bt")
    native.run(step)
    bt.run(step)
    assert bt.stats.total == native.stats.total == step
    assert bt.executor.virtual_state() == native.executor.virtual_state()
    bt.run(1)  # and one more, as a student stepping would
    native.run(1)
    assert bt.executor.virtual_state() == native.executor.virtual_state()


@pytest.mark.parametrize(
    "name, step", [("flags", 1339), ("flags", 1344), ("flags", 1360), ("selfmod", 1863)]
)
def test_a_bt_run_ending_on_a_store_retried_into_a_code_page_is_past_the_store(name, step):
    """flags fills its IDT, which shares a page with its code, and selfmod patches code in
    a loop on a self-checked page: each store faults on the traced page and is retried
    alone. Where it ends its block (a stepping fragment, a block cut after a store) a run
    ending right after it has the guest after the store, as on bare metal (not inside
    its fragment, before the jump on)."""
    image = load_guest(name)
    native, bt = Vm(image, "native"), Vm(image, "bt")
    native.run(step)
    bt.run(step)
    assert bt.executor.virtual_state() == native.executor.virtual_state()


def interrupt_steps(name: str, mode: str, trace: bool) -> list[int]:
    vm = Vm(load_guest(name), mode)
    steps: list[int] = []
    vm.events.subscribe(lambda e: steps.append(e.step) if isinstance(e, InterruptDelivered) else 0)
    vm.run(20_000, trace=trace)
    return steps


@pytest.mark.parametrize("trace", [False, True])
def test_bt_takes_timer_interrupts_at_the_steps_bare_metal_does(trace):
    """flags waits for ticks in a three-instruction loop: a fragment that paid for its whole
    block with the timer due inside it took the interrupt late (9968 against 9967), and a
    traced run ticked the PIT for an exit's last instruction only after reading the next
    deadline."""
    native = interrupt_steps("flags", "native", False)
    assert len(native) == 4
    assert interrupt_steps("flags", "bt", trace) == native


PIT_READ = """
    mov al, 0x34                    ; PIT channel 0: low then high byte, mode 2
    out 0x43, al
    mov al, 0xe8
    out 0x40, al
    mov al, 0x03
    out 0x40, al                    ; count 1000 from this instruction on
    mov ecx, 20
.spin:
    dec ecx
    jnz .spin
    xor eax, eax
    out 0x43, al                    ; latch channel 0
    in al, 0x40                     ; its count's low byte: the exit status
    mov dx, 0x501
    out dx, al
"""


@pytest.mark.parametrize("trace", [False, True])
def test_translated_code_programs_and_reads_the_pit_at_its_exact_instruction(asm, trace):
    """A port access in translated code runs in the middle of a fragment that paid for its
    whole block: the PIT is brought up to the instruction first (it was 4 ticks off)."""
    image = asm(PIT_READ)
    native = run_guest(image, "native", max_insns=1000)
    bt = run_guest(image, "bt", max_insns=1000, trace=trace)
    assert bt.exit.status == native.exit.status == 189


def hostile(tmp_path, code: bytes) -> Vm:
    """A bare guest kernel of raw machine code, under bt."""
    path = tmp_path / "hostile.bin"
    path.write_bytes(code)
    return Vm(load_guest(str(path)), "bt")


EXIT_0 = bytes.fromhex("b00066ba0105ee")  # mov al, 0; mov dx, 0x501; out dx, al


def test_a_store_into_the_vcpu_area_is_reported_and_undone(tmp_path):
    area = VcpuArea(0xFFC00000 + VCPU_AREA_OFFSET)
    store = b"\xb8" + area.vif.to_bytes(4, "little")  # mov eax, &vIF
    store += bytes.fromhex("c7005adec05e")  # mov dword [eax], 0x5ec0de5a
    vm = hostile(tmp_path, store + EXIT_0)
    log = []
    vm.events.subscribe(log.append)
    vm.run(1000)
    assert vm.exit.reason == "debug_exit" and vm.exit.status == 0
    (event,) = [e for e in log if isinstance(e, IsolationViolation)]
    assert event.kind == "monitor_write" and event.address == area.vif
    assert "0x5ec0de5a" in event.detail
    assert vm.machine.read(area.vif, 4) == bytes(4)  # interrupts stay off: IF put back


def test_a_guest_that_rewrites_its_budget_forever_is_stopped_by_the_watchdog(tmp_path):
    area = VcpuArea(0xFFC00000 + VCPU_AREA_OFFSET)
    loop = b"\xb8" + area.budget.to_bytes(4, "little")  # mov eax, &budget
    loop += bytes.fromhex("c700ffffff7febf8")  # again: mov dword [eax], 0x7fffffff; jmp again
    vm = hostile(tmp_path, loop)
    vm.machine.watchdog_limit = 0.3
    vm.run(10**9)
    assert vm.exit.reason == "crashed"
    assert "did not come back to the monitor" in vm.exit.detail


def test_a_traced_bt_run_after_a_fast_one_counts_every_instruction():
    # the fast run compiles translated code with no code hook at all: tracing must recompile
    image = load_guest("flags")
    mixed, straight = Vm(image, "bt"), Vm(image, "bt")
    mixed.run(1000)
    mixed.run(50, trace=True)
    straight.run(1050)
    assert mixed.stats.total == straight.stats.total == 1050
    assert mixed.executor.virtual_state() == straight.executor.virtual_state()


def _io_events(mode: str, trace: bool) -> list[tuple[str, int, int, int]]:
    guest = str(Path(__file__).parent / "guests" / "io_steps.asm")
    report = run_guest(guest, mode, keep_events=True, trace=trace)
    assert report.exit.reason == "debug_exit"
    return [
        (type(e).__name__, e.step, getattr(e, "port", 0), getattr(e, "eip", 0))
        for e in report.events
        if isinstance(e, PortAccess | ConsoleOutput)
    ]


@needs_nasm
def test_port_writes_from_translated_code_are_dated_by_their_exact_step():
    """An OUT runs in translated code, whose clock is read only at exits: its event (and the
    console line it ends) carries the step of that very instruction, as on bare metal."""
    native = _io_events("native", trace=False)
    assert len(native) == 32 and native[0] == ("PortAccess", 6, 0x80, 0x100010)
    assert _io_events("native", trace=True) == native
    assert _io_events("trap", trace=False) == native
    assert _io_events("trap", trace=True) == native
    assert _io_events("bt", trace=False) == native
    assert _io_events("bt", trace=True) == native  # (the OUT in flight counted too)
