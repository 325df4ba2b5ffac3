"""Port 0x80, the POST diagnostic port: where firmware writes its progress codes, and where
kernels write a byte to wait about a microsecond (Linux's `outb_p`, kvm-unit-tests' delays).

Nothing on the port holds state: a PC's POST card (or QEMU's `ioport80`) takes the byte, and a
read gives 0xFF as QEMU's does. It is modelled so that a kernel pausing here is using hardware
the PC has, not probing an absent device (the run summary lists only those).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypervisor.devices.port import BytePortDevice

POST_PORT = 0x80


@dataclass(eq=False)
class PostCodePort(BytePortDevice):
    """Writes are taken and dropped; reads return 0xFF."""

    name: str = "POST"
    ports: tuple[int, ...] = (POST_PORT,)
    NOT_CHECKPOINTED = ("name", "ports")

    def _read_byte(self, port: int) -> int:
        return 0xFF

    def _write_byte(self, port: int, value: int) -> None:
        """The byte is the delay (or a POST code nobody is watching)."""
