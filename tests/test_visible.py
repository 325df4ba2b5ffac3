"""Text from a guest or a file reaches the terminal with its control characters shown, never
obeyed: the console of a run, a trace file's names and notes, the UI's panes and status."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from hypervisor.guest.image import load_guest
from hypervisor.text import visible
from hypervisor.trace import tracefile
from tests.conftest import needs_nasm
from tui.app import VmlabApp, open_trace
from tui.engine_commands import Seek

ESCAPES = str(Path(__file__).parent / "guests" / "escapes.asm")
ATTACK = "\x1b]0;owned\x07\x1b[2J\x9b"


def vmlab(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "vmlab.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_every_control_character_is_shown_and_line_breaks_kept_only_for_lines():
    assert visible(ATTACK) == "␛]0;owned␇␛[2J\\x9b"
    assert visible("a\tb\r\nc", lines=True) == "a\tb\nc"  # a serial console's CR LF
    assert visible("a\rb\n\r", lines=True) == "a␍b\n␍"  # a CR alone would overwrite
    assert visible("info\n\x00", lines=True) == "info\n"  # a terminal shows no NUL
    assert visible("a\x00b") == "a␀b"
    assert visible("a\nb") == "a␊b"
    assert visible("ordinary text: é ✓") == "ordinary text: é ✓"


@needs_nasm
def test_a_guest_console_attack_is_printed_not_obeyed():
    done = vmlab("run", ESCAPES)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout and "\r" not in done.stdout
    assert "␛]0;owned␇␛[2Jhello\n" in done.stdout  # its CR LF: a line break


def crafted_trace(tmp_path: Path) -> Path:
    trace = tracefile.record(load_guest("hello"), "trap", 2000)
    trace.image = type(trace.image)(ATTACK + "hello", trace.image.data, trace.image.lines)
    trace.recording.annotations[100] = ATTACK + "note"
    path = tmp_path / "crafted.vmtrace"
    tracefile.save(path, trace)
    return path


def test_replay_check_shows_a_crafted_name_visibly(tmp_path):
    done = vmlab("replay", str(crafted_trace(tmp_path)), "--check")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "␛]0;owned␇" in done.stdout


def test_the_ui_shows_a_crafted_name_and_note_visibly(tmp_path):
    app = VmlabApp(open_trace(str(crafted_trace(tmp_path))))

    async def look() -> None:
        async with app.run_test(size=(160, 50)):
            await app.settle()
            app.engine.submit(Seek(150))
            await app.settle()
            view = app.snapshot.vm
            assert view.name.startswith("␛]0;owned␇") and view.guest.startswith("␛")
            assert any(row.text == "✎ ␛]0;owned␇␛[2J\\x9bnote" for row in view.events)
            status = str(app.query_one("#status").render())
            assert "\x1b" not in status and "\x07" not in status

    asyncio.run(look())
