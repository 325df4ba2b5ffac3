"""QEMU's firmware configuration device (fw_cfg), its I/O-port interface.

Test kernels built for QEMU ask it how many CPUs and how much RAM the machine has: a 16-bit
write to port 0x510 selects an item, then byte reads from 0x511 return the item's bytes
one by one (past its end, 0). vmlab answers the items such kernels read, with the values of
a one-CPU PC; FW_CFG_ID says only the traditional interface exists (no DMA at 0x514).
Byte writes are ignored, as QEMU has done since 2.4; an item nobody defined reads as zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

SELECTOR_PORT, DATA_PORT = 0x510, 0x511
FW_CFG_SIGNATURE = 0x00
FW_CFG_ID = 0x01
FW_CFG_UUID = 0x02
FW_CFG_RAM_SIZE = 0x03
FW_CFG_NOGRAPHIC = 0x04
FW_CFG_NB_CPUS = 0x05
FW_CFG_MAX_CPUS = 0x0F
FW_CFG_FILE_DIR = 0x19
ID_TRADITIONAL = 1  # bit 0: the port interface; bit 1 (DMA) clear


def _items(ram_size: int) -> dict[int, bytes]:
    return {
        FW_CFG_SIGNATURE: b"QEMU",
        FW_CFG_ID: ID_TRADITIONAL.to_bytes(4, "little"),
        FW_CFG_UUID: bytes(16),
        FW_CFG_RAM_SIZE: ram_size.to_bytes(8, "little"),
        FW_CFG_NOGRAPHIC: bytes(2),
        FW_CFG_NB_CPUS: (1).to_bytes(2, "little"),
        FW_CFG_MAX_CPUS: (1).to_bytes(2, "little"),
        FW_CFG_FILE_DIR: bytes(4),  # a big-endian count of files: none
    }


@dataclass(eq=False)
class FwCfg:
    """Selector at 0x510 (16-bit writes), data at 0x511 (byte reads)."""

    ram_size: int
    name: str = "fw_cfg"
    ports: tuple[int, ...] = (SELECTOR_PORT, DATA_PORT)
    selector: int = 0
    position: int = 0  # the next byte of the selected item a data read returns
    CHECKPOINTED = ("selector", "position")
    NOT_CHECKPOINTED = ("name", "ports", "ram_size")

    def read(self, port: int, size: int) -> int:
        """Each byte of a read is the next byte of the item (QEMU's 0x510-0x511 region reads
        data at either port); wider reads take consecutive bytes, low first."""
        item = _items(self.ram_size).get(self.selector, b"")
        value = 0
        for i in range(size):
            byte = item[self.position] if self.position < len(item) else 0
            self.position += 1
            value |= byte << (8 * i)
        return value

    def write(self, port: int, size: int, value: int) -> None:
        if port == SELECTOR_PORT and size == 2:
            self.selector, self.position = value & 0xFFFF, 0
