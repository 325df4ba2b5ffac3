"""The FPU as kernels set it up, save it and switch it between tasks: the same under every
mode and under QEMU.

`tests/guests/fpu_state` turns the FPU and SSE on (CR0.EM off, CR4.OSFXSR), computes with
both and saves the state with FXSAVE, as at a task switch. `tests/guests/lazy_fpu` switches
lazily: CR0.TS set makes the next FPU instruction raise #NM, whose handler runs CLTS.
`fpu_switch` checks the state out of reset and across an interrupt, a trap and a port
access (a monitor's world switch restores a CPU context: machine/fpucarry.py keeps the
guest's FPU in it); `fpu_stores` stores with the instructions unicorn makes in a helper onto
the page of their own code (under bt a write-protected page of translated code, where such a
store cannot be restarted); `simd` uses what CPUID offers (MMX, FXSR, SSE, SSE2, SSE3),
with the #UD an SSE instruction raises before the kernel sets CR4.OSFXSR (which a monitor
mirrors into the real CR4); `fpu_faults` leaves an x87 exception pending across a trap, and
the next FWAIT raises #MF. Each prints one pass/fail line per check. Under the monitors the
guest's MP, EM and TS are the real CR0's too (vmm/trap.py), so the CPU raises the #NM.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hypervisor.events import AdaptiveRetranslation
from hypervisor.guest.image import load_guest
from hypervisor.session import run_guest
from tests.conftest import needs_nasm
from tests.test_platform import QEMU, build, probes_pass, qemu_serial

MODES = ["native", "trap", "bt", "pv"]
GUESTS = ["fpu_state", "fpu_switch", "fpu_stores", "simd", "fpu_faults"]


@needs_nasm
@pytest.mark.parametrize("mode", MODES)
def test_a_kernel_sets_up_and_saves_the_fpu_alike_in_every_mode(tmp_path: Path, mode: str):
    probes_pass(tmp_path, "fpu_state", mode, checks=4, max_insns=100_000)


@needs_nasm
@pytest.mark.parametrize("mode", MODES)
def test_the_fpu_state_is_the_kernels_across_interrupts_and_traps(tmp_path: Path, mode: str):
    probes_pass(tmp_path, "fpu_switch", mode, checks=9, max_insns=100_000)


@needs_nasm
def test_one_fxsave_to_a_code_page_is_one_store_fault_under_bt(tmp_path: Path) -> None:
    """FXSAVE's 32 stores each fault on the write-protected page: adaptive retranslation
    counts them as one fault of one instruction (it adapts after a few), not 32."""
    guest = load_guest(str(build(tmp_path, "fpu_state")))
    report = run_guest(guest, "bt", max_insns=100_000, keep_events=True)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)
    adapted = [e for e in report.events if isinstance(e, AdaptiveRetranslation)]
    assert adapted == []


@needs_nasm
@pytest.mark.parametrize("mode", MODES)
def test_the_simd_features_cpuid_offers_work_as_a_kernel_uses_them(tmp_path: Path, mode: str):
    probes_pass(tmp_path, "simd", mode, checks=9, max_insns=100_000)


@needs_nasm
@pytest.mark.parametrize("mode", MODES)
def test_a_pending_x87_exception_raises_mf_after_a_trap(tmp_path: Path, mode: str) -> None:
    probes_pass(tmp_path, "fpu_faults", mode, checks=1, max_insns=100_000)


@needs_nasm
@pytest.mark.parametrize("mode", MODES)
def test_fpu_stores_made_by_a_helper_reach_a_code_page(tmp_path: Path, mode: str) -> None:
    probes_pass(tmp_path, "fpu_stores", mode, checks=6, max_insns=100_000)


@needs_nasm
@pytest.mark.parametrize("mode", MODES)
def test_ts_makes_the_next_fpu_instruction_raise_nm(tmp_path: Path, mode: str) -> None:
    probes_pass(tmp_path, "lazy_fpu", mode, checks=4, max_insns=100_000)


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")
@pytest.mark.parametrize("name", [*GUESTS, "lazy_fpu"])
def test_qemu_prints_the_same(tmp_path: Path, name: str) -> None:
    kernel = build(tmp_path, name)
    assert qemu_serial(kernel) == run_guest(load_guest(str(kernel)), "native").console
