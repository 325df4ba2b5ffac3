"""The Intel MP tables a multiboot kernel finds: a test kernel searches for them as xv6 does
and prints every field, the same under every mode and, where QEMU is installed, as
`qemu-system-i386 -kernel` prints it."""

from __future__ import annotations

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.platform.board import MemoryType, memory_map
from hypervisor.platform.mptable import FLOATING_POINTER, mp_tables
from hypervisor.session import run_guest
from tests.conftest import needs_nasm
from tests.test_platform import QEMU, build, qemu_serial

EXPECTED = (
    """\
floating pointer: checksum ok, length 01, spec rev 04, features 00000000 00
config table: PCMP, checksum ok, spec rev 04, oem 'BOCHSCPU', product '0.1         ', \
oem table 00000000, local apic fee00000, extended length 0000
processor: apic id 00, version 14, flags 03, signature as cpuid, features as cpuid
bus 00: 'PCI   '
bus 01: 'ISA   '
io apic: id 00, version 11, flags 01, address fec00000
"""
    + "".join(
        f"io interrupt: type 00, flags 0000, bus 01 irq {irq:02x} -> apic 00 pin {pin:02x}\n"
        for irq, pin in [(0, 2), (1, 1), (3, 3), (4, 4), (6, 6), (7, 7), (8, 8)]
        + [(i, i) for i in range(12, 16)]
    )
    + """\
local interrupt: type 03, flags 0000, bus 01 irq 00 -> apic 00 pin 00
local interrupt: type 01, flags 0000, bus 01 irq 00 -> apic ff pin 01
end of table
"""
)


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_a_kernel_finds_the_mp_tables_qemus_pc_gives_under_every_mode(tmp_path, mode):
    report = run_guest(load_guest(str(build(tmp_path, "mp_tables"))), mode, max_insns=2_000_000)
    assert report.console == EXPECTED
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="QEMU is not installed")
def test_qemus_firmware_gives_the_same_mp_tables(tmp_path):
    assert qemu_serial(build(tmp_path, "mp_tables")) == EXPECTED


def test_the_tables_lie_in_the_bios_area_the_memory_map_reserves():
    end = FLOATING_POINTER + len(mp_tables())
    [bios] = [r for r in memory_map(32 << 20) if r.base <= FLOATING_POINTER < r.end]
    assert bios.type is MemoryType.RESERVED
    assert end <= bios.end
