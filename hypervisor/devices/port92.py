"""Port 0x92, system control port A (the PS/2 "fast A20" gate): how many kernels turn A20 on
without the keyboard controller, and one way they reset the machine.

Bit 1 is the A20 gate, bit 0 a fast reset (writing 1 resets the CPU); the other bits read
back what was written. QEMU's PC reads 0x02 after SeaBIOS: A20 on. The OSDev-style "fast
A20" routine reads the port, sets bit 1 and clears bit 0 before writing it back, so what it
reads decides what it writes (open bus, 0xFF, would be a reset request). vmlab's A20 is
always on (no gate is modelled): bit 1 reads back as written, addresses never wrap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypervisor.devices.port import BytePortDevice

PORT_A = 0x92
FAST_RESET, A20_GATE = 0x01, 0x02


@dataclass(eq=False)
class SystemControlA(BytePortDevice):
    """`on_reset` is the fast reset a write of bit 0 asks for."""

    on_reset: Callable[[], None]
    name: str = "port92"
    ports: tuple[int, ...] = (PORT_A,)
    value: int = A20_GATE  # as SeaBIOS leaves it
    CHECKPOINTED = ("value",)
    NOT_CHECKPOINTED = ("name", "ports", "on_reset")

    def _read_byte(self, port: int) -> int:
        return self.value

    def _write_byte(self, port: int, value: int) -> None:
        self.value = value & ~FAST_RESET  # the reset bit reads 0 again
        if value & FAST_RESET:
            self.on_reset()
