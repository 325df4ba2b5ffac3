"""The FPU and SSE as a kernel turns them on and saves them (FNINIT, x87 and SSE arithmetic,
FXSAVE at a task switch): the same under every mode and under QEMU.

`tests/guests/fpu_state` prints one pass/fail line per check. Under bt, FXSAVE in
translated code saves another FPU state (control word 0, every register tagged valid), so a
kernel that saves and restores its tasks' FPU state this way would lose it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.session import run_guest
from tests.conftest import needs_nasm
from tests.test_platform import QEMU, build, probes_pass, qemu_serial

BT_FXSAVE = pytest.mark.xfail(
    strict=True, reason="bt: FXSAVE in translated code saves another FPU state (vmm/bt/)"
)


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", pytest.param("bt", marks=BT_FXSAVE), "pv"])
def test_a_kernel_sets_up_and_saves_the_fpu_alike_in_every_mode(tmp_path: Path, mode: str):
    probes_pass(tmp_path, "fpu_state", mode, checks=4, max_insns=100_000)


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")
def test_qemu_prints_the_same(tmp_path: Path) -> None:
    kernel = build(tmp_path, "fpu_state")
    assert qemu_serial(kernel) == run_guest(load_guest(str(kernel)), "native").console
