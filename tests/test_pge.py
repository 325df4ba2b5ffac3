"""Global pages, which CPUID offers (PGE): `tests/guests/pge.asm` maps itself with the G flag
under CR4.PGE, as a kernel does to keep its translations across task switches, and checks
that CR4.PGE survives CR3 loads and that INVLPG and clearing CR4.PGE drop a global entry;
and that a page table entry's PAT flag (CPUID offers PAT) changes no mapping. The same in
every mode and under QEMU."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.session import run_guest
from tests.conftest import needs_nasm
from tests.test_platform import QEMU, build, probes_pass, qemu_serial


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_global_pages_work_as_cpuid_promises(tmp_path: Path, mode: str) -> None:
    probes_pass(tmp_path, "pge", mode, checks=7, max_insns=200_000)


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")
def test_qemu_prints_the_same(tmp_path: Path) -> None:
    kernel = build(tmp_path, "pge")
    assert qemu_serial(kernel) == run_guest(load_guest(str(kernel)), "native").console
