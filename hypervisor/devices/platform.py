"""The platform identity port: how a guest learns which machine it is (a clone's own name).

Clones of one suspended VM start from the very same RAM, so nothing inside them can tell them
apart; the platform must. As a PC's firmware tables do for a serial number, this port gives
each VM its identity string: every IN from it returns the next byte (0 after the last, and
from then on), an OUT of any value rewinds to the first byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypervisor.devices.port import BytePortDevice

PLATFORM_ID_PORT = 0x502  # beside vmlab's debug exit (0x501); 0x510 is fw_cfg on a PC
MAX_IDENTITY = 64


@dataclass(eq=False)
class PlatformId(BytePortDevice):
    identity: str = "vm"
    port: int = PLATFORM_ID_PORT
    name: str = "platform-id"
    ports: tuple[int, ...] = field(init=False)
    index: int = field(default=0, init=False)  # the next byte a read returns
    CHECKPOINTED = ("index",)
    NOT_CHECKPOINTED = ("name", "ports", "port", "identity", "_bytes")

    def __post_init__(self) -> None:
        self.ports = (self.port,)
        self._bytes = self.identity.encode("latin-1", "replace")[:MAX_IDENTITY]

    def _read_byte(self, port: int) -> int:
        if self.index >= len(self._bytes):
            return 0
        self.index += 1
        return self._bytes[self.index - 1]

    def _write_byte(self, port: int, value: int) -> None:
        self.index = 0
