"""The "virtualizing memory" lesson's own expectation, `fault`: a stop says which page fault
the monitor handled there (hidden, true or ptemod), and the walk checks it on the engine."""

from __future__ import annotations

from pathlib import Path

from hypervisor.guest.image import load_for_mode
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.mmu.introspect import PagingKind
from lessons.lesson import load
from lessons.walk import images
from tests.test_tui import press, synchronously
from tui.app import VmlabApp
from tui.engine import Session
from vmlab.cli import main

EXPECTS_TRUE_AT_A_HIDDEN_ONE = (
    'title = "expects a true fault where the shadow merely fills"\n'
    'guests = [["course", "trap"]]\n'
    '[[stop]]\ngo = "next pagefault"\ntext = "the first fault once paging is on"\n'
    'expect = { fault = "true" }\n'
)


def test_a_stop_expecting_another_fault_fails_its_walk(tmp_path: Path, capsys):
    lesson = tmp_path / "wrong.toml"
    lesson.write_text(EXPECTS_TRUE_AT_A_HIDDEN_ONE)
    assert main(["lesson", str(lesson), "--walk"]) == 1
    assert "not as expected: no true page fault at this step (seen: hidden)" in (
        capsys.readouterr().out
    )


def test_a_fault_that_is_no_outcome_is_one_line(tmp_path: Path, capsys):
    lesson = tmp_path / "bad.toml"
    lesson.write_text(EXPECTS_TRUE_AT_A_HIDDEN_ONE.replace('"true"', '"maybe"'))
    assert main(["lesson", str(lesson), "--walk"]) != 0
    captured = capsys.readouterr()
    assert "a fault is hidden, true, ptemod, not 'maybe'" in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


@synchronously
async def test_the_lesson_in_the_ui_shows_the_shadow_filling_in_the_page_tables_pane():
    lesson = load("07-virtualizing-memory")
    app = VmlabApp(Session(vms=images(lesson), lesson=lesson))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await press(pilot, "n")  # paging on, the first hidden fault: the shadow is empty
        paging = app.snapshot.vm.paging
        assert app.snapshot.lesson.index == 1 and not app.snapshot.lesson.problems
        assert paging.kind is PagingKind.SHADOW and paging.guest.present
        assert paging.shadow is not None and not paging.shadow.present
        assert "the first access is a hidden fault" in paging.note
        await press(pilot, "s")  # the monitor filled the entry in
        paging = app.snapshot.vm.paging
        assert paging.shadow is not None and paging.shadow.present
        assert dict(paging.counts)["hidden faults"] >= 1


def test_under_pv_the_pane_shows_the_validated_tables_and_no_shadow():
    """The lesson's last stops: the ported kernel under direct paging."""
    tm = TimeMachine(load_for_mode("course", Mode.PV), Mode.PV)
    try:
        step = tm.next_step("hypercall", 0)  # new_baseptr: the directory pinned
        assert step is not None
        tm.seek(step + 1)
        eip = tm.vm.executor.virtual_state().eip
        paging = tm.vm.executor.paging().view(eip, "EIP")
        assert paging.kind is PagingKind.DIRECT and paging.shadow is None
        assert paging.guest is not None and paging.guest.present
        assert dict(paging.counts)["new_baseptr"] == 1
        assert paging.host_physical == tm.vm.machine.ram.start + eip  # identity-mapped
    finally:
        tm.close()
