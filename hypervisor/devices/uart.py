"""A 16550A UART (COM1): output a guest prints, input the user types, and their interrupts.

The transmitter is always ready (LSR THRE and TEMT set) and bytes appear instantly, so output
never stalls. Received bytes wait in the receive FIFO (`receive`) until the guest reads RBR;
LSR bit 0 says one is there. Interrupts (IER): received data available, and transmitter
empty (raised when enabled and after each byte sent, cleared by reading IIR or writing THR),
signalled by `on_irq` on a rising edge of the chip's interrupt line, IRQ4 on a PC — as in
QEMU, whatever MCR OUT2 says (kernels of the xv6 kind rely on it). IIR names the highest
pending source and shows the FIFOs when FCR enables them. Loopback (MCR bit 4) sends what is
written to THR back to the receiver and shows MCR's outputs on MSR's inputs. The divisor
latch, LCR, MCR and SCR read back what was written. Not modelled: baud timing, line status
errors and overrun (the FIFO holds whatever arrives), modem status changes.
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
LSR_DATA_READY = 0x01
IER_RECEIVED = 0x01  # interrupt when received data is available
IER_THR_EMPTY = 0x02  # interrupt when the transmit holding register is empty
IIR_NONE = 0x01  # no interrupt pending
IIR_THR_EMPTY = 0x02
IIR_RECEIVED = 0x04
IIR_FIFOS = 0xC0  # FIFOs enabled (a 16550A)
FCR_ENABLE, FCR_CLEAR_RX = 0x01, 0x02
MCR_LOOPBACK = 0x10
MSR_IDLE = 0xB0  # DCD | DSR | CTS: a cable is plugged in and the other side is ready
POLLS_BEFORE_WAIT = 2  # LSR reads with nothing received, in a row: the kernel is polling


@dataclass(eq=False)
class Uart16550(BytePortDevice):
    """COM port at `base`..`base`+7. Every byte written to THR lands in `output`; `on_irq` is
    the interrupt line's rising edge, `on_wait` a kernel polling LSR for input."""

    name: str = "COM1"
    base: int = 0x3F8
    on_output: Callable[[bytes], None] | None = None
    on_irq: Callable[[], None] = lambda: None
    on_wait: Callable[[], None] = lambda: None
    output: bytearray = field(default_factory=bytearray, init=False)
    received: bytearray = field(default_factory=bytearray, init=False)  # the receive FIFO
    thr_empty_pending: bool = field(default=False, init=False)
    empty_polls: int = field(default=0, init=False)
    ports: tuple[int, ...] = field(init=False)
    ier: int = field(default=0, init=False)
    lcr: int = field(default=0, init=False)
    mcr: int = field(default=0, init=False)
    scr: int = field(default=0, init=False)
    fcr: int = field(default=0, init=False)
    divisor: int = field(default=0, init=False)
    CHECKPOINTED = (
        "output",
        "received",
        "thr_empty_pending",
        "empty_polls",
        "ier",
        "lcr",
        "mcr",
        "scr",
        "fcr",
        "divisor",
    )
    NOT_CHECKPOINTED = ("name", "ports", "base", "on_output", "on_irq", "on_wait")

    def __post_init__(self) -> None:
        self.ports = tuple(range(self.base, self.base + 8))

    @property
    def dlab(self) -> bool:
        """Divisor latch access bit: ports base+0/1 address the baud divisor when set."""
        return bool(self.lcr & LCR_DLAB)

    def receive(self, data: bytes) -> None:
        """Bytes arriving on the serial line."""
        before = self.interrupt_id()
        self.received += data
        self._signal(before)

    def interrupt_id(self) -> int:
        """IIR's low nibble: the highest-priority pending interrupt source."""
        if self.ier & IER_RECEIVED and self.received:
            return IIR_RECEIVED
        if self.ier & IER_THR_EMPTY and self.thr_empty_pending:
            return IIR_THR_EMPTY
        return IIR_NONE

    def _signal(self, before: int) -> None:
        """Raise the interrupt line if a source became pending."""
        if before == IIR_NONE and self.interrupt_id() != IIR_NONE:
            self.on_irq()

    def _read_byte(self, port: int) -> int:
        reg = port - self.base
        if reg == LSR:
            return self._read_lsr()
        self.empty_polls = 0
        if reg == RBR_THR_DLL:
            if self.dlab:
                return self.divisor & 0xFF
            return self.received.pop(0) if self.received else 0
        if reg == IER_DLM:
            return self.divisor >> 8 if self.dlab else self.ier
        if reg == IIR_FCR:
            iir = self.interrupt_id()
            if iir == IIR_THR_EMPTY:
                self.thr_empty_pending = False  # reading IIR acknowledges THR empty
            return iir | (IIR_FIFOS if self.fcr & FCR_ENABLE else 0)
        if reg == LCR:
            return self.lcr
        if reg == MCR:
            return self.mcr
        if reg == MSR:
            if self.mcr & MCR_LOOPBACK:  # DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD
                m = self.mcr
                return (m & 1) << 5 | (m & 2) << 3 | (m & 4) << 4 | (m & 8) << 4
            return MSR_IDLE
        return self.scr

    def _read_lsr(self) -> int:
        if self.received:
            self.empty_polls = 0
            return LSR_IDLE | LSR_DATA_READY
        self.empty_polls += 1
        if self.empty_polls >= POLLS_BEFORE_WAIT:
            self.on_wait()
        return LSR_IDLE

    def _write_byte(self, port: int, value: int) -> None:
        reg = port - self.base
        self.empty_polls = 0
        before = self.interrupt_id()
        if reg == RBR_THR_DLL:
            if self.dlab:
                self.divisor = (self.divisor & 0xFF00) | value
            else:
                self._transmit(value)
                before = IIR_NONE  # the byte went at once: THR is empty again, a new edge
                self.thr_empty_pending = True
        elif reg == IER_DLM:
            if self.dlab:
                self.divisor = (self.divisor & 0x00FF) | (value << 8)
            else:
                if value & IER_THR_EMPTY and not self.ier & IER_THR_EMPTY:
                    self.thr_empty_pending = True  # enabling it with THR empty interrupts
                self.ier = value & 0x0F
        elif reg == IIR_FCR:
            self.fcr = value & ~0x06  # the clear bits act once and read as 0
            if value & FCR_CLEAR_RX:
                self.received.clear()
        elif reg == LCR:
            self.lcr = value
        elif reg == MCR:
            self.mcr = value & 0x1F
        elif reg == SCR:
            self.scr = value
        # LSR and MSR are read-only: writes are ignored.
        self._signal(before)

    def _transmit(self, byte: int) -> None:
        if self.mcr & MCR_LOOPBACK:
            self.received.append(byte)
            return
        self.output.append(byte)
        if self.on_output is not None:
            self.on_output(bytes((byte,)))
