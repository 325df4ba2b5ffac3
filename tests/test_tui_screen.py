"""The screen pane: the guest's VGA text screen in the UI, and typing into the guest."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from hypervisor.guest.image import load_guest
from tests.test_tui import synchronously
from tui.app import VmlabApp
from tui.engine import Session
from tui.engine_commands import Seek

KEYECHO = load_guest(str(Path(__file__).parent / "guests" / "keyecho.bin"))


async def _type_and_run(app: VmlabApp, pilot) -> None:
    """A line to COM1 from the console pane, run on to the keyboard prompt, keys from the
    screen pane, run on: what a user does with keyecho."""
    await app.settle()
    app.query_one("#console").focus()
    await pilot.press("enter")
    app.engine.submit(Seek(2_000))
    await app.settle()
    app.query_one("#screen").focus()
    await pilot.press("h", "i", "space", "o", "k")
    app.engine.submit(Seek(4_000))
    await app.settle()
    await pilot.pause()


@synchronously
async def test_typing_into_the_screen_and_console_panes_reaches_the_guest() -> None:
    app = VmlabApp(Session(vms=[(KEYECHO, "native")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await _type_and_run(app, pilot)
        vm = app.snapshot.vm
        assert vm.console.startswith("serial> \nkeys> hi ok")
        assert vm.screen.text[0].startswith("keys> hi ok ")
        assert vm.screen.cursor == (0, 11)
        assert app.query_one("#screen").display
        app.engine.submit(Seek(100))  # before the prompt: the screen of that step
        await app.settle()
        assert app.snapshot.vm.screen.blank


@pytest.mark.parametrize("size", [(80, 24), (160, 50), (200, 50)])
def test_screen_pane_snapshot(snap_compare, size: tuple[int, int]) -> None:
    async def run(pilot) -> None:
        app = pilot.app
        await _type_and_run(app, pilot)
        if size == (80, 24):  # compact: the screen is a tab
            app.query_one("#tabs").active = "tab-screen"
            await pilot.pause()

    app = VmlabApp(Session(vms=[(KEYECHO, "native")]))
    assert snap_compare(app, terminal_size=size, run_before=run)


@synchronously
async def test_the_footer_of_a_typing_pane_says_which_keys_stay_the_uis() -> None:
    app = VmlabApp(Session(vms=[(KEYECHO, "native")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        app.query_one("#screen").focus()
        await pilot.pause()
        footer = app.query_one(Footer)
        shown = {k.action: k.description for k in footer.query(FooterKey)}
        assert "Leave: keys type to the guest here" in shown.values()
        assert {"app.focus_next", "app.pause"} <= shown.keys()
        await pilot.press("tab")  # and tab does leave: the app's keys are back
        await pilot.pause()
        assert "quit" in {k.action for k in app.query_one(Footer).query(FooterKey)}
