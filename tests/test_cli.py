"""`vmlab` as a user meets it: commands, JSON, and clear errors instead of tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import needs_nasm
from vmlab.cli import main


def vmlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmlab.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_run_json_has_the_documented_shape(capsys):
    assert main(["run", "hello", "--mode", "trap", "--json"]) == 0
    vm = json.loads(capsys.readouterr().out)["vms"][0]
    assert vm["guest"] == "hello" and vm["mode"] == "trap"
    assert vm["exit"] == {"reason": "debug_exit", "status": 0, "detail": vm["exit"]["detail"]}
    assert set(vm["instructions"]) >= {
        "total",
        "direct",
        "trapped",
        "translated",
        "hypercall",
        "native",
    }
    assert (
        vm["instructions"]["total"] == vm["instructions"]["direct"] + vm["instructions"]["trapped"]
    )
    assert vm["traps"]["out"] > 0
    assert vm["holes"] == {}
    assert "Hello" in vm["console"] or "hello" in vm["console"].lower()


def test_traced_run_reports_holes(capsys):
    assert main(["run", "redpill", "--mode", "trap", "--trace", "--json"]) == 1  # it found us
    vm = json.loads(capsys.readouterr().out)["vms"][0]
    assert {"sgdt", "sidt", "str", "smsw", "mov cs"} <= set(vm["holes"])


def test_plain_run_prints_console_then_summary(capsys):
    assert main(["run", "flags", "--mode", "trap", "--trace"]) == 1  # its ticks never came
    out = capsys.readouterr().out
    assert "flags under trap" in out
    assert "popfd" in out


def test_compare_shows_every_mode_and_the_culprit(capsys):
    assert main(["compare", "flags"]) == 0
    out = capsys.readouterr().out
    assert "native" in out and "trap" in out
    assert "DIFFERS" in out
    assert "popfd" in out


def test_budget_is_respected(capsys):
    assert main(["run", "timer", "--max-insns", "1000", "--json"]) == 4
    vm = json.loads(capsys.readouterr().out)["vms"][0]
    assert vm["exit"]["reason"] == "budget"
    assert vm["instructions"]["total"] == 1000


def test_the_exit_status_tells_a_clean_exit_from_a_crash(capsys):
    assert main(["run", "hello"]) == 0
    assert main(["run", "crasher"]) == 3
    assert main(["run", "hello", "crasher", "--json"]) == 3
    assert "exit status" in vmlab("run", "--help").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-guest"], "not a sample guest"),
        (["run", "missing.bin"], "no such file"),
        (["run", "missing.asm"], "no such file"),
        (["run", "hello", "--max-insns", "0"], "at least 1"),
    ],
)
def test_bad_input_gives_one_clear_line(args, message):
    done = vmlab(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_asm_without_nasm_says_how_to_get_it(tmp_path):
    source = tmp_path / "g.asm"
    source.write_text("bits 32\norg 0x100000\nhlt\n")
    env = {**os.environ, "PATH": str(tmp_path)}
    done = vmlab("run", str(source), env=env)
    assert done.returncode == 2
    assert "nasm is not installed" in done.stderr


@needs_nasm
def test_a_broken_asm_shows_nasm_error(tmp_path):
    source = tmp_path / "bad.asm"
    source.write_text("bits 32\norg 0x100000\n  movv eax, 1\n")
    done = vmlab("run", str(source))
    assert done.returncode == 2
    assert "nasm failed" in done.stderr and "Traceback" not in done.stderr


def test_a_bin_runs_as_it_is(tmp_path):
    image = tmp_path / "tiny.bin"
    image.write_bytes(bytes.fromhex("b00766ba0105ee"))  # mov al,7; mov dx,0x501; out dx,al
    done = vmlab("run", str(image), "--json")
    assert json.loads(done.stdout)["vms"][0]["exit"]["status"] == 7


def test_an_oversized_bin_is_refused(tmp_path):
    image = tmp_path / "huge.bin"
    image.write_bytes(b"\x90" * (3 << 20))
    done = vmlab("run", str(image))
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_guests_lists_the_samples():
    assert "hello" in vmlab("guests").stdout.split()


def test_no_arguments_introduces_the_tool():
    done = vmlab()
    assert done.returncode == 0 and "vmlab" in done.stdout
