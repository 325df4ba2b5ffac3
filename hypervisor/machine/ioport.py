"""The I/O port bus: routes IN/OUT to the device that owns the port.

Unassigned ports read all ones and swallow writes, as on a PC's ISA bus (guest contract).
"""

from __future__ import annotations

from hypervisor.devices.port import PortDevice

_ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class IoBus:
    def __init__(self) -> None:
        self._owner: dict[int, PortDevice] = {}

    def attach(self, device: PortDevice) -> None:
        for port in device.ports:
            if port in self._owner:
                raise ValueError(f"port {port:#x} already owned by {self._owner[port].name}")
            self._owner[port] = device

    def owner(self, port: int) -> PortDevice | None:
        return self._owner.get(port)

    def read(self, port: int, size: int) -> int:
        device = self._owner.get(port)
        return _ALL_ONES[size] if device is None else device.read(port, size) & _ALL_ONES[size]

    def write(self, port: int, size: int, value: int) -> None:
        device = self._owner.get(port)
        if device is not None:
            device.write(port, size, value & _ALL_ONES[size])
