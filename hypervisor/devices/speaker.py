"""Port 0x61, the PC's system control port B: the speaker's gate and the refresh toggle.

Kernels calibrate their delay loops here: they set bit 0 (the GATE of PIT channel 2),
program channel 2 and poll bit 5 (channel 2's OUT), or watch bit 4 (the memory refresh
request, which toggles every 15.085 us) flip. Both follow the instruction clock, so a
calibration measures the machine's deterministic time. Bits as on a PC (and QEMU's pcspk):
0 channel 2 gate, 1 speaker data enable (both read back), 4 refresh toggle, 5 channel 2
OUT. The gate is kept but does not stop channel 2, which vmlab's PIT counts ungated; no
sound is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypervisor.devices.pit import Pit8254
from hypervisor.devices.port import BytePortDevice

PORT_B = 0x61
GATE2, SPEAKER_DATA, REFRESH, OUT2 = 0x01, 0x02, 0x10, 0x20
REFRESH_TICKS = 18  # 15.085 us at the PIT's 1.193182 MHz


@dataclass(eq=False)
class SystemControlB(BytePortDevice):
    """Reads compose the gate bits the guest wrote with the PIT's channel 2 and the clock."""

    pit: Pit8254
    name: str = "port61"
    ports: tuple[int, ...] = (PORT_B,)
    control: int = 0  # bits 0-1 as last written
    CHECKPOINTED = ("control",)
    NOT_CHECKPOINTED = ("name", "ports", "pit")

    def _read_byte(self, port: int) -> int:
        refresh = REFRESH if self.pit.ticks // REFRESH_TICKS & 1 else 0
        out = OUT2 if self.pit.channel_state(2).out else 0
        return self.control | refresh | out

    def _write_byte(self, port: int, value: int) -> None:
        self.control = value & (GATE2 | SPEAKER_DATA)
