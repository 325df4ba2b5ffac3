"""The UI at the sizes people use (80×24, 160×50, 200×50): what must stay visible, readable
and true at each — driven with Pilot on real guests."""

from __future__ import annotations

import pytest
from textual.containers import VerticalScroll
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from hypervisor.guest.image import load_guest
from lessons.lesson import load
from lessons.walk import images
from tests.test_tui import flags_app, press, screen_text, synchronously
from tui.app import VmlabApp
from tui.engine import Session
from tui.engine_commands import Seek
from tui.panes import Pane
from tui.screens import HelpScreen

SIZES = [(80, 24), (160, 50), (200, 50)]
SAID_ONCE = ("mov al, 13", "cmp al, 0x0d", "magic: dd 0x1BADB002", "mov dx, 0x501")


@pytest.mark.parametrize("size", SIZES)
@synchronously
async def test_the_footer_shows_help_and_quit_and_every_key_it_shows_fits(size):
    app = flags_app("trap")
    async with app.run_test(size=size) as pilot:
        await app.settle()
        await pilot.pause()
        footer = app.query_one(Footer)
        keys = [k for k in footer.query(FooterKey) if "-command-palette" not in k.classes]
        palette = footer.query_one(".-command-palette").region
        shown = {k.action for k in keys}
        assert {"help", "quit"} <= shown
        assert all(k.region.right <= palette.x for k in keys), "a key under the palette"
        assert all(k.region.width > 0 for k in keys), "a key cut to nothing"
        if size[0] >= 160:
            assert {"step", "step_back", "run", "next('trapped')", "goto"} <= shown


@synchronously
async def test_the_help_screen_scrolls_from_the_keyboard_at_80_by_24():
    app = flags_app("trap")
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settle()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        scroll = app.screen.query_one(VerticalScroll)
        assert app.screen.focused is scroll and scroll.max_scroll_y > 0
        await pilot.press("down", "down")
        await pilot.pause()
        assert scroll.scroll_y == 2
        await pilot.press("end")
        await pilot.pause()
        assert scroll.scroll_y == scroll.max_scroll_y
        await pilot.press("pageup")
        await pilot.pause()
        assert 0 < scroll.scroll_y < scroll.max_scroll_y
        await pilot.press("home")
        await pilot.pause()
        assert scroll.scroll_y == 0
        await pilot.press("pagedown")
        await pilot.pause()
        assert scroll.scroll_y > 2


@synchronously
async def test_in_run_mode_the_vms_pane_and_the_status_line_agree_that_vms_run():
    app = flags_app("trap", "native")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await pilot.press("space")
        for _ in range(200):
            await pilot.pause(0.05)
            if app.snapshot is not None and app.snapshot.running and app.snapshot.vm.step > 50:
                break
        text = screen_text(app)
        assert all(view.state == "running" for view in app.snapshot.vms)
        assert "paused" not in text["vms"] and text["vms"].count("running") == 2
        assert "running" in text["status"]
        await pilot.press("space")
        await app.settle()
        assert all(view.state == "paused" for view in app.snapshot.vms)


@pytest.mark.parametrize("size", SIZES)
@synchronously
async def test_the_vms_pane_says_all_it_has_to_say_at_every_size(size):
    app = flags_app("trap", "native")
    async with app.run_test(size=size) as pilot:
        await app.settle()
        if size[0] < 140:
            app.query_one("Tabs").active = "tab-vms"
        await pilot.pause()
        text = app.query_one("#vms", Pane).render().plain
        assert text.count("no isolation events") == 2, text


@pytest.mark.parametrize("size", SIZES)
@synchronously
async def test_a_lesson_keeps_its_console_in_sight(size):
    lesson = load("01-trap-and-emulate")
    app = VmlabApp(Session(vms=images(lesson), lesson=lesson))
    async with app.run_test(size=size) as pilot:
        await app.settle()
        await press(pilot, "n", "n")
        if size[0] < 140:
            app.query_one("Tabs").active = "tab-console"
            await pilot.pause()
        console = app.query_one("#console", Pane)
        assert console.content_size.height >= 4
        assert console.region.bottom <= app.query_one("#lesson").region.y, "under the lesson"
        assert "flags: saving" in console.render().plain


@pytest.mark.parametrize("name", ["01-trap-and-emulate", "02-red-pill"])
def test_a_lesson_describes_the_layout_the_ui_has(name):
    """The UI shows one VM at a time (v switches), not two side by side."""
    text = " ".join(stop.text for stop in load(name).stops).lower()
    assert "left" not in text and "right" not in text
    assert "v switches" in text


async def code_rows_at(app: VmlabApp, pilot, step: int) -> list[str]:
    """The code pane's rows as shown once the VM is at `step`."""
    app.engine.submit(Seek(step))
    await app.settle()
    await pilot.pause()
    return app.query_one("#code", Pane).render().plain.splitlines()


