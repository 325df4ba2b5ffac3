"""The encapsulation commands from the command line: suspend, resume, snapshot, clone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmlab.cli import main


def console_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return "".join(
        line for line in out.splitlines(keepends=True) if not line.startswith(("──", "   "))
    )


def test_suspend_then_resume_prints_what_the_uninterrupted_run_prints(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    file = tmp_path / "timer.vmlab"
    whole = console_of(capsys, ["run", "timer", "--mode", "trap"])
    before = console_of(
        capsys, ["run", "timer", "--mode", "trap", "--suspend-at", "30000", "-o", str(file)]
    )
    after = console_of(capsys, ["resume", str(file), "--mode", "bt"])
    assert before + after == whole and before and after


def test_a_suspended_kernel_keeps_its_boot_options_and_ram(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`--suspend-at` boots the kernel as a plain run does: its command line, modules and
    RAM (before, none of them: an empty command line and 4 MiB)."""
    file = tmp_path / "course.vmlab"
    boot = ["run", "course", "--cmdline", "exit"]
    whole = console_of(capsys, boot)
    before = console_of(capsys, [*boot, "--suspend-at", "3000", "-o", str(file)])
    after = console_of(capsys, ["resume", str(file)])
    assert before + after == whole
    assert "command line: 'exit'\nmemory: 639 KiB below 1 MiB, 129920 KiB above\n" in whole


def test_resume_json_and_a_second_suspension(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first, second = tmp_path / "a.vmlab", tmp_path / "b.vmlab"
    assert main(["run", "syscalls", "--suspend-at", "5000", "-o", str(first)]) == 0
    capsys.readouterr()
    assert main(["resume", str(first), "--suspend-at", "9000", "-o", str(second), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["suspended"]["step"] == 9000
    assert main(["resume", str(second), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["suspended"] is None and report["vms"][0]["exit"]["reason"] == "debug_exit"
    assert report["vms"][0]["instructions"]["total"] == 29713


def test_a_broken_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    file = tmp_path / "vm.vmlab"
    assert main(["run", "hello", "--suspend-at", "100", "-o", str(file)]) == 0
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x40
    file.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["resume", str(file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vm.vmlab: section" in err and "corrupt" in err


def test_resuming_a_ported_kernel_under_trap_says_why_not(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    file = tmp_path / "pv.vmlab"
    assert main(["run", "hello", "--mode", "pv", "--suspend-at", "100", "-o", str(file)]) == 0
    assert main(["resume", str(file), "--mode", "trap"]) == 2
    assert "paravirtualized kernel" in capsys.readouterr().err


def test_a_snapshot_script_undoes_a_misconfiguration(capsys: pytest.CaptureFixture[str]) -> None:
    actions = ["run 20000", "take good", "break-idt", "run 100000", "revert good", "run 400000"]
    assert main(["snapshot", "timer", "--mode", "trap", *actions, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [a.get("exit") for a in out["actions"]] == [
        None,
        None,
        None,
        "crashed",
        None,
        "debug_exit",
    ]
    assert "both tasks are done" in out["actions"][-1]["console"]
    assert out["tree"] == [
        {"name": "good", "parent": None, "step": 20000, "depth": 0, "current": True}
    ]
    assert main(["snapshot", "timer", "revert nothing"]) == 2
    assert "no snapshot named 'nothing'" in capsys.readouterr().err


def test_clones_report_the_host_ram_they_save(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    file = tmp_path / "booted.vmlab"
    assert main(["run", "whoami", "--suspend-at", "1049975", "-o", str(file)]) == 0
    capsys.readouterr()
    assert main(["clone", str(file), "3", "--prefix", "db", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [vm["console"].splitlines()[2] for vm in out["vms"]] == [
        "I am db-1",
        "I am db-2",
        "I am db-3",
    ]
    memory = out["memory"]
    assert memory["saved_bytes"] > 2 * memory["ram_size"] - (64 << 12)
