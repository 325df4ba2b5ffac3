"""The PC's two cascaded 8259A programmable interrupt controllers.

The CPU side is two calls, mirroring the hardware: `pending_vector()` is the INTR line (what
would be delivered if the CPU accepted an interrupt now) and `acknowledge()` is the INTA cycle.
Devices call `raise_irq()` for a rising edge on an IR input.

Modelled: the ICW1–ICW4 init sequence, IMR (OCW1), non-specific and specific EOI (OCW2),
IRR/ISR reads and poll mode (OCW3), auto-EOI (ICW4 bit 1), fully nested priority (IRQ 0
highest; the slave's 8–15 sit at master IRQ 2), the spurious IRQ 7 vector.
Not modelled, because no guest of this tool needs them: level-triggered mode (ICW1 bit 3 is
ignored: always edge), priority rotation (rotating EOIs act as plain EOIs), special mask
mode, special fully nested mode, 8080 mode, buffered mode, and the ELCR. The cascade is
wired to master IRQ 2 whatever ICW3 says, as on every PC.

Power-on state: a real 8259A has undefined registers until initialised. We pick the state a
PC BIOS leaves behind (vector bases 0x08 and 0x70) but with every IRQ masked (IMR 0xFF), so
a guest that never programs the PIC never receives a device interrupt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypervisor.devices.port import BytePortDevice

MASTER_COMMAND, MASTER_DATA = 0x20, 0x21
SLAVE_COMMAND, SLAVE_DATA = 0xA0, 0xA1
CASCADE_IRQ = 2
SPURIOUS_IRQ = 7

ICW1_INIT = 0x10
ICW1_ICW4_NEEDED = 0x01
ICW1_SINGLE = 0x02
ICW4_AUTO_EOI = 0x02
OCW3_SELECT = 0x08
OCW3_POLL = 0x04
OCW3_READ_REGISTER = 0x02
OCW3_READ_ISR = 0x01
OCW2_EOI = 0x20
OCW2_SPECIFIC = 0x40


def _lowest_bit(mask: int) -> int | None:
    """Index of the lowest set bit (= highest priority IR line), or None."""
    return (mask & -mask).bit_length() - 1 if mask else None


@dataclass(eq=False)
class _Chip:
    """One 8259A's registers and its command decoding; the pair wires two of them up."""

    vector_base: int
    imr: int = 0xFF
    irr: int = 0
    isr: int = 0
    init_step: int = 0  # 0: operational; 2, 3, 4: which ICW the data port expects next
    single: bool = False
    icw4_needed: bool = False
    icw3: int = 0
    auto_eoi: bool = False
    read_isr: bool = False  # OCW3 register select for command-port reads
    poll: bool = False  # OCW3 poll command armed: the next command-port read acknowledges

    def highest_request(self, irr: int) -> int | None:
        """The IR line this chip would signal given request bits `irr`, or None.

        Fully nested mode: an unmasked request is signalled only if no line of equal or
        higher priority (equal or lower number) is in service.
        """
        request = _lowest_bit(irr & ~self.imr & 0xFF)
        if request is None:
            return None
        in_service = _lowest_bit(self.isr)
        if in_service is not None and in_service <= request:
            return None
        return request

    def accept(self, line: int) -> None:
        """INTA on this chip: the request moves to in-service (unless auto-EOI)."""
        self.irr &= ~(1 << line)
        if not self.auto_eoi:
            self.isr |= 1 << line

    def write_command(self, value: int) -> None:
        if value & ICW1_INIT:
            self._start_init(value)
        elif value & OCW3_SELECT:
            if value & OCW3_POLL:
                self.poll = True
            if value & OCW3_READ_REGISTER:
                self.read_isr = bool(value & OCW3_READ_ISR)
        elif value & OCW2_EOI:
            if value & OCW2_SPECIFIC:
                self.isr &= ~(1 << (value & 7))
            else:
                line = _lowest_bit(self.isr)
                if line is not None:
                    self.isr &= ~(1 << line)
        # OCW2 without the EOI bit (set priority, rotate in auto-EOI) is not modelled.

    def _start_init(self, icw1: int) -> None:
        # ICW1 resets the chip (as Bochs and QEMU do): nothing requested, nothing in service,
        # nothing masked, IRR selected for reads.
        self.single = bool(icw1 & ICW1_SINGLE)
        self.icw4_needed = bool(icw1 & ICW1_ICW4_NEEDED)
        self.imr = self.irr = self.isr = 0
        self.auto_eoi = self.read_isr = self.poll = False
        self.init_step = 2

    def write_data(self, value: int) -> None:
        if self.init_step == 0:
            self.imr = value  # OCW1
        elif self.init_step == 2:
            self.vector_base = value & 0xF8  # ICW2: the low 3 bits come from the IR line
            self.init_step = 3 if not self.single else self._after_icw3()
        elif self.init_step == 3:
            self.icw3 = value
            self.init_step = self._after_icw3()
        else:
            self.auto_eoi = bool(value & ICW4_AUTO_EOI)
            self.init_step = 0

    def _after_icw3(self) -> int:
        return 4 if self.icw4_needed else 0


