"""Fast-forward in the UI (issue 13.7): `g` to a far step or an address, `F` to the next event
of a kind, `vmlab tui --break ADDR`; the panes show the exact state there, and the
instructions that led there are classified."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from hypervisor.guest.image import load_guest
from hypervisor.guest.samples import SAMPLES_DIR
from hypervisor.guest.symbols import symbols_of
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.vm import Vm
from tests.test_tui import synchronously
from tui.app import VmlabApp
from tui.engine import FAST_AHEAD, Session
from tui.engine_commands import Seek
from tui.targets import TargetError, address_of, target_of

TIMER = load_guest("timer")


def virtual_eip(step: int) -> int:
    vm = Vm(TIMER, "trap")
    vm.run(step)
    return vm.executor.virtual_state().eip


@pytest.fixture(scope="module")
def kernel_instruction() -> tuple[int, int]:
    """(address, step): an instruction of a task, and the first step that runs it."""
    machine = TimeMachine(TIMER, "trap")
    machine.extend(60_000)
    address = machine.recording.record(50_000).insn.eip
    step = next(s for s in range(1, 60_000) if machine.recording.record(s).insn.eip == address)
    return address, step


async def prompt(pilot, key: str, text: str) -> None:
    await pilot.press(key)
    await pilot.pause()
    pilot.app.screen.query_one(Input).value = text
    await pilot.press("enter")
    await pilot.app.settle()


@synchronously
async def test_going_to_a_far_step_fast_forwards_there_exactly():
    far = FAST_AHEAD * 4
    app = VmlabApp(Session(vms=[(TIMER, "trap")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await prompt(pilot, "g", f"{far:,}")
        view = app.snapshot.vm
        assert view.step == far
        assert view.registers.guest.state.eip == virtual_eip(far)
        assert view.last is not None and view.last.step == far - 1  # traced: it is classified
        assert sum(view.counts.values()) == far  # the counts include the fast-forwarded part
        await pilot.press("b")
        await app.settle()
        assert app.snapshot.vm.step == far - 1


@synchronously
async def test_going_to_an_address_stops_where_the_guest_is_about_to_run_it(kernel_instruction):
    address, step = kernel_instruction
    app = VmlabApp(Session(vms=[(TIMER, "trap")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await prompt(pilot, "g", hex(address))
        view = app.snapshot.vm
        assert view.step == step and view.registers.guest.state.eip == address
        assert view.last is not None and view.last.step == step - 1
        assert any(row.current and row.address == address for row in view.code)


@synchronously
async def test_break_on_the_command_line_opens_at_the_first_hit(kernel_instruction):
    address, step = kernel_instruction
    app = VmlabApp(Session(vms=[(TIMER, "trap")], breakpoints=(hex(address),)))
    async with app.run_test(size=(160, 50)):
        await app.settle()
        assert app.snapshot.vm.step == step


@synchronously
async def test_fast_forward_to_the_next_event_of_a_kind():
    start = FAST_AHEAD + 10_000
    expected = TimeMachine(TIMER, "trap").next_step("interrupt", start)
    app = VmlabApp(Session(vms=[(TIMER, "trap")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await prompt(pilot, "g", f"{start}")
        await prompt(pilot, "F", "interrupt")
        assert app.snapshot.vm.step == expected
        assert app.snapshot.vm.events[-1].kind == "interrupt"


def test_targets_are_steps_addresses_functions_or_kinds():
    from hypervisor.guest.symbols import Symbol, SymbolTable

    symbols = SymbolTable((Symbol("kmain", 0x100040, 0x20),))
    assert target_of("4,080", symbols) == 4080
    assert target_of("kmain", symbols).breakpoints == {0x100040}
    assert target_of("0x10002A", symbols).breakpoints == {0x10002A}
    assert target_of("console", symbols, ("console",)).kind == "console"
    assert symbols.function_at(0x100050) == (symbols.functions[0], 0x10)
    assert symbols.function_at(0x100060) is None
    for bad in ("0xZZ", "nosuch", ""):
        with pytest.raises(TargetError):
            target_of(bad, symbols)
    with pytest.raises(TargetError):
        address_of("kmain", SymbolTable())


@pytest.mark.parametrize("mode", ["native", "bt"])  # bt: kmain runs as translated code
@synchronously
async def test_the_course_kernel_breaks_at_a_c_function_shown_with_its_source_line(mode):
    course = load_guest("course")
    kmain = symbols_of(course).address_of("kmain")
    assert kmain is not None
    app = VmlabApp(Session(vms=[(course, mode)], breakpoints=("kmain",)))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        view = app.snapshot.vm
        assert view.registers.guest.state.eip == kmain
        (row,) = [r for r in view.code if r.current]
        source = (SAMPLES_DIR / "course" / "kernel.c").read_text().splitlines()
        text = source[row.line - 1].strip()  # the line's own text, then where it is
        assert row.text.endswith(f"; {text}  · kmain+0x0 kernel.c:{row.line}")
        await pilot.press("s")
        await app.settle()
        await pilot.press("b")
        await app.settle()
        assert app.snapshot.vm.registers.guest.state.eip == kmain  # and back, exactly


@synchronously
async def test_a_fast_forward_stops_where_the_guest_waits_for_input():
    """The course kernel halts at its prompt until a key comes: a breakpoint it never runs
    must not keep the fast-forward (and the panes) busy for ever."""
    app = VmlabApp(Session(vms=[(load_guest("course"), "bt")], breakpoints=("0x12345",)))
    async with app.run_test(size=(160, 50)):
        await app.settle(timeout=30)
        snapshot = app.snapshot
        assert not snapshot.busy
        assert snapshot.vm.console.endswith("> ")


@synchronously
async def test_the_ui_gives_each_vm_the_ram_asked_for(monkeypatch, capsys):
    import vmlab.cli

    asked: dict = {}
    monkeypatch.setattr(vmlab.cli, "_open_ui", lambda _, **options: asked.update(options) or 0)
    assert vmlab.cli.main(["tui", "course", "--ram", "32M"]) == 0
    assert asked["ram_size"] == 32 << 20
    assert vmlab.cli.main(["tui", "course", "--ram", "512M"]) == 2
    assert "at most 256M" in capsys.readouterr().err
    app = VmlabApp(Session(vms=[(load_guest("course"), "native")], ram_size=32 << 20))
    async with app.run_test(size=(160, 50)):
        await app.settle()
        assert app.snapshot.vm.ram[1] == 32 << 20
        app.engine.submit(Seek(20_000))  # the kernel sizes its memory from the mbi
        await app.settle()
        assert "31616 KiB above" in app.snapshot.vm.console
