"""The I/O port device interface, and a base class for byte-register devices.

The machine's port bus and the monitor's I/O emulation both talk to devices only through
`PortDevice`, so bare metal and every VM can share the same device models.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

ACCESS_SIZES = (1, 2, 4)


@runtime_checkable
class PortDevice(Protocol):
    """Anything that answers IN/OUT on a fixed set of I/O ports."""

    name: str
    ports: tuple[int, ...]  # every I/O port this device answers

    def read(self, port: int, size: int) -> int:
        """Value of an IN of `size` bytes (1, 2 or 4) from `port`."""
        ...

    def write(self, port: int, size: int, value: int) -> None:
        """Effect of an OUT of `size` bytes (1, 2 or 4) to `port`."""
        ...


class BytePortDevice:
    """Base for devices whose registers are all 8 bits wide (all the PC legacy chips).

    On a PC an `in ax, dx` / `out dx, eax` on an 8-bit device is split by the bus into byte
    accesses to consecutive ports, low byte first. This class does that split, so a wide
    access touches port, port+1, … exactly as on hardware; a byte that falls on a port this
    device does not own reads as all ones (open bus) and is dropped on write.
    Subclasses implement `_read_byte` and `_write_byte` and set `name` and `ports`.
    """

    name: str
    ports: tuple[int, ...]
    # What a checkpoint captures (the registers a guest can change), and what it leaves to
    # the receiving VM (configuration, callbacks): every attribute is one or the other.
    CHECKPOINTED: ClassVar[tuple[str, ...]] = ()
    NOT_CHECKPOINTED: ClassVar[tuple[str, ...]] = ("name", "ports")

    def _read_byte(self, port: int) -> int:
        raise NotImplementedError

    def _write_byte(self, port: int, value: int) -> None:
        raise NotImplementedError

    def read(self, port: int, size: int) -> int:
        _check_size(size)
        value = 0
        for i in range(size):
            p = (port + i) & 0xFFFF
            byte = self._read_byte(p) & 0xFF if p in self.ports else 0xFF
            value |= byte << (8 * i)
        return value

    def write(self, port: int, size: int, value: int) -> None:
        _check_size(size)
        for i in range(size):
            p = (port + i) & 0xFFFF
            if p in self.ports:
                self._write_byte(p, (value >> (8 * i)) & 0xFF)


def _check_size(size: int) -> None:
    if size not in ACCESS_SIZES:
        raise ValueError(f"I/O access size must be 1, 2 or 4 bytes, not {size}")
