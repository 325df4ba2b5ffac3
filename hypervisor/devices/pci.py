"""PCI configuration mechanism #1 on a bus with no devices.

Kernels probe 0xCF8/0xCFC at start-up to learn whether the machine has PCI and what sits on
it. vmlab's machine has a host bridge's configuration ports but no functions behind them:
a 32-bit write to CONFIG_ADDRESS (0xCF8) is kept and reads back, and every read of
CONFIG_DATA (0xCFC-0xCFF) gives all ones, which is how a PCI bus answers for an absent
function (vendor ID 0xFFFF: "nothing here"); data writes go nowhere. As on the i440FX,
only a 32-bit access at 0xCF8 reaches the address register; narrower ones are ignored
(QEMU's PIIX puts its reset control at 0xCF9; vmlab does not model it).
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIG_ADDRESS, CONFIG_DATA = 0xCF8, 0xCFC
_ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


@dataclass(eq=False)
class PciHost:
    """CONFIG_ADDRESS that reads back, CONFIG_DATA that finds no device."""

    name: str = "PCI"
    ports: tuple[int, ...] = (CONFIG_ADDRESS, *range(CONFIG_DATA, CONFIG_DATA + 4))
    address: int = 0
    CHECKPOINTED = ("address",)
    NOT_CHECKPOINTED = ("name", "ports")

    def read(self, port: int, size: int) -> int:
        if port == CONFIG_ADDRESS:
            return self.address & _ALL_ONES[size]
        return _ALL_ONES[size]  # no function answers configuration cycles

    def write(self, port: int, size: int, value: int) -> None:
        if port == CONFIG_ADDRESS and size == 4:
            self.address = value
