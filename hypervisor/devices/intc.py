"""The PC's interrupt wiring: the 8259 pair, the I/O APIC and the CPU's local APIC together.

As on a PC, every ISA interrupt goes to both the 8259 and the I/O APIC (the PIT's IRQ 0 on
pin 2). The CPU takes the local APIC's highest request above its PPR first; the 8259's
INTR reaches the CPU only while the local APIC lets it through (off, or LINT0 an unmasked
ExtINT entry: the virtual wire). A kernel that masks the 8259 and programs the I/O APIC
gets its device interrupts through the APIC alone. The monitors ask the same object, so
bare metal and every mode deliver the same interrupts.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypervisor.devices.cmos import CmosRtc
from hypervisor.devices.ioapic import PIT_PIN, IoApic, RedirectionView, pin_of_isa_irq
from hypervisor.devices.lapic import LapicView, LocalApic
from hypervisor.devices.pic import Pic8259Pair
from hypervisor.devices.pit import Pit8254

RTC_IRQ, CASCADE_IRQ = 8, 2  # the RTC's IRQ; the slave 8259 on the master's input 2


@dataclass(frozen=True, slots=True)
class InterruptsView:
    """The three controllers as a student looks at them: what is requested, in service,
    masked, and what the CPU would take now (if its IF allowed)."""

    pic_irr: int  # slave in the high byte
    pic_isr: int
    pic_imr: int
    lapic: LapicView
    routes: tuple[RedirectionView, ...]  # the I/O APIC's unmasked pins
    pending: int | None
    in_use: bool  # the guest has programmed one of them (else there is nothing to see)


@dataclass(eq=False)
class Interrupts:
    pic: Pic8259Pair
    pit: Pit8254
    lapic: LocalApic
    ioapic: IoApic
    rtc: CmosRtc

    def raise_isa(self, irq: int) -> None:
        """ISA interrupt `irq` (an edge) from a device."""
        self.pic.raise_irq(irq)
        self.ioapic.pulse(pin_of_isa_irq(irq))

    def pending_vector(self) -> int | None:
        """The vector the CPU would take now if its IF allowed, or None."""
        vector = self.lapic.pending_vector()
        if vector is None and self.lapic.pic_passes:
            vector = self.pic.pending_vector()
        return vector

    def acknowledge(self) -> int:
        """The CPU takes the interrupt `pending_vector` named."""
        if self.lapic.pending_vector() is not None:
            return self.lapic.acknowledge()
        return self.pic.acknowledge()

    def irq_of(self, vector: int) -> int | None:
        """The ISA IRQ a delivered vector came from, when one did (for its event)."""
        pin = self.ioapic.pin_of_vector(vector)
        if pin is not None:
            return 0 if pin == PIT_PIN else pin
        master, slave = self.pic.vector_base
        if master <= vector < master + 8:
            return vector - master
        if slave <= vector < slave + 8:
            return 8 + vector - slave
        return None

    def view(self) -> InterruptsView:
        pic, lapic = self.pic, self.lapic.view()
        routes = tuple(r for r in self.ioapic.view() if not r.masked)
        programmed_pic = pic.vector_base != (0x08, 0x70) or pic.imr != 0xFFFF
        programmed_apic = bool(lapic.tpr or lapic.irr or lapic.isr or lapic.initial_count)
        return InterruptsView(
            pic.irr,
            pic.isr,
            pic.imr,
            lapic,
            routes,
            self.pending_vector(),
            programmed_pic or programmed_apic or bool(routes) or not lapic.pic_passes,
        )

    def advance(self, ticks: int) -> None:
        """The machine's clock moves on: both timers count."""
        self.pit.advance(ticks)
        self.lapic.advance(ticks)
        if self.rtc.interrupting:
            self.rtc.advance()  # its clock is the PIT's

    def next_timer(self) -> int | None:
        """Instructions until a timer (the PIT, the local APIC's, the RTC's) next fires (a
        slice ends there)."""
        pit, lapic, rtc = self.pit, self.lapic, self.rtc
        dues = (pit.ticks_until_irq(), lapic.ticks_until_irq(), rtc.ticks_until_irq())
        return min((d for d in dues if d is not None), default=None)

    def wake_due(self) -> int | None:
        """Instructions until a timer interrupt could wake a sleeping CPU; None if none
        can (the PIT's reaches no one while both its 8259 input and its pin are masked)."""
        dues = (
            self.pit.ticks_until_irq() if self._heard(0, PIT_PIN) else None,
            self.lapic.ticks_until_irq(),
            self.rtc.ticks_until_irq() if self._heard(RTC_IRQ, RTC_IRQ) else None,
        )
        return min((d for d in dues if d is not None), default=None)

    def _heard(self, irq: int, pin: int) -> bool:
        """Does ISA `irq` reach the CPU: through the 8259 (and its cascade), or the I/O
        APIC's `pin`?"""
        masked = self.pic.imr & (1 << irq) or (irq >= 8 and self.pic.imr & 1 << CASCADE_IRQ)
        return (self.lapic.pic_passes and not masked) or self.ioapic.unmasked(pin)
