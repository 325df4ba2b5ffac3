"""A 16550 UART, transmit side only: enough for a guest to print on COM1.

Output is the only thing a guest needs from the serial port, and it must never stall, so the
transmitter is always ready (LSR = 0x60) and bytes appear instantly. There is no input, no
FIFO, no interrupts and no loopback; the other registers simply store what the guest writes
so that a driver's probe-and-read-back sees a plausible chip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypervisor.devices.port import BytePortDevice

# Register offsets from the base port.
RBR_THR_DLL = 0
IER_DLM = 1
IIR_FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

LCR_DLAB = 0x80
LSR_IDLE = 0x60  # THR empty | transmitter empty: always ready to send
IIR_NONE = 0x01  # no interrupt pending
MSR_IDLE = 0xB0  # DCD | DSR | CTS: a cable is plugged in and the other side is ready


@dataclass(eq=False)
class Uart16550(BytePortDevice):
    """COM port at `base`..`base`+7. Every byte written to THR lands in `output`."""

    name: str = "COM1"
    base: int = 0x3F8
    on_output: Callable[[bytes], None] | None = None
    output: bytearray = field(default_factory=bytearray, init=False)
    ports: tuple[int, ...] = field(init=False)
    ier: int = field(default=0, init=False)
    lcr: int = field(default=0, init=False)
    mcr: int = field(default=0, init=False)
    scr: int = field(default=0, init=False)
    fcr: int = field(default=0, init=False)
    divisor: int = field(default=0, init=False)
    CHECKPOINTED = ("output", "ier", "lcr", "mcr", "scr", "fcr", "divisor")
    NOT_CHECKPOINTED = ("name", "ports", "base", "on_output")

    def __post_init__(self) -> None:
        self.ports = tuple(range(self.base, self.base + 8))

    @property
    def dlab(self) -> bool:
        """Divisor latch access bit: ports base+0/1 address the baud divisor when set."""
        return bool(self.lcr & LCR_DLAB)

    def _read_byte(self, port: int) -> int:
        reg = port - self.base
        if reg == RBR_THR_DLL:
            return self.divisor & 0xFF if self.dlab else 0  # no input ever arrives
        if reg == IER_DLM:
            return self.divisor >> 8 if self.dlab else self.ier
        if reg == IIR_FCR:
            return IIR_NONE
        if reg == LCR:
            return self.lcr
        if reg == MCR:
            return self.mcr
        if reg == LSR:
            return LSR_IDLE
        if reg == MSR:
            return MSR_IDLE
        return self.scr

    def _write_byte(self, port: int, value: int) -> None:
        reg = port - self.base
        if reg == RBR_THR_DLL:
            if self.dlab:
                self.divisor = (self.divisor & 0xFF00) | value
            else:
                self._transmit(value)
        elif reg == IER_DLM:
            if self.dlab:
                self.divisor = (self.divisor & 0x00FF) | (value << 8)
            else:
                self.ier = value & 0x0F
        elif reg == IIR_FCR:
            self.fcr = value
        elif reg == LCR:
            self.lcr = value
        elif reg == MCR:
            self.mcr = value & 0x1F
        elif reg == SCR:
            self.scr = value
        # LSR and MSR are read-only: writes are ignored.

    def _transmit(self, byte: int) -> None:
        self.output.append(byte)
        if self.on_output is not None:
            self.on_output(bytes((byte,)))
