"""Lessons: every stop lands where its text says, on the real engine; a bad lesson file gets
one line; the UI follows a lesson with n and p."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypervisor.guest.image import load_guest
from lessons.lesson import available, load
from lessons.walk import images
from tests.test_tui import press, synchronously
from tui.app import VmlabApp
from tui.engine import Session
from vmlab.cli import main


@pytest.mark.parametrize("name", available())
def test_every_stop_of_every_lesson_shows_what_it_expects(name, capsys):
    assert main(["lesson", name, "--walk"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "not as expected" not in out
    assert out.count("\nstop ") == len(load(name).stops)


def test_the_lessons_are_listed_with_their_titles(capsys):
    assert main(["lesson"]) == 0
    out = capsys.readouterr().out
    for name in available():
        assert f"{name} " in out and load(name).title in out


WRONG = """
title = "expects CLI where the POPF hole is"
guests = [["flags", "trap"]]
[[stop]]
go = "next hole"
text = "the hole"
expect = { last = "cli", class = "trapped" }
"""


def test_a_stop_the_engine_does_not_bear_out_fails_its_walk(tmp_path: Path, capsys):
    lesson = tmp_path / "wrong.toml"
    lesson.write_text(WRONG)
    assert main(["lesson", str(lesson), "--walk"]) == 1
    out = capsys.readouterr().out
    assert "not as expected: the last instruction is 'popfd', not 'cli'" in out
    assert "not as expected: it ran direct, not trapped" in out


GOOD_STOP = '[[stop]]\ngo = "start"\ntext = "t"\n'


@pytest.mark.parametrize(
    "text, problem",
    [
        ("title = ", "not a lesson file"),
        (GOOD_STOP, "a lesson needs a title"),
        ('title = "t"\n' + GOOD_STOP, "`guests` must list"),
        ('title = "t"\nguests = [["flags"]]\n' + GOOD_STOP, "not a [guest, mode] pair"),
        ('title = "t"\nguests = [["flags", "trap"]]\n', "at least one [[stop]]"),
        (
            'title = "t"\nguests = [["flags", "trap"]]\n[[stop]]\ngo = "jump 3"\ntext = "t"',
            "stop 1: go must be",
        ),
        (
            'title = "t"\nguests = [["flags", "trap"]]\n[[stop]]\ngo = "step x"\ntext = "t"',
            "stop 1: step needs a number",
        ),
        ('title = "t"\nguests = [["flags", "trap"]]\n' + GOOD_STOP + "vm = 2\n", "vm must be 0"),
        (
            'title = "t"\nguests = [["flags", "trap"]]\n' + GOOD_STOP + "expect = { eax = 1 }\n",
            "cannot expect eax",
        ),
        (
            'title = "t"\nguests = [["flags", "trap"]]\n' + GOOD_STOP + 'expect={class="odd"}\n',
            "no instruction class 'odd'",
        ),
        (
            'title = "t"\nguests = [["flags", "trap"], ["hog", "trap"]]\n[[stop]]\n'
            'go = "next switch"\ntext = "t"',
            "on the host's clock",
        ),
        ('title = "t"\nclock = "host"\nguests = [["flags", "trap"]]\n' + GOOD_STOP, "two guests"),
    ],
)
def test_a_broken_lesson_file_gets_one_line(tmp_path: Path, capsys, text, problem):
    lesson = tmp_path / "broken.toml"
    lesson.write_text(text)
    assert main(["lesson", str(lesson), "--walk"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vmlab: broken.toml: ") and problem in err
    assert err.count("\n") == 1


def test_an_unknown_lesson_names_the_lessons_there_are(capsys):
    assert main(["lesson", "no-such-lesson"]) == 2
    err = capsys.readouterr().err
    assert "no lesson 'no-such-lesson'" in err and available()[0] in err


def lesson_app(name: str) -> VmlabApp:
    lesson = load(name)
    return VmlabApp(Session(vms=images(lesson), lesson=lesson))


@synchronously
async def test_the_ui_follows_a_lesson_stop_by_stop():
    app = lesson_app("01-trap-and-emulate")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        assert app.snapshot.lesson.index == 0 and app.snapshot.vm.step == 0
        await press(pilot, "n", "n")
        view = app.snapshot.vm
        assert app.snapshot.lesson.index == 2 and not app.snapshot.lesson.problems
        assert (view.step, view.last.text, view.last.hole) == (4080, "popfd", True)
        await press(pilot, "n")  # the same step, the other VM
        assert (app.snapshot.focus, app.snapshot.vm.step) == (1, 4080)
        assert app.snapshot.vm.last.cls.value == "translated"
        await press(pilot, "s", "s", "p")  # wherever the user went, p goes to the stop before
        assert app.snapshot.lesson.index == 2 and app.snapshot.vm.step == 4080
        assert "Lesson · Trap-and-emulate" in str(app.query_one("#lesson-text").render())


@synchronously
async def test_without_a_lesson_n_and_p_do_nothing():
    app = VmlabApp(Session(vms=[(load_guest("flags"), "trap")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await press(pilot, "n", "p")
        assert app.snapshot.lesson is None and app.snapshot.vm.step == 0
        assert not app.query_one("#lesson").display
