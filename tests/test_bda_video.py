"""The BIOS data area's record of the text screen, as QEMU's VGA BIOS leaves it: a kernel
that takes the CRT controller's port from 0x463 moves the cursor where it means to.

`tests/guests/bda_video` prints the video fields it reads (equipment bits 4-5, mode,
columns, page size, CRTC port, rows - 1, character height), then sets the cursor through the
port it found; QEMU prints the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.guest.nasm import assemble
from hypervisor.session import run_guest
from hypervisor.vmm.vm import Vm
from tests.test_platform import QEMU, qemu_serial

GUESTS = Path(__file__).parent / "guests"
EXPECTED = (
    "video=0020 mode=0003 columns=0050 page=1000 crtc=03d4 rows-1=0018 charheight=0010 \n"
    "cursor moved\n"
)


def test_prebuilt_bda_video_is_fresh() -> None:
    if shutil.which("nasm") is None:
        pytest.skip("nasm is not installed")
    data, _ = assemble(GUESTS / "bda_video.asm")
    assert data == (GUESTS / "bda_video.bin").read_bytes(), "rebuild tests/guests/bda_video.bin"


@pytest.mark.parametrize("mode", ["native", "trap"])
def test_the_bios_data_area_describes_the_screen_and_names_the_crtc(mode: str) -> None:
    image = load_guest(str(GUESTS / "bda_video.bin"))
    assert run_guest(image, mode).console == EXPECTED
    vm = Vm(image, mode)
    vm.run(10_000)
    assert vm.screen().cursor == (2, 5)


@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")
def test_qemu_leaves_the_same_video_fields(tmp_path: Path) -> None:
    serial = tmp_path / "serial.txt"
    assert qemu_serial(GUESTS / "bda_video.bin", serial=serial) == EXPECTED