@synchronously
async def test_the_code_pane_shows_the_instruction_that_ran_beside_a_macro_line():
    """`mov dx, %1` in the serial macro: the pane also says what the CPU ran."""
    app = flags_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        rows = await code_rows_at(app, pilot, 5)
        macro = next(row for row in rows if "mov dx, %1" in row)
        assert "mov dx, 0x3fd" in macro, macro
        plain = next(row for row in rows if "push edx" in row)
        assert plain.count("push edx") == 1, "an instruction said twice"
        rows = await code_rows_at(app, pilot, 4080)
        data = next(row for row in rows if "db %1, 0" in row)
        assert data.split("db %1, 0")[1].strip() == "", "a string disassembled as code"
        call = next(row for row in rows if "call puts" in row)
        assert "call 0x" in call, call


@synchronously
async def test_the_footer_chooses_its_keys_again_when_the_terminal_narrows():
    app = flags_app("trap")
    async with app.run_test(size=(200, 50)) as pilot:
        await app.settle()
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        footer = app.query_one(Footer)
        keys = [k for k in footer.query(FooterKey) if "-command-palette" not in k.classes]
        assert {"help", "quit"} <= {k.action for k in keys}
        assert max(k.region.right for k in keys) <= 80


@pytest.mark.parametrize("size", [(160, 50), (200, 50)])
@synchronously
async def test_the_console_wraps_a_long_line_instead_of_cutting_it(size):
    app = flags_app("trap")
    async with app.run_test(size=size) as pilot:
        await app.settle()
        app.engine.submit(Seek(4080))
        await app.settle()
        await pilot.pause()
        text = app.query_one("#console", Pane).render().plain
        assert "timer ticks: yes" in text.replace("\n", ""), text


@synchronously
async def test_the_translation_panes_follow_the_vm_the_panes_show():
    app = flags_app("trap", "bt")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await pilot.pause()
        assert not app.query_one("#translation").display, "a trap VM's empty translation"
        await press(pilot, "v")
        assert app.query_one("#translation").display and app.query_one("#tc").display


@pytest.mark.parametrize("size", [(160, 50), (200, 50)])
@synchronously
async def test_a_long_event_wraps_instead_of_being_cut(size):
    app = flags_app("trap")
    async with app.run_test(size=size) as pilot:
        await app.settle()
        app.engine.submit(Seek(4080))
        await app.settle()
        await pilot.pause()
        text = " ".join(app.query_one("#events", Pane).render().plain.split())
        assert "the interrupt flag around critical sections" in text, text
        assert "4,080 hole" in text, "the last event is shown"


@synchronously
async def test_the_vms_pane_wraps_why_a_vm_crashed():
    app = VmlabApp(Session(vms=[(load_guest("crasher"), "trap")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        app.engine.submit(Seek(10**9))  # to its end: the triple fault
        await app.settle()
        await pilot.pause()
        text = " ".join(app.query_one("#vms", Pane).render().plain.split())
        assert "could not be delivered (IDT has no entry 0x8)" in text, text


def test_the_code_pane_does_not_repeat_what_the_source_already_says(asm):
    """Numbers spelled another way, `short`, a label before data: one column, not two."""
    image = asm(
        """
        start:
            mov al, 13
            cmp al, 0x0d
            jmp short next
        magic: dd 0x1BADB002
        next:
            mov dx, 0x501
            out dx, al
        """
    )

    @synchronously
    async def rows() -> None:
        app = VmlabApp(Session(vms=[(image, "native")]))
        async with app.run_test(size=(160, 50)) as pilot:
            await app.settle()
            await pilot.pause()
            text = app.query_one("#code", Pane).render().plain.splitlines()
            said = {word: next(r for r in text if word in r) for word in SAID_ONCE}
            for word, row in said.items():
                assert row.split(word)[1].strip() == "", row
            jump = next(r for r in text if "jmp short next" in r)
            assert "jmp 0x" in jump, jump

    rows()


@synchronously
async def test_at_80_columns_the_status_line_keeps_the_state_on_the_host_clock():
    app = flags_app("trap", "native")
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settle()
        await press(pilot, "h", "c")
        status = screen_text(app)["status"]
        assert len(status) <= 80 and "host step" in status and "‖ paused" in status, status
        await pilot.resize_terminal(160, 50)
        await pilot.pause()
        assert "last: popfd" in screen_text(app)["status"]


@synchronously
async def test_a_cut_code_row_says_it_is_cut_rather_than_showing_a_shorter_offset():
    """At 80 columns a C kernel's row (`mov …  ; fb_write_cell+0x11 kernel.c:9`) is cut:
    cut without a mark, `+0x11` read as `+0`, another place in the function."""
    app = VmlabApp(Session(vms=[(load_guest("course", cmdline="exit"), "native")]))
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settle()
        rendered = await code_rows_at(app, pilot, 20_000)
        rows = {f"{row.address:08x}": row.text for row in app.engine.snapshot().vm.code}
        cut = 0
        for line in rendered:
            address = next((word for word in line.split() if word in rows), None)
            if address is None or rows[address] in line:
                continue
            cut += 1
            assert "…" in line, line
        assert cut, "nothing was cut at 80 columns: the test shows nothing"
