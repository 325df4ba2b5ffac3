"""The README's examples stay true: every block that shows `$ vmlab …` and what it printed is
run, and what it prints now must be what the README shows (the guest of "Writing your own
guest" saved where the README says, outside sample_guests/)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import needs_nasm
from vmlab.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text())]


def shown_runs() -> list[tuple[str, list[str]]]:
    """(command, the lines the README shows it printing) for each `$ vmlab` line."""
    runs: list[tuple[str, list[str]]] = []
    for _, body in blocks():
        for line in body.splitlines():
            if line.startswith("$ "):
                runs.append((line[2:], []))
            elif runs and body.startswith("$ "):
                runs[-1][1].append(line)
    return runs


def own_guest() -> str:
    return next(body for language, body in blocks() if language == "nasm")


def test_the_readme_shows_commands_with_their_output():
    assert [command for command, _ in shown_runs()] == [
        "vmlab compare flags",
        "vmlab run my_kernel.asm --mode trap --trace",
    ]


@needs_nasm
@pytest.mark.parametrize(("command", "shown"), shown_runs(), ids=lambda c: str(c)[:40])
def test_a_readme_example_prints_what_the_readme_shows(
    command, shown, tmp_path, monkeypatch, capsys
):
    (tmp_path / "my_kernel.asm").write_text(own_guest())
    monkeypatch.chdir(tmp_path)
    program, *args = shlex.split(command)
    assert program == "vmlab"
    assert main(args) == 0
    printed = [line.rstrip() for line in capsys.readouterr().out.rstrip("\n").splitlines()]
    assert printed == shown
