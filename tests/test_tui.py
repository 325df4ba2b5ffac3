"""The terminal UI driven like a user would, with Textual's Pilot, on real guests."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from textual.widgets import Input, Tabs

from hypervisor.guest.image import load_guest
from hypervisor.trace import tracefile
from tui.app import VmlabApp, open_trace
from tui.engine import Session
from tui.engine_commands import Filter, Seek
from tui.panes import Pane
from tui.screens import HelpScreen

FLAGS = load_guest("flags")


def synchronously(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (no pytest async plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def flags_app(*modes: str) -> VmlabApp:
    return VmlabApp(Session(vms=[(FLAGS, mode) for mode in modes or ("trap",)]))


async def press(pilot, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await pilot.app.settle()
    await pilot.pause()


def screen_text(app: VmlabApp) -> dict[str, str]:
    texts = {pane.id or "": pane.render().plain for pane in app.query(Pane)}
    texts["status"] = str(app.query_one("#status").render())
    return texts


@synchronously
async def test_stepping_flags_under_trap_shows_cli_trapped_and_popf_direct_with_a_hole():
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        app.engine.submit(Seek(4076))
        await press(pilot, "s")
        view = app.snapshot.vm
        assert view.step == 4077 and view.last.text == "cli" and view.last.cls == "trapped"
        row = next(r for r in view.code if r.last)
        assert row.text.startswith("cli") and row.tag == "trapped" and not row.hole
        await press(pilot, "s", "s", "s")
        view = app.snapshot.vm
        assert view.last.text == "popfd" and view.last.cls == "direct" and view.last.hole
        row = next(r for r in view.code if r.last)
        assert row.text.startswith("popfd") and row.tag == "direct" and row.hole
        code = app.query_one("#code", Pane).render().plain
        assert "⚠" in code and "trapped" in code and "direct" in code
        assert "popfd direct ⚠ hole" in screen_text(app)["status"]


@synchronously
async def test_step_back_restores_every_pane_exactly():
    app = flags_app("trap", "native")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await press(pilot, "h")  # to the first hole: step 4,080
        before, views = screen_text(app), app.snapshot.vms
        await press(pilot, "s")
        assert screen_text(app) != before
        await press(pilot, "b")
        assert app.snapshot.vms == views
        assert screen_text(app) == before
        await press(pilot, "b", "b", "b", "s", "s", "s")
        assert screen_text(app) == before


@synchronously
async def test_next_and_previous_trap_move_between_trapped_instructions():
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await press(pilot, "t")
        first = app.snapshot.vm
        assert first.last.cls == "trapped" and first.step > 0
        await press(pilot, "t")
        second = app.snapshot.vm
        assert second.step > first.step and second.last.cls == "trapped"
        await press(pilot, "T")
        assert app.snapshot.vm.step == first.step


@synchronously
async def test_go_to_a_step_annotate_it_and_find_the_note_in_a_saved_replay(tmp_path: Path):
    app = VmlabApp(Session(vms=[(FLAGS, "trap")]), trace_path=str(tmp_path / "f.vmtrace"))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await pilot.press("g")
        await pilot.press(*"4,080", "enter")
        await app.settle()
        assert app.snapshot.vm.step == 4080
        await pilot.press("a")
        app.screen.query_one(Input).value = "POPF left IF alone"
        await pilot.press("enter")
        await app.settle()
        await press(pilot, "w")
        assert app.snapshot.vm.annotation == "POPF left IF alone"
        assert "✎ POPF left IF alone" in screen_text(app)["status"]
    trace = tracefile.load(tmp_path / "f.vmtrace")
    assert trace.recording.annotations == {4080: "POPF left IF alone"}
    replay = VmlabApp(open_trace(str(tmp_path / "f.vmtrace")))
    async with replay.run_test(size=(160, 50)) as pilot:
        await replay.settle()
        await press(pilot, "h")
        view = replay.snapshot.vm
        assert view.replay and view.step == 4080 and view.annotation == "POPF left IF alone"
        assert "POPF left IF alone" in screen_text(replay)["events"]


@synchronously
async def test_run_mode_advances_and_pauses():
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await pilot.press("space")
        for _ in range(200):  # run mode publishes as it goes: watch the clock move
            await pilot.pause(0.05)
            if app.snapshot.vm.step > 100:
                break
        assert app.snapshot.running
        await pilot.press("space")
        await app.settle()
        assert app.snapshot.vm.step > 100 and not app.snapshot.running


@synchronously
async def test_switching_mode_restarts_the_vm_in_the_next_mode():
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await press(pilot, "s", "s", "m")
        view = app.snapshot.vm
        assert view.step == 0 and view.mode != "trap"


@synchronously
async def test_next_vm_moves_the_panes_to_the_other_vm():
    app = flags_app("trap", "native")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        assert "flags/trap" in screen_text(app)["code"] or app.snapshot.vm.name == "flags/trap"
        await press(pilot, "v")
        assert app.snapshot.vm.name == "flags/native"
        assert "bare metal" in app.query_one("#registers", Pane).border_title


@synchronously
async def test_filtering_hides_a_kind_of_event():
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)):
        await app.settle()
        app.engine.submit(Seek(5000))
        await app.settle()
        assert any(row.kind == "console" for row in app.snapshot.vm.events)
        await app.settle()
        app.engine.submit(Filter(frozenset({"console"})))
        await app.settle()
        assert not any(row.kind == "console" for row in app.snapshot.vm.events)


@synchronously
async def test_filter_screen_returns_the_kinds_to_hide():
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await pilot.press("f")
        await pilot.pause()
        await pilot.press("enter")
        await app.settle()
        assert app.snapshot.hidden == frozenset({"io"})  # nothing toggled: as it was


@synchronously
async def test_at_80_by_24_side_panes_become_tabs():
    app = flags_app("trap")
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settle()
        await pilot.pause()
        assert app.screen.has_class("-compact")
        assert app.query_one("#code").display and app.query_one(Tabs).display
        assert app.query_one("#registers").display and not app.query_one("#events").display
        app.query_one(Tabs).active = "tab-events"
        await pilot.pause()
        assert app.query_one("#events").display and not app.query_one("#registers").display


@synchronously
async def test_help_opens_and_closes_and_maximize_toggles():
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("z")
        await pilot.pause()
        assert app.screen.maximized is app.query_one("#code")
        await pilot.press("z")
        await pilot.pause()
        assert app.screen.maximized is None


@synchronously
async def test_binary_translation_fills_the_translation_panes():
    app = flags_app("bt")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        app.engine.submit(Seek(2000))
        await app.settle()
        await pilot.pause()
        view = app.snapshot.vm
        assert view.cache is not None and view.cache.fragments > 0
        assert "fragments" in app.query_one("#tc", Pane).render().plain


@synchronously
async def test_the_command_palette_runs_the_same_actions_as_the_keys():
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Next hole", "enter")
        await pilot.pause()
        await app.settle()
        assert app.snapshot.vm.step == 4080 and app.snapshot.vm.last.hole


@synchronously
async def test_the_high_contrast_light_theme_toggles():
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await pilot.press("ctrl+t")
        assert app.theme == "vmlab-light" and not app.current_theme.dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark


@synchronously
async def test_the_host_clock_shows_vms_taking_turns_and_world_switches():
    hello, hog = load_guest("hello"), load_guest("hog")
    app = VmlabApp(Session(vms=[(hello, "trap"), (hog, "trap")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await press(pilot, "s", "s", "c")
        host = app.snapshot.host
        assert host is not None and (host.step, host.running) == (2, 0)
        await press(pilot, "W")  # hello's quantum is used up: hog gets the CPU
        snapshot = app.snapshot
        assert snapshot.host.running == snapshot.focus == 1
        assert [view.step for view in snapshot.vms] == [snapshot.host.step, 0]
        assert snapshot.vm.events[-1].kind == "switch"
        assert "gets the CPU from hello/trap" in snapshot.vm.events[-1].text
        await press(pilot, "s")  # on the host's clock a step is hog's: hello waits
        assert [view.step for view in app.snapshot.vms] == [snapshot.host.step, 1]
        assert "host clock" in screen_text(app)["vms"]
        await press(pilot, "c")  # back to each VM's own steps, side by side
        assert app.snapshot.host is None
        assert [view.step for view in app.snapshot.vms] == [1, 1]
