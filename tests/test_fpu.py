"""The FPU as kernels set it up, save it and switch it between tasks: the same under every
mode and under QEMU.

`tests/guests/fpu_state` turns the FPU and SSE on (CR0.EM off, CR4.OSFXSR), computes with
both and saves the state with FXSAVE, as at a task switch. `tests/guests/lazy_fpu` switches
lazily: CR0.TS set makes the next FPU instruction raise #NM, whose handler runs CLTS. Each
prints one pass/fail line per check. Known: under bt, FXSAVE in translated code saves
another FPU state (control word 0, every register tagged valid). Under the monitors the
guest's MP, EM and TS are the real CR0's too (vmm/trap.py), so the CPU raises the #NM.
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
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_ts_makes_the_next_fpu_instruction_raise_nm(tmp_path: Path, mode: str) -> None:
    probes_pass(tmp_path, "lazy_fpu", mode, checks=4, max_insns=100_000)


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")
@pytest.mark.parametrize("name", ["fpu_state", "lazy_fpu"])
def test_qemu_prints_the_same(tmp_path: Path, name: str) -> None:
    kernel = build(tmp_path, name)
    assert qemu_serial(kernel) == run_guest(load_guest(str(kernel)), "native").console
