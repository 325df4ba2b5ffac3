"""The CMOS real-time clock and NVRAM (Motorola MC146818, as in every PC), on a deterministic clock.

Port 0x70 selects a register (bits 0-6) and sets the NMI mask (bit 7: 1 = NMI disabled);
port 0x71 reads or writes the selected register. Kernels read the date at boot and many
probe status registers, so the chip must answer as a PC's does.

Time is not the host's: the clock is the PIT's input clock (one tick per retired guest
instruction, 1.193182 MHz), counted from a fixed epoch, so a run shows the same date at
the same instruction every time, and time travel lands on the same second. A guest that
writes a time register sets the clock (the offset is part of the checkpointed state).

Registers as in the datasheet: 0x00 seconds, 0x02 minutes, 0x04 hours, 0x06 day of week
(1 = Sunday), 0x07 day of month, 0x08 month, 0x09 year, 0x32 century (as QEMU keeps it);
0x01/0x03/0x05 the alarm; status A (bit 7 UIP: set for the last 244 us before each update,
bits 0-6 divider and rate, read/write), status B (bit 7 SET halts updates, bit 2 DM binary
rather than BCD, bit 1 24-hour), status C (interrupt flags, cleared by a read), status D
(bit 7 VRT: the battery is good). The rest is NVRAM; vmlab fills the bytes QEMU's PC does
for the FPU and memory sizes (0x14 equipment: bit 1, an FPU; 0x15/0x16 base KiB, 0x17/0x18
and 0x30/0x31 extended KiB, 0x34/0x35 64 KiB blocks above 16 MiB).

Interrupts (IRQ 8), as course kernels use the RTC for a clock tick: the periodic flag (PF)
at the rate status A's low bits select from the 32.768 kHz time base (1024 Hz as the BIOS
leaves it; the divider bits must be 010, the oscillator running) and the update-ended flag
(UF) at each second's update. Status B's PIE and UIE let them raise IRQF and IRQ 8;
reading status C returns the flags and clears them. The line stays up until then, so a
kernel that never reads C gets one interrupt only (the 8259 sees one edge), as on a PC and
QEMU. Not modelled: the alarm interrupt (AF never sets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypervisor.devices.port import BytePortDevice

INDEX_PORT, DATA_PORT = 0x70, 0x71
PIT_HZ = 1_193_182  # the instruction clock: one PIT input tick per retired instruction
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # the time at instruction 0 (documented in docs/)
UIP_TICKS = 291  # 244 us before each update, in ticks of the instruction clock

SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR = 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09
STATUS_A, STATUS_B, STATUS_C, STATUS_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32
TIME_REGISTERS = (SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY)
A_UIP = 0x80
A_DIVIDER, A_RUNNING = 0x70, 0x20  # divider bits; 010: the 32.768 kHz time base runs
B_SET, B_PIE, B_UIE, B_BINARY, B_24HOUR = 0x80, 0x40, 0x10, 0x04, 0x02
C_IRQF, C_PF, C_UF = 0x80, 0x40, 0x10
TIME_BASE = 32_768  # Hz
D_VRT = 0x80
NMI_DISABLE = 0x80
KIB, MIB = 1 << 10, 1 << 20
EQUIPMENT, EQUIPMENT_FPU = 0x14, 0x02  # the equipment byte; bit 1: a math coprocessor


def _nvram(ram_size: int) -> bytearray:
    """The CMOS bytes a PC's firmware leaves, QEMU's way (hw/i386/pc.c)."""
    nvram = bytearray(128)
    nvram[STATUS_A], nvram[STATUS_B], nvram[STATUS_D] = 0x26, B_24HOUR, D_VRT
    nvram[EQUIPMENT] = EQUIPMENT_FPU  # QEMU's also says floppy and mouse: vmlab has neither
    nvram[0x15:0x17] = (640).to_bytes(2, "little")  # base memory, KiB
    extended = min(max(ram_size - MIB, 0) // KIB, 0xFFFF)  # KiB above 1 MiB, up to 64 MiB
    nvram[0x17:0x19] = nvram[0x30:0x32] = extended.to_bytes(2, "little")
    above_16m = min(max(ram_size - 16 * MIB, 0) // (64 * KIB), 0xFFFF)
    nvram[0x34:0x36] = above_16m.to_bytes(2, "little")
    return nvram


@dataclass(eq=False)
class CmosRtc(BytePortDevice):
    """The RTC and its 128 bytes of CMOS; `clock()` is the instruction clock in PIT ticks."""

    clock: Callable[[], int]
    ram_size: int
    name: str = "RTC"
    ports: tuple[int, ...] = (INDEX_PORT, DATA_PORT)
    index: int = 0
    nmi_masked: bool = False
    offset: int = 0  # seconds the guest moved the clock from EPOCH + instruction time
    frozen: datetime | None = None  # the time held while status B's SET bit is on
    on_irq: Callable[[], None] = lambda: None  # IRQ 8 rose
    flags: int = 0  # status C
    seen: int = 0  # the clock up to which periodic ticks and updates are in `flags`
    nvram: bytearray = field(init=False)
    CHECKPOINTED = ("index", "nmi_masked", "offset", "frozen", "flags", "seen", "nvram")
    NOT_CHECKPOINTED = ("name", "ports", "clock", "ram_size", "on_irq")

    def __post_init__(self) -> None:
        self.nvram = _nvram(self.ram_size)

    # --- the clock -----------------------------------------------------------------------
    def now(self) -> datetime:
        """The date and time the chip holds now."""
        if self.frozen is not None:
            return self.frozen
        return EPOCH + timedelta(seconds=self.clock() // PIT_HZ + self.offset)

    def _encode(self, value: int) -> int:
        return value if self.nvram[STATUS_B] & B_BINARY else (value // 10) << 4 | value % 10

    def _decode(self, value: int) -> int:
        return value if self.nvram[STATUS_B] & B_BINARY else (value >> 4) * 10 + (value & 0xF)

    def _hour(self, hour: int) -> int:
        if self.nvram[STATUS_B] & B_24HOUR:
            return self._encode(hour)
        return self._encode((hour + 11) % 12 + 1) | (0x80 if hour >= 12 else 0)

    def _time_register(self, register: int) -> int:
        t = self.now()
        values = {
            SECONDS: t.second,
            MINUTES: t.minute,
            WEEKDAY: t.isoweekday() % 7 + 1,
            DAY: t.day,
            MONTH: t.month,
            YEAR: t.year % 100,
            CENTURY: t.year // 100,
        }
        return self._hour(t.hour) if register == HOURS else self._encode(values[register])

    def _set_time_register(self, register: int, value: int) -> None:
        t = self.now()
        if register == HOURS and not self.nvram[STATUS_B] & B_24HOUR:
            hour = self._decode(value & 0x7F) % 12 + (12 if value & 0x80 else 0)
            new = t.replace(hour=hour)
        else:
            number = self._decode(value)
            fields = [t.year, t.month, t.day, t.hour, t.minute, t.second]
            where = {YEAR: 0, CENTURY: 0, MONTH: 1, DAY: 2, HOURS: 3, MINUTES: 4, SECONDS: 5}
            if register not in where:
                return  # the day of week: the chip stores it; vmlab derives it
            if register == YEAR:
                number = t.year // 100 * 100 + number % 100
            elif register == CENTURY:
                number = number * 100 + t.year % 100
            fields[where[register]] = number
            try:
                year, month, day, hour, minute, second = fields
                new = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            except ValueError:
                return  # an impossible date (a real chip would count on from it)
        if self.frozen is not None:
            self.frozen = new
        else:
            self.offset += int((new - t).total_seconds())

    # --- the registers -------------------------------------------------------------------
    def _read_byte(self, port: int) -> int:
        if port == INDEX_PORT:
            return 0xFF  # the index register is write-only
        register = self.index
        if register in TIME_REGISTERS:
            return self._time_register(register)
        if register == STATUS_A:
            updating = self.frozen is None and self.clock() % PIT_HZ >= PIT_HZ - UIP_TICKS
            return self.nvram[STATUS_A] & 0x7F | (A_UIP if updating else 0)
        if register == STATUS_C:
            self.advance()
            flags, self.flags = self.flags, 0  # reading C clears it: IRQ 8 falls
            return flags
        return self.nvram[register]

    def _write_byte(self, port: int, value: int) -> None:
        if port == INDEX_PORT:
            self.index, self.nmi_masked = value & 0x7F, bool(value & NMI_DISABLE)
            return
        register = self.index
        if register in TIME_REGISTERS:
            self._set_time_register(register, value)
        elif register == STATUS_B:
            self.advance()
            self._write_status_b(value)
            self._raise()  # enabling an interrupt whose flag is set raises it at once
        elif register == STATUS_A:
            self.advance()
            self.nvram[STATUS_A] = value & 0x7F  # UIP is read-only
        elif register not in (STATUS_C, STATUS_D):  # C and D are read-only
            self.nvram[register] = value

    def _write_status_b(self, value: int) -> None:
        if value & B_SET and self.frozen is None:
            self.frozen = self.now()
        elif not value & B_SET and self.frozen is not None:
            running = EPOCH + timedelta(seconds=self.clock() // PIT_HZ)
            self.offset = int((self.frozen - running).total_seconds())
            self.frozen = None
        self.nvram[STATUS_B] = value

    # --- interrupts ------------------------------------------------------------------------
    def _period(self) -> int | None:
        """Cycles of the 32.768 kHz time base between periodic flags (None: none)."""
        a = self.nvram[STATUS_A]
        rate = a & 0x0F
        if not rate or a & A_DIVIDER != A_RUNNING:
            return None
        return 1 << (rate + 6 if rate < 3 else rate - 1)  # rates 1, 2 are 256 and 128 Hz

    def advance(self) -> None:
        """Account the periodic ticks and updates up to the clock's now; raise IRQ 8 if that
        sets an enabled flag."""
        now, seen = self.clock(), self.seen
        if now <= seen:
            return
        self.seen = now
        period = self._period()
        if period and now * TIME_BASE // PIT_HZ // period > seen * TIME_BASE // PIT_HZ // period:
            self.flags |= C_PF
        if self.frozen is None and now // PIT_HZ > seen // PIT_HZ:
            self.flags |= C_UF
        self._raise()

    def _raise(self) -> None:
        if self.flags & self.nvram[STATUS_B] & (C_PF | C_UF) and not self.flags & C_IRQF:
            self.flags |= C_IRQF
            self.on_irq()

    @property
    def interrupting(self) -> bool:
        """Is an interrupt enabled? Else the flags wait until status C is read (a sticky
        flag set once or many times reads the same), and the clock need not look."""
        return bool(self.nvram[STATUS_B] & (B_PIE | B_UIE))

    def ticks_until_irq(self) -> int | None:
        """Clock ticks until IRQ 8 next rises (None: no enabled interrupt, or the line is up
        already and waits for a read of status C)."""
        enabled = self.nvram[STATUS_B] & (B_PIE | B_UIE)
        if not enabled or self.flags & C_IRQF:
            return None
        now = self.clock()
        dues = []
        period = self._period()
        if enabled & B_PIE and period:
            cycle = (now * TIME_BASE // PIT_HZ // period + 1) * period
            dues.append(-(-cycle * PIT_HZ // TIME_BASE) - now)  # the first tick reaching it
        if enabled & B_UIE and self.frozen is None:
            dues.append((now // PIT_HZ + 1) * PIT_HZ - now)
        return min(dues, default=None)
