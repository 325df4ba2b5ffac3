"""Lessons with snapshots: a stop takes one, gives the guest input, reverts — the universal
undo, on the real engine (`lessons/08-snapshots.toml`: misconfigured, crashed, reverted, run
again to a clean end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lessons.lesson import LessonError, SnapshotVerb, load
from lessons.walk import images, walk
from tests.test_tui import press, synchronously
from tui.app import VmlabApp
from tui.engine import Session
from vmlab.cli import main

HEAD = 'title = "t"\nguests = [["misconfig", "trap"]]\n'


def stop(body: str) -> str:
    return f'[[stop]]\ntext = "t"\n{body}\n'


def test_the_snapshot_lesson_crashes_reverts_and_ends_well() -> None:
    landings = list(walk(load("08-snapshots")))
    assert [landing.problems for landing in landings] == [()] * len(landings)
    taken, crashed, reverted, ended = landings[1], landings[3], landings[4], landings[5]
    assert taken.stop.snapshot is not None and taken.stop.snapshot.verb is SnapshotVerb.TAKE
    assert reverted.step == taken.step  # back where the snapshot was taken
    assert crashed.stop.expect["state"] == "crashed" and ended.stop.expect["state"] == "exited"


def test_a_revert_forgets_the_input_given_after_the_snapshot(tmp_path: Path) -> None:
    """The '!' came after the snapshot: once reverted, the kernel never sees it."""
    text = HEAD + "".join(
        [
            stop('go = "forward 1500"\nsnapshot = "take a"'),
            stop('go = "forward 10"\ninput = { serial = "!" }'),
            stop('snapshot = "revert a"'),
            stop('go = "next state"\nexpect = { state = "exited" }'),
        ]
    )
    lesson = tmp_path / "undo.toml"
    lesson.write_text(text)
    assert [landing.problems for landing in walk(load(str(lesson)))] == [()] * 4


def test_an_input_goes_in_where_the_recording_ends(tmp_path: Path) -> None:
    text = HEAD + stop('go = "forward 2000"') + stop('go = "step 100"\ninput = { keys = "a" }')
    lesson = tmp_path / "middle.toml"
    lesson.write_text(text)
    last = list(walk(load(str(lesson))))[-1]
    assert last.problems == ("an input goes in where the run is recorded to (step 2,000)",)


def test_the_walk_prints_what_each_stop_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lesson", "08-snapshots", "--walk"]) == 0
    out = capsys.readouterr().out
    assert "stop 2 · forward 1500 · take good" in out and "stop 3 · forward 100 · serial '!'" in out
    assert "stop 5 · revert good · VM 0" in out


@pytest.mark.parametrize(
    "body, problem",
    [
        ('snapshot = "revert a"', "stop 1: no earlier stop takes 'a'"),
        ('go = "start"\nsnapshot = "keep a"', 'snapshot must be "take NAME" or "revert NAME"'),
        ('go = "start"\ninput = { serial = "@5:x" }', "given at the stop's step"),
        ('go = "start"\ninput = { mouse = "x" }', "input is one of"),
        ('go = "start"\ninput = { keys = "é" }', "a character no key of a US keyboard types"),
    ],
)
def test_a_broken_snapshot_stop_gets_one_line(tmp_path: Path, body: str, problem: str) -> None:
    lesson = tmp_path / "broken.toml"
    lesson.write_text(HEAD + stop(body))
    with pytest.raises(LessonError, match=problem):
        load(str(lesson))


def test_snapshots_are_not_on_the_hosts_clock(tmp_path: Path) -> None:
    lesson = tmp_path / "host.toml"
    lesson.write_text(
        'title = "t"\nclock = "host"\nguests = [["misconfig", "trap"], ["hog", "trap"]]\n'
        + stop('go = "start"\nsnapshot = "take a"')
    )
    with pytest.raises(LessonError, match="not on the host's clock"):
        load(str(lesson))


def test_two_snapshots_of_one_name(tmp_path: Path) -> None:
    lesson = tmp_path / "twice.toml"
    lesson.write_text(
        HEAD + stop('go = "start"\nsnapshot = "take a"') + stop('go = "start"\nsnapshot = "take a"')
    )
    with pytest.raises(LessonError, match="stop 2: a snapshot 'a' exists already"):
        load(str(lesson))


@synchronously
async def test_the_ui_follows_the_snapshot_lesson() -> None:
    lesson = load("08-snapshots")
    app = VmlabApp(Session(vms=images(lesson), lesson=lesson))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        seen = []
        for _ in lesson.stops[1:]:
            await press(pilot, "n")
            snapshot = app.snapshot
            assert snapshot is not None and snapshot.lesson is not None
            seen.append((snapshot.lesson.index, snapshot.lesson.problems, snapshot.vm.state))
        assert [(index, problems) for index, problems, _ in seen] == [(i, ()) for i in range(1, 6)]
        assert seen[2][2] == "crashed" and seen[4][2] == "exited"
        assert (
            app.snapshot is not None and app.snapshot.vm.step == 3_386
        )  # the run to its clean end, after the revert
