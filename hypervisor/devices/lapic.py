"""The local APIC (xAPIC, memory-mapped at 0xFEE00000), as the one CPU of a PC has it.

Registers as Intel's SDM vol. 3 ch. 10 names them (and QEMU's apic.c answers them: the
reference the test guests are compared with), one 32-bit register every 16 bytes:

* ID (0x020, bits 24-31), version 0x50014 (0x030: an integrated APIC, 6 LVT entries);
* TPR (0x080), APR (0x090, computed), PPR (0x0A0: the TPR, or the in-service class if
  higher), EOI (0x0B0), LDR (0x0D0), DFR (0x0E0), SVR (0x0F0: spurious vector and the
  software enable bit 8; clearing it masks every LVT entry);
* ISR, TMR and IRR (0x100, 0x180, 0x200: 256 bits each, eight registers): a vector is
  requested (IRR), accepted by the CPU into service (ISR), and leaves service at EOI, the
  highest in service first. Only a request whose priority class (vector >> 4) is above the
  PPR's reaches the CPU, so a handler is interrupted only by a higher class: nesting;
* ESR (0x280): errors gather, and a write moves them into the readable register;
* ICR (0x300 low, 0x310 high): fixed and lowest-priority IPIs to this CPU (by destination
  or the self / all-including-self shorthands) land in its own IRR; all-excluding-self,
  INIT, SIPI and other CPUs' destinations reach no one on a one-CPU machine. The delivery
  status bit is never seen set: delivery is instant;
* the LVT (0x320 timer, 0x330 thermal, 0x340 performance, 0x350 LINT0, 0x360 LINT1, 0x370
  error), all masked at reset;
* the timer (`lapictimer.py`): initial count (0x380), current count (0x390), divide
  configuration (0x3E0), one-shot or periodic.

A kernel finds the APIC as `qemu -kernel` leaves it, after SeaBIOS: software-enabled (SVR
0x1FF), LINT0 an unmasked ExtINT entry (0x8700: the 8259's INTR passes, the PC's virtual
wire) and LINT1 NMI (0x8400), the rest masked, so a kernel that knows only the 8259 works.

IA32_APIC_BASE (`apic_base`): base 0xFEE00000 (fixed: a move is ignored), bit 8 BSP, bit 11
global enable. Clearing bit 11 turns the APIC off: its page reads all ones, and it comes
back in its reset state. Not modelled: x2APIC, the TSC-deadline timer mode (CPUID does not
offer it), NMI/SMI/INIT delivery, focus checking, and the CMCI LVT entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypervisor.devices.lapictimer import ApicTimer

LAPIC_BASE = 0xFEE00000
LAPIC_SIZE = 0x1000
VERSION = 0x00050014  # version 0x14 (integrated xAPIC), max LVT entry 5
BASE_BSP, BASE_ENABLE = 1 << 8, 1 << 11

ID, VERSION_REG, TPR, APR, PPR, EOI, RRD, LDR, DFR, SVR = (
    0x02,
    0x03,
    0x08,
    0x09,
    0x0A,
    0x0B,
    0x0C,
    0x0D,
    0x0E,
    0x0F,
)
ISR0, TMR0, IRR0, ESR = 0x10, 0x18, 0x20, 0x28  # register index = offset >> 4
ICR_LOW, ICR_HIGH = 0x30, 0x31
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = range(0x32, 0x38)
INITIAL_COUNT, CURRENT_COUNT, DIVIDE = 0x38, 0x39, 0x3E

SVR_ENABLE = 1 << 8
LVT_MASKED = 1 << 16
LVT_PERIODIC = 1 << 17
DELIVERY_EXTINT = 7
ESR_SEND_ILLEGAL, ESR_RECEIVE_ILLEGAL, ESR_ILLEGAL_REGISTER = 1 << 5, 1 << 6, 1 << 7
# the bits a guest can write in each LVT entry (the rest read 0, or are read-only status)
_LVT_WRITABLE = {
    LVT_TIMER: 0x300FF,  # vector, mask, periodic (bit 18, TSC-deadline, is absent)
    LVT_THERMAL: 0x107FF,
    LVT_PERF: 0x107FF,
    LVT_LINT0: 0x1A7FF,  # vector, delivery mode, polarity, trigger, mask
    LVT_LINT1: 0x1A7FF,
    LVT_ERROR: 0x100FF,
}
_SHORTHAND_SELF, _SHORTHAND_ALL, _SHORTHAND_OTHERS = 1, 2, 3
_FIXED, _LOWEST = 0, 1


def _highest(bits: int) -> int | None:
    return bits.bit_length() - 1 if bits else None


def _firmware_lvt() -> list[int]:
    """The LVT as SeaBIOS leaves it: LINT0 ExtINT (the 8259's virtual wire), LINT1 NMI."""
    lvt = [LVT_MASKED] * 6
    lvt[LVT_LINT0 - LVT_TIMER] = 0x8700
    lvt[LVT_LINT1 - LVT_TIMER] = 0x8400
    return lvt


@dataclass(frozen=True, slots=True)
class LapicView:
    """The local APIC as a student looks at it (the devices pane)."""

    enabled: bool  # globally (IA32_APIC_BASE) and by software (SVR)
    tpr: int
    ppr: int
    irr: tuple[int, ...]  # vectors requested
    isr: tuple[int, ...]  # vectors in service
    timer_mode: str  # "one-shot" or "periodic", with " (masked)"
    timer_vector: int
    initial_count: int
    current_count: int
    pic_passes: bool  # the 8259's INTR reaches the CPU (APIC off, or LINT0 ExtINT)


@dataclass(eq=False)
class LocalApic:
    """One CPU's local APIC. `now()` is the machine's instruction clock; `on_eoi(vector)`
    is the EOI broadcast to the I/O APIC for a level-triggered vector."""

    on_eoi: Callable[[int], None]
    base: int = field(default=LAPIC_BASE | BASE_BSP | BASE_ENABLE, init=False)
    apic_id: int = field(default=0, init=False)
    tpr: int = field(default=0, init=False)
    ldr: int = field(default=0, init=False)
    dfr: int = field(default=0xFFFFFFFF, init=False)
    svr: int = field(default=0x1FF, init=False)  # enabled, spurious vector 0xFF
    irr: int = field(default=0, init=False)  # 256-bit request register
    isr: int = field(default=0, init=False)  # 256-bit in-service register
    tmr: int = field(default=0, init=False)  # 256-bit trigger mode (level) register
    esr: int = field(default=0, init=False)  # what ESR reads
    errors: int = field(default=0, init=False)  # errors gathered since the last ESR write
    icr: int = field(default=0, init=False)  # ICR high << 32 | low
    lvt: list[int] = field(default_factory=_firmware_lvt, init=False)
    timer: ApicTimer = field(default_factory=ApicTimer, init=False)
    CHECKPOINTED = (
        *("base", "apic_id", "tpr", "ldr", "dfr", "svr", "irr", "isr", "tmr"),
        *("esr", "errors", "icr", "lvt", "timer"),
    )
    NOT_CHECKPOINTED = ("on_eoi",)

    # --- IA32_APIC_BASE ----------------------------------------------------------------

    @property
    def apic_base(self) -> int:
        return self.base

    @apic_base.setter
    def apic_base(self, value: int) -> None:
        """A WRMSR to IA32_APIC_BASE: only the global enable bit changes anything."""
        enable = bool(value & BASE_ENABLE)
        if self.enabled_globally and not enable:
            self._power_on()
        self.base = LAPIC_BASE | BASE_BSP | (BASE_ENABLE if enable else 0)

    @property
    def enabled_globally(self) -> bool:
        return bool(self.base & BASE_ENABLE)

    @property
    def software_enabled(self) -> bool:
        return self.enabled_globally and bool(self.svr & SVR_ENABLE)

    def _power_on(self) -> None:
        """The hardware's reset state (after a global disable): software-disabled, every
        LVT entry masked."""
        self.apic_id = self.tpr = self.ldr = self.irr = self.isr = self.tmr = 0
        self.esr = self.errors = self.icr = 0
        self.dfr, self.svr, self.lvt = 0xFFFFFFFF, 0xFF, [LVT_MASKED] * 6
        self.timer.stop()

    # --- the clock ---------------------------------------------------------------------

    def advance(self, ticks: int) -> None:
        """`ticks` instructions of the machine's clock pass: each expiry of the timer
        requests its vector (unless masked)."""
        if self.timer.advance(ticks) and not self.lvt[0] & LVT_MASKED:
            self.accept(self.lvt[0] & 0xFF, level=False)

    def ticks_until_irq(self) -> int | None:
        """Instructions until the timer next requests an interrupt; None if it cannot."""
        if self.lvt[0] & LVT_MASKED or not self.software_enabled:
            return None
        return self.timer.ticks_until_expiry()

    # --- interrupts in -----------------------------------------------------------------

    def accept(self, vector: int, level: bool) -> None:
        """An interrupt message for this CPU (I/O APIC, IPI, LVT): request `vector`."""
        if vector < 16:
            self._error(ESR_RECEIVE_ILLEGAL)
            return
        bit = 1 << vector
        self.irr |= bit
        self.tmr = self.tmr | bit if level else self.tmr & ~bit

    @property
    def pic_passes(self) -> bool:
        """Does the 8259's INTR reach the CPU? When the APIC is off (globally or by
        software: its virtual-wire state), or LINT0 is an unmasked ExtINT entry."""
        lint0 = self.lvt[LVT_LINT0 - LVT_TIMER]
        extint = not lint0 & LVT_MASKED and (lint0 >> 8) & 7 == DELIVERY_EXTINT
        return not self.software_enabled or extint

    # --- the CPU side ------------------------------------------------------------------

    @property
    def ppr(self) -> int:
        isrv = _highest(self.isr) or 0
        return self.tpr & 0xFF if self.tpr >> 4 >= isrv >> 4 else isrv & 0xF0

    def pending_vector(self) -> int | None:
        """The vector the CPU would take now (above the PPR's class), or None."""
        if not self.software_enabled:
            return None
        vector = _highest(self.irr)
        if vector is None or vector >> 4 <= self.ppr >> 4:
            return None
        return vector

    def acknowledge(self) -> int:
        """The CPU takes the pending vector: it moves from IRR to ISR (the spurious vector
        if nothing is pending any more)."""
        vector = self.pending_vector()
        if vector is None:
            return self.svr & 0xFF
        self.irr &= ~(1 << vector)
        self.isr |= 1 << vector
        return vector

    # --- MMIO --------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """A read of `size` bytes at `offset` in the APIC page (registers are 32 bits at
        16-byte boundaries; other bytes read 0)."""
        if not self.enabled_globally:
            return (1 << 8 * size) - 1
        value = self._read_register(offset >> 4)
        shift = 8 * (offset & 3)
        return (value >> shift) & ((1 << 8 * size) - 1) if offset & 0xF < 4 else 0

    def write(self, offset: int, size: int, value: int) -> None:
        if not self.enabled_globally or offset & 0xF:
            return  # only whole-register writes at the register's start count
        self._write_register(offset >> 4, value & 0xFFFFFFFF)

    def _read_register(self, index: int) -> int:
        simple = {
            ID: self.apic_id << 24,
            VERSION_REG: VERSION,
            TPR: self.tpr,
            APR: self._apr(),
            PPR: self.ppr,
            LDR: self.ldr,
            DFR: self.dfr,
            SVR: self.svr,
            ESR: self.esr,
            ICR_LOW: self.icr & 0xFFFFFFFF & ~(1 << 12),
            ICR_HIGH: self.icr >> 32,
            INITIAL_COUNT: self.timer.initial,
            CURRENT_COUNT: self.timer.current(),
            DIVIDE: self.timer.divide_config,
        }
        if index in simple:
            return simple[index]
        for first, bits in ((ISR0, self.isr), (TMR0, self.tmr), (IRR0, self.irr)):
            if first <= index < first + 8:
                return (bits >> 32 * (index - first)) & 0xFFFFFFFF
        if LVT_TIMER <= index <= LVT_ERROR:
            return self.lvt[index - LVT_TIMER]
        if index not in (EOI, RRD):
            self._error(ESR_ILLEGAL_REGISTER)
        return 0

    def _write_register(self, index: int, value: int) -> None:
        if index == ID:
            self.apic_id = value >> 24
        elif index == TPR:
            self.tpr = value & 0xFF
        elif index == EOI:
            self._eoi()
        elif index == LDR:
            self.ldr = value & 0xFF000000
        elif index == DFR:
            self.dfr = value | 0x0FFFFFFF
        elif index == SVR:
            self.svr = value & 0x1FF
            if not value & SVR_ENABLE:
                self.lvt = [entry | LVT_MASKED for entry in self.lvt]
        elif index == ESR:
            self.esr, self.errors = self.errors, 0
        elif index == ICR_LOW:
            self.icr = (self.icr & ~0xFFFFFFFF) | (value & ~(1 << 12))
            self._send_ipi()
        elif index == ICR_HIGH:
            self.icr = (value & 0xFF000000) << 32 | (self.icr & 0xFFFFFFFF)
        elif LVT_TIMER <= index <= LVT_ERROR:
            self._write_lvt(index, value)
        elif index == INITIAL_COUNT:
            self.timer.load(value, periodic=bool(self.lvt[0] & LVT_PERIODIC))
        elif index == DIVIDE:
            self.timer.set_divide(value)
        elif index not in (VERSION_REG, APR, PPR, RRD, CURRENT_COUNT) and not (
            ISR0 <= index < IRR0 + 8
        ):
            self._error(ESR_ILLEGAL_REGISTER)

    def _write_lvt(self, index: int, value: int) -> None:
        entry = value & _LVT_WRITABLE[index]
        if not self.svr & SVR_ENABLE:
            entry |= LVT_MASKED  # a software-disabled APIC keeps every entry masked
        self.lvt[index - LVT_TIMER] = entry
        if index == LVT_TIMER:
            self.timer.periodic = bool(entry & LVT_PERIODIC)

    def _apr(self) -> int:
        """Arbitration priority (SDM 10.8.3.1, P6 family and Pentium rules)."""
        irrv, isrv = _highest(self.irr) or 0, _highest(self.isr) or 0
        if self.tpr >> 4 >= irrv >> 4 and self.tpr >> 4 > isrv >> 4:
            return self.tpr
        return max(self.tpr & 0xF0, isrv & 0xF0, irrv & 0xF0)

    def _eoi(self) -> None:
        vector = _highest(self.isr)
        if vector is None:
            return
        self.isr &= ~(1 << vector)
        if self.tmr >> vector & 1:
            self.on_eoi(vector)  # a level-triggered interrupt: the I/O APIC may resend it

    def _send_ipi(self) -> None:
        low = self.icr & 0xFFFFFFFF
        vector, mode, shorthand = low & 0xFF, (low >> 8) & 7, (low >> 18) & 3
        if mode not in (_FIXED, _LOWEST):
            return  # INIT, SIPI, NMI, SMI: to absent CPUs (or not modelled): no one
        if shorthand == _SHORTHAND_OTHERS or not self._is_mine(shorthand):
            return
        if vector < 16:
            self._error(ESR_SEND_ILLEGAL)
            return
        self.accept(vector, level=bool(low >> 15 & 1))

    def _is_mine(self, shorthand: int) -> bool:
        if shorthand in (_SHORTHAND_SELF, _SHORTHAND_ALL):
            return True
        return self.addressed(self.icr >> 56, logical=bool(self.icr >> 11 & 1))

    def addressed(self, destination: int, logical: bool) -> bool:
        """Is this APIC the destination of a message (physical ID or broadcast, or the flat
        logical model's bit mask)?"""
        if logical:
            return bool(destination & self.ldr >> 24)
        return destination in (self.apic_id, 0xFF)

    def _error(self, bit: int) -> None:
        self.errors |= bit
        entry = self.lvt[LVT_ERROR - LVT_TIMER]
        if not entry & LVT_MASKED and entry & 0xFF >= 16:  # (an illegal one: no loop)
            self.accept(entry & 0xFF, level=False)

    # --- the student's view -----------------------------------------------------------

    def view(self) -> LapicView:
        entry = self.lvt[0]
        mode = "periodic" if entry & LVT_PERIODIC else "one-shot"
        return LapicView(
            enabled=self.software_enabled,
            tpr=self.tpr,
            ppr=self.ppr,
            irr=_vectors(self.irr),
            isr=_vectors(self.isr),
            timer_mode=mode + (" (masked)" if entry & LVT_MASKED else ""),
            timer_vector=entry & 0xFF,
            initial_count=self.timer.initial,
            current_count=self.timer.current(),
            pic_passes=self.pic_passes,
        )


def _vectors(bits: int) -> tuple[int, ...]:
    return tuple(v for v in range(256) if bits >> v & 1)
