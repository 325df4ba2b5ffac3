"""A recording that ends with the guest asleep for ever (HLT, interrupts on, nothing armed:
the course kernel at its prompt, most course kernels in their idle loop) replays exactly:
`vmlab replay --check` runs to the same end, not to the budget one step short of finding
the sleep (`tests/guests/sleeps`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hypervisor.guest.nasm import assemble
from vmlab.cli import main

GUESTS = Path(__file__).parent / "guests"


def test_prebuilt_sleeps_is_fresh() -> None:
    if shutil.which("nasm") is None:
        pytest.skip("nasm is not installed")
    data, _ = assemble(GUESTS / "sleeps.asm")
    assert data == (GUESTS / "sleeps.bin").read_bytes(), "rebuild sleeps.bin"


@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_a_recording_that_ends_asleep_replays_exactly(mode: str, tmp_path: Path, capsys) -> None:
    trace = str(tmp_path / "sleeps.vmtrace")
    assert main(["record", str(GUESTS / "sleeps.bin"), "--mode", mode, "-o", trace]) == 0
    assert "(halted)" in capsys.readouterr().out
    assert main(["replay", "--check", trace]) == 0
    assert "replays exactly" in capsys.readouterr().out
