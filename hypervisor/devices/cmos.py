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
for memory sizes (0x15/0x16 base KiB, 0x17/0x18 and 0x30/0x31 extended KiB, 0x34/0x35
64 KiB blocks above 16 MiB).

Not modelled: the periodic, alarm and update-ended interrupts (IRQ 8); status C reads 0.
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
B_SET, B_BINARY, B_24HOUR = 0x80, 0x04, 0x02
D_VRT = 0x80
NMI_DISABLE = 0x80
KIB, MIB = 1 << 10, 1 << 20


def _nvram(ram_size: int) -> bytearray:
    """The CMOS bytes a PC's firmware leaves, QEMU's way (hw/i386/pc.c)."""
    nvram = bytearray(128)
    nvram[STATUS_A], nvram[STATUS_B], nvram[STATUS_D] = 0x26, B_24HOUR, D_VRT
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
    nvram: bytearray = field(init=False)
    CHECKPOINTED = ("index", "nmi_masked", "offset", "frozen", "nvram")
    NOT_CHECKPOINTED = ("name", "ports", "clock", "ram_size")

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
            return 0  # no interrupt flags: IRQ 8 is not modelled
        return self.nvram[register]

    def _write_byte(self, port: int, value: int) -> None:
        if port == INDEX_PORT:
            self.index, self.nmi_masked = value & 0x7F, bool(value & NMI_DISABLE)
            return
        register = self.index
        if register in TIME_REGISTERS:
            self._set_time_register(register, value)
        elif register == STATUS_B:
            self._write_status_b(value)
        elif register == STATUS_A:
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
