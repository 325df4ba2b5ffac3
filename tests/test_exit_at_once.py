"""A debug exit ends the run at its instruction in every mode: the accesses after it (a
line on COM1, Bochs' shutdown port that kvm-unit-tests' exit() tries next) reach no device
and show nowhere — under bt too, where translated code runs its block to the end before the
CPU stops (`tests/guests/exit_at_once`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.guest.nasm import assemble
from hypervisor.session import run_guest

GUESTS = Path(__file__).parent / "guests"


def test_prebuilt_exit_at_once_is_fresh() -> None:
    if shutil.which("nasm") is None:
        pytest.skip("nasm is not installed")
    data, _ = assemble(GUESTS / "exit_at_once.asm")
    assert data == (GUESTS / "exit_at_once.bin").read_bytes(), "rebuild exit_at_once.bin"


@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_nothing_happens_after_the_debug_exit(mode: str) -> None:
    report = run_guest(load_guest(str(GUESTS / "exit_at_once.bin")), mode)
    assert report.exit.reason == "debug_exit" and report.exit.status == 0
    assert report.console == "A\n"
    assert report.isolation["unanswered"]["ports"] == []
