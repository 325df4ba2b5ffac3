"""Segments whose base is not 0 (per-CPU data through FS and GS): the CPU adds the base to
every access, and so must a monitor's emulation and binary translation's rewrites. A test
kernel checks both kinds under every mode and, where QEMU is installed, prints what QEMU's
PC prints."""

from __future__ import annotations

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.session import run_guest
from tests.conftest import needs_nasm
from tests.test_platform import QEMU, build, probes_pass, qemu_serial

CHECKS = 10


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_segment_bases_hold_under_every_mode(tmp_path, mode):
    probes_pass(tmp_path, "segment_bases", mode, CHECKS, max_insns=100_000)


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="QEMU is not installed")
def test_qemu_prints_the_same(tmp_path):
    kernel = build(tmp_path, "segment_bases")
    ours = run_guest(load_guest(str(kernel)), "native", max_insns=100_000).console
    assert qemu_serial(kernel) == ours
