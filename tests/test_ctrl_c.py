"""Ctrl-C stops any run at once — even deep inside one long unicorn slice — with the summary
so far and exit status 130, never a KeyboardInterrupt traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

FOREVER = "5000000000"  # instructions: minutes of hog, were it not stopped


def interrupted(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `vmlab ARGS`, press Ctrl-C once it is running, and wait for it to end."""
    command = [sys.executable, "-m", "vmlab.cli", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tasks = f"/proc/{process.pid}/task"
    for _ in range(600):  # the Ctrl-C thread is up: the handler is in place, the run begins
        if process.poll() is not None or len(os.listdir(tasks)) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the run
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=20)  # it used to run on (and on) regardless
    finally:
        if process.poll() is None:  # a failed test leaves no hog behind to slow the others
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_ctrl_c_stops_a_long_run_with_its_summary_and_status_130(mode):
    done = interrupted("run", "hog", "--mode", mode, "--max-insns", FOREVER)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert f"hog under {mode}: interrupted" in done.stdout
    assert "instructions:" in done.stdout


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_ctrl_c_stops_a_host_of_vms_and_the_json_says_so():
    done = interrupted("run", "hello", "hog", "--max-insns", FOREVER, "--json")
    assert done.returncode == 130, done.stderr
    hello, hog = json.loads(done.stdout)["vms"]
    assert hello["exit"]["reason"] in ("debug_exit", "interrupted")  # (if it had not finished)
    assert hog["exit"]["reason"] == "interrupted" and hog["state"] == "paused"
