"""The PC platform's start-up devices (CMOS RTC, fw_cfg, PCI configuration, port 0x61), checked
by a test kernel that prints one pass/fail line per documented behaviour, under every mode and,
where QEMU is installed, against QEMU's PC."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hypervisor.devices.cmos import PIT_HZ, CmosRtc
from hypervisor.guest.image import load_guest
from hypervisor.machine.cpumodel import cpuid
from hypervisor.platform.board import VGA_TEXT
from hypervisor.session import run_guest
from tests.conftest import needs_nasm
from vmlab.cli import main

GUESTS = Path(__file__).parent / "guests"
QEMU = shutil.which("qemu-system-i386")


def qemu_serial(kernel: Path, *options: str, serial: Path | None = None) -> str:
    """What `kernel` prints on COM1 under `qemu-system-i386 -kernel` (ended through
    isa-debug-exit), kept in `serial` (by default beside the kernel)."""
    serial = serial or kernel.with_suffix(".serial")
    qemu = [str(QEMU), "-kernel", str(kernel), "-m", "32", "-display", "none", "-no-reboot"]
    qemu += ["-serial", f"file:{serial}", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    assert subprocess.run([*qemu, *options], timeout=30, check=False).returncode & 1
    return serial.read_text()


def qemu_screen(monitor: socket.socket, dump: Path, deadline: float) -> None:
    """Have QEMU save its VGA text buffer (80x25 cells) to `dump` through its monitor, and
    wait until the file is whole."""
    monitor.sendall(f'pmemsave {VGA_TEXT[0]:#x} 4000 "{dump}"\n'.encode())
    while not dump.exists() or dump.stat().st_size < 4000:
        assert time.monotonic() < deadline, "QEMU did not save the screen"
        time.sleep(0.05)


def probes_pass(tmp_path: Path, name: str, mode: str, checks: int, max_insns: int) -> str:
    """Run the probe kernel `name` (one "check: pass/FAIL" line each): every check passes
    and it ends with status 0. Its console."""
    report = run_guest(load_guest(str(build(tmp_path, name))), mode, max_insns=max_insns)
    assert "FAIL" not in report.console
    assert report.console.count(": pass\n") == checks
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)
    return report.console


def build(tmp_path: Path, name: str) -> Path:
    kernel = tmp_path / f"{name}.bin"
    source = GUESTS / f"{name}.asm"
    subprocess.run(
        ["nasm", "-f", "bin", "-i", f"{GUESTS}/", "-o", str(kernel), str(source)], check=True
    )
    return kernel


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_the_start_up_probes_pass_under_every_mode(tmp_path, mode):
    probes_pass(tmp_path, "pc_probes", mode, checks=48, max_insns=5_000_000)


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="QEMU is not installed")
def test_the_start_up_probes_print_what_they_print_under_qemu(tmp_path):
    kernel = build(tmp_path, "pc_probes")
    serial = qemu_serial(kernel, "-rtc", "base=2026-01-01T00:00:00")  # vmlab's epoch
    report = run_guest(load_guest(str(kernel)), "native", max_insns=5_000_000)
    assert report.console == serial


def read(rtc: CmosRtc, register: int) -> int:
    rtc.write(0x70, 1, register)
    return rtc.read(0x71, 1)


def test_the_rtc_counts_seconds_of_the_instruction_clock_and_holds_still_while_set():
    ticks = [0]
    rtc = CmosRtc(clock=lambda: ticks[0], ram_size=32 << 20)
    ticks[0] = 61 * PIT_HZ + PIT_HZ - 1  # 00:01:01 and most of a second
    assert (read(rtc, 0x04), read(rtc, 0x02), read(rtc, 0x00)) == (0x00, 0x01, 0x01)
    assert read(rtc, 0x0A) & 0x80  # the update is due: UIP
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x82)  # SET
    ticks[0] += 10 * PIT_HZ
    assert read(rtc, 0x00) == 0x01
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x02)  # running again, from where it was held
    ticks[0] += PIT_HZ
    assert read(rtc, 0x00) == 0x02


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_cmpxchg8b_stores_to_a_code_page(tmp_path, mode):
    report = run_guest(load_guest(str(build(tmp_path, "cx8_code_page"))), mode, max_insns=1000)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 207)


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_the_time_stamp_counter_is_the_instruction_clock(tmp_path, mode):
    report = run_guest(load_guest(str(build(tmp_path, "tsc_delta"))), mode, max_insns=1000)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 12)


def test_cpuid_promises_only_what_vmlab_provides_and_answers_high_leaves_as_the_highest():
    _, ebx, ecx, edx = cpuid(0)
    vendor = b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx))
    assert vendor == b"GenuineIntel"
    features = 1 << 0 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 8 | 1 << 9 | 1 << 13 | 1 << 15 | 1 << 16
    features |= 1 << 23 | 1 << 24 | 1 << 25 | 1 << 26  # MMX, FXSR, SSE, SSE2 (tests/test_fpu.py)
    assert cpuid(1) == (0x619, 0, 1, features)  # ECX: SSE3
    assert cpuid(2) == cpuid(0x80000001) == cpuid(1)


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_the_summary_lists_the_ports_and_memory_nothing_answered(tmp_path, mode, capsys):
    kernel = str(build(tmp_path, "absent_hardware"))
    assert main(["run", kernel, "--mode", mode, "--json"]) == 0
    [vm] = json.loads(capsys.readouterr().out)["vms"]
    assert vm["isolation"]["unanswered"] == {
        "ports": [0x2FD, 0x379],
        "mmio": [[0xFED00000, 0xFED00FFF]],
    }
    assert main(["run", kernel, "--mode", mode]) == 0
    assert "nothing answered (open bus): ports 0x2fd, 0x379; memory 0xfed00000-0xfed00fff" in (
        capsys.readouterr().out
    )
