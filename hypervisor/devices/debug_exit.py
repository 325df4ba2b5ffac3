"""The debug-exit port: how a guest ends its own run with a status (cf. QEMU isa-debug-exit).

Tests and lessons need a guest to say "done, and here is my result" without any firmware,
so one OUT of byte N stops the VM with status N. vmlab's samples use port 0x501; kernels
built for QEMU write to its isa-debug-exit at 0xF4, which every VM has too. The status is
N itself in both cases, not QEMU's process exit status (N << 1) | 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypervisor.devices.port import BytePortDevice

DEBUG_EXIT_PORT = 0x501
ISA_DEBUG_EXIT_PORT = 0xF4  # QEMU's `-device isa-debug-exit,iobase=0xf4`


@dataclass(eq=False)
class DebugExit(BytePortDevice):
    """Writing byte N to `port` calls `on_exit(N)`; reads return 0xFF."""

    on_exit: Callable[[int], None]
    port: int = DEBUG_EXIT_PORT
    name: str = "debug-exit"
    ports: tuple[int, ...] = field(init=False)
    NOT_CHECKPOINTED = ("name", "ports", "port", "on_exit")

    def __post_init__(self) -> None:
        self.ports = (self.port,)

    def _read_byte(self, port: int) -> int:
        return 0xFF

    def _write_byte(self, port: int, value: int) -> None:
        self.on_exit(value)
