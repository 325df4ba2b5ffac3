"""Snapshots in the terminal UI: `S` takes one, the palette's revert goes back to it, the
VMs pane shows the tree."""

from __future__ import annotations

from textual.widgets import Input

from hypervisor.encap.state import capture
from hypervisor.guest.image import load_guest
from tests.test_tui import press, screen_text, synchronously
from tui.app import VmlabApp
from tui.engine import Session
from tui.engine_commands import Seek


async def name_it(pilot, key_or_action: str, name: str) -> None:
    app = pilot.app
    if len(key_or_action) == 1:
        await pilot.press(key_or_action)
    else:
        getattr(app, f"action_{key_or_action}")()
    await pilot.pause()
    app.screen.query_one(Input).value = name
    await pilot.press("enter")
    await app.settle()
    await pilot.pause()


@synchronously
async def test_take_a_snapshot_go_on_revert_and_see_the_tree() -> None:
    app = VmlabApp(Session(vms=[(load_guest("timer"), "trap")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        app.engine.submit(Seek(3_000))
        await app.settle()
        await name_it(pilot, "S", "early")
        expected = app.engine.clock.lanes[0].tree["early"].state
        app.engine.submit(Seek(9_000))
        await app.settle()
        await name_it(pilot, "S", "late")
        await name_it(pilot, "revert_snapshot", "early")
        assert app.snapshot is not None and app.snapshot.vm.step == 3_000
        now = capture(app.engine.clock.lanes[0].tm.vm)
        guest = ("cpu", "devices", "ram", "console", "step")  # not how the monitor counted
        assert [getattr(now, f) for f in guest] == [getattr(expected, f) for f in guest]
        await press(pilot, "s")
        text = screen_text(app)["vms"]
        assert "● early  step 3,000" in text and "○ late  step 9,000" in text
        await name_it(pilot, "revert_snapshot", "nothing")  # a warning, nothing moves
        assert app.snapshot.vm.step == 3_001
