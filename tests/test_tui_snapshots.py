"""SVG snapshots of the main screens (pytest-textual-snapshot). A baseline is an image of the
real app driving real guests: after `--snapshot-update`, look at each changed one.

The main screen is shown with flags under trap beside bare metal, whose output is settled;
binary translation has a snapshot of its own, which changes whenever the translator does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from hypervisor.guest.image import load_guest
from hypervisor.trace import tracefile
from lessons.lesson import load
from lessons.walk import images
from tui.app import VmlabApp, open_trace
from tui.engine import Session

FLAGS = load_guest("flags")


def keys(*presses: str) -> Callable[[Pilot], Awaitable[None]]:
    """Wait for the engine after start and after each key: snapshots of a settled screen."""

    async def run(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, VmlabApp)
        await app.settle()
        for key in presses:
            await pilot.press(key)
            await app.settle()
        await pilot.pause()

    return run


def flags(*modes: str) -> VmlabApp:
    return VmlabApp(Session(vms=[(FLAGS, mode) for mode in modes]))


def test_main_screen_at_80_by_24(snap_compare):
    assert snap_compare(flags("trap", "native"), terminal_size=(80, 24), run_before=keys("h"))


def test_main_screen_at_160_by_50(snap_compare):
    assert snap_compare(flags("trap", "native"), terminal_size=(160, 50), run_before=keys("h"))


def test_main_screen_at_200_by_50(snap_compare):
    assert snap_compare(flags("trap", "native"), terminal_size=(200, 50), run_before=keys("h"))


def test_binary_translation_at_160_by_50(snap_compare):
    """What `vmlab` opens (flags under trap, then under bt), on the bt VM."""
    app = flags("trap", "bt")
    assert snap_compare(app, terminal_size=(160, 50), run_before=keys("h", "v"))


@pytest.fixture
def annotated_trace(tmp_path: Path) -> Path:
    trace = tracefile.record(FLAGS, "trap", 6000)
    trace.recording.annotations[4080] = "POPF at CPL 1 left IF at 0: nobody noticed"
    path = tmp_path / "flags.vmtrace"
    tracefile.save(path, trace)
    return path


def test_replay_of_a_trace(snap_compare, annotated_trace):
    app = VmlabApp(open_trace(str(annotated_trace)))
    assert snap_compare(app, terminal_size=(160, 50), run_before=keys("h"))


def test_help_screen(snap_compare):
    app = flags("trap", "native")
    assert snap_compare(app, terminal_size=(100, 40), run_before=keys("question_mark"))


def test_help_screen_at_80_by_24_scrolled_a_page_down(snap_compare):
    app = flags("trap", "native")
    assert snap_compare(app, terminal_size=(80, 24), run_before=keys("question_mark", "pagedown"))


def test_high_contrast_light_theme(snap_compare):
    app = flags("trap", "native")
    assert snap_compare(app, terminal_size=(160, 50), run_before=keys("h", "ctrl+t"))


def test_a_lesson_at_its_popf_stop(snap_compare):
    """`vmlab lesson 01-trap-and-emulate`, two stops in: the hole, and the lesson's text."""
    lesson = load("01-trap-and-emulate")
    app = VmlabApp(Session(vms=images(lesson), lesson=lesson))
    assert snap_compare(app, terminal_size=(160, 50), run_before=keys("n", "n"))


def test_the_course_kernel_at_a_breakpoint_in_c(snap_compare):
    """The code pane beside a C kernel: function+offset, file:line and the line's text."""
    app = VmlabApp(Session(vms=[(load_guest("course"), "native")], breakpoints=("kmain",)))
    assert snap_compare(app, terminal_size=(160, 50), run_before=keys())
