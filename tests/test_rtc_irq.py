"""The RTC's interrupts (IRQ 8), as an OS course's kernel takes its clock tick from them: the
periodic interrupt at status A's rate, the update-ended one each second, status C's flags.

`tests/guests/rtc_irq` turns on PIE and UIE, counts the periodic interrupts from one update
to the next (1024 at the BIOS's rate) and prints one pass/fail line per check, the same
under every mode and under QEMU. Before, vmlab had no IRQ 8: the kernel slept for ever.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hypervisor.devices.cmos import PIT_HZ, CmosRtc
from hypervisor.guest.image import load_guest
from hypervisor.session import run_guest
from tests.conftest import needs_nasm
from tests.test_platform import QEMU, build, probes_pass, qemu_serial

PERIOD = -(-32 * PIT_HZ // 32_768)  # ticks of the instruction clock to the first 1024 Hz tick


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_a_kernel_ticks_on_the_rtcs_periodic_interrupt(tmp_path: Path, mode: str) -> None:
    probes_pass(tmp_path, "rtc_irq", mode, checks=4, max_insns=3_000_000)


RATE_CHECK = "rtc about 1024 periodic irqs per second"  # QEMU's rate follows the host's clock


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")
def test_qemu_prints_the_same(tmp_path: Path) -> None:
    """Every line but the rate's: QEMU's RTC runs on wall-clock time, so on a loaded host its
    count between two updates is anything; the flags, the BIOS's rate and IRQ 8 coming at
    all do not depend on it."""
    kernel = build(tmp_path, "rtc_irq")
    report = run_guest(load_guest(str(kernel)), "native", max_insns=3_000_000)

    def timeless(console: str) -> list[str]:
        return [line for line in console.splitlines() if not line.startswith(RATE_CHECK)]

    assert timeless(qemu_serial(kernel)) == timeless(report.console)
    assert f"{RATE_CHECK}: pass" in report.console  # vmlab's clock is the instruction count


def _status_c(rtc: CmosRtc) -> int:
    rtc.write(0x70, 1, 0x0C)
    return rtc.read(0x71, 1)


def test_the_line_stays_up_until_status_c_is_read() -> None:
    """One edge per read of C: a kernel that forgets to read it gets one interrupt only."""
    ticks, raised = [0], []
    rtc = CmosRtc(clock=lambda: ticks[0], ram_size=4 << 20, on_irq=lambda: raised.append(1))
    rtc.write(0x70, 1, 0x0B)
    rtc.write(0x71, 1, 0x42)  # PIE, 24-hour
    assert rtc.ticks_until_irq() == PERIOD
    ticks[0] = 3 * PERIOD
    rtc.advance()
    assert raised == [1] and rtc.ticks_until_irq() is None  # up, waiting for the read
    ticks[0] += 10 * PERIOD
    rtc.advance()
    assert raised == [1]
    assert _status_c(rtc) == 0xC0 and _status_c(rtc) == 0  # IRQF | PF, then cleared
    ticks[0] += PERIOD
    rtc.advance()
    assert raised == [1, 1]