@dataclass(eq=False)
class Pic8259Pair(BytePortDevice):
    """Master 8259A at 0x20/0x21, slave at 0xA0/0xA1 cascaded on master IRQ 2."""

    name: str = "PIC"
    ports: tuple[int, ...] = field(
        default=(MASTER_COMMAND, MASTER_DATA, SLAVE_COMMAND, SLAVE_DATA), init=False
    )
    master: _Chip = field(default_factory=lambda: _Chip(vector_base=0x08), init=False)
    slave: _Chip = field(default_factory=lambda: _Chip(vector_base=0x70), init=False)
    CHECKPOINTED = ("master", "slave")

    # --- device side -------------------------------------------------------------------

    def raise_irq(self, irq: int) -> None:
        """Rising edge on IRQ `irq` (0–15): latch the request, even if masked.

        IRQ 2 is the cascade input, driven by the slave, not by a device (the PC routes the
        ISA bus's IRQ 2 pin to IRQ 9), so raising it is an error.
        """
        if not 0 <= irq <= 15:
            raise ValueError(f"IRQ must be 0..15, not {irq}")
        if irq == CASCADE_IRQ:
            raise ValueError("IRQ 2 is the slave cascade; ISA IRQ 2 devices use IRQ 9")
        if irq < 8:
            self.master.irr |= 1 << irq
        else:
            self.slave.irr |= 1 << (irq - 8)

    # --- CPU side ----------------------------------------------------------------------

    def pending_vector(self) -> int | None:
        """The vector INTA would return now, or None if INTR is low. Changes nothing."""
        line = self.master.highest_request(self._master_irr())
        if line is None:
            return None
        if line == CASCADE_IRQ:
            slave_line = self.slave.highest_request(self.slave.irr)
            assert slave_line is not None  # master IR2 is high only when the slave asks
            return self.slave.vector_base + slave_line
        return self.master.vector_base + line

    def acknowledge(self) -> int:
        """The INTA cycle: move the winning request to in-service and return its vector.

        If nothing is pending (the request vanished, e.g. masked, between INTR and INTA) the
        master answers with its IRQ 7 vector and sets no ISR bit: the spurious interrupt a
        guest must be prepared to ignore.
        """
        line = self.master.highest_request(self._master_irr())
        if line is None:
            return self.master.vector_base + SPURIOUS_IRQ
        self.master.accept(line)
        if line == CASCADE_IRQ:
            slave_line = self.slave.highest_request(self.slave.irr)
            assert slave_line is not None
            self.slave.accept(slave_line)
            return self.slave.vector_base + slave_line
        return self.master.vector_base + line

    # --- read-only views for the UI ----------------------------------------------------

    @property
    def imr(self) -> int:
        """Interrupt mask register, slave in the high byte."""
        return self.slave.imr << 8 | self.master.imr

    @property
    def irr(self) -> int:
        """Interrupt request register, slave in the high byte (bit 2: slave is asking)."""
        return self.slave.irr << 8 | self._master_irr()

    @property
    def isr(self) -> int:
        """In-service register, slave in the high byte."""
        return self.slave.isr << 8 | self.master.isr

    @property
    def vector_base(self) -> tuple[int, int]:
        """(master, slave) vector of IRQ 0 and IRQ 8."""
        return self.master.vector_base, self.slave.vector_base

    # --- internals -----------------------------------------------------------------------

    def _master_irr(self) -> int:
        """Master IRR with IR2 driven by the slave's INT output."""
        slave_asks = self.slave.highest_request(self.slave.irr) is not None
        return self.master.irr | (1 << CASCADE_IRQ if slave_asks else 0)

    def _chip(self, port: int) -> _Chip:
        return self.master if port in (MASTER_COMMAND, MASTER_DATA) else self.slave

    def _read_byte(self, port: int) -> int:
        chip = self._chip(port)
        if port in (MASTER_DATA, SLAVE_DATA):
            return chip.imr
        if chip.poll:
            return self._poll(chip)
        if chip.read_isr:
            return chip.isr
        return self._master_irr() if chip is self.master else chip.irr

    def _poll(self, chip: _Chip) -> int:
        """OCW3 poll read: 0x80 | line and acknowledge it, or 0 if nothing is pending."""
        chip.poll = False
        irr = self._master_irr() if chip is self.master else chip.irr
        line = chip.highest_request(irr)
        if line is None:
            return 0
        chip.accept(line)
        return 0x80 | line

    def _write_byte(self, port: int, value: int) -> None:
        chip = self._chip(port)
        if port in (MASTER_DATA, SLAVE_DATA):
            chip.write_data(value)
        else:
            chip.write_command(value)
