"""The 8254 programmable interval timer, on a deterministic clock.

The input clock is not wall time: it advances one tick per retired guest instruction, when
the machine calls `advance()`. A run is therefore exactly repeatable, which the trace and
time-travel layers depend on, and the same guest sees its timer interrupts at the same
instruction whatever the host's speed. Counting is arithmetic on the tick at which the count
was loaded, so `advance()` and counter reads cost O(1) however many ticks pass, and
`ticks_until_irq()` lets the machine run exactly up to the next IRQ 0 edge in one slice.

Simplifications (each documented where it matters):
- All three channels count, but only channel 0's output is wired (to IRQ 0); there are no
  GATE inputs (all held high, as channel 0's is on a PC) and no speaker port 0x61.
- Periodic modes 2 (rate generator) and 3 (square wave) give one IRQ 0 edge per reload
  period. Mode 0 gives a single edge when the count reaches zero; modes 1, 4 and 5, whose
  trigger is the GATE edge we do not have, are treated as one-shots like mode 0, triggered
  by writing the count. Modes 6 and 7 are the chip's own aliases of 2 and 3.
- A count is loaded the instant it is fully written (the real chip waits for the next
  clock) and the first edge comes `reload` ticks later; rewriting the count of a running
  periodic channel restarts it at once (the real chip waits for the period to end).
- BCD counting (control word bit 0) is accepted and reported in the status byte, but the
  counter counts in binary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypervisor.devices.port import BytePortDevice

COUNTER_PORTS = (0x40, 0x41, 0x42)
CONTROL_PORT = 0x43

ACCESS_LATCH = 0
ACCESS_LOBYTE = 1
ACCESS_HIBYTE = 2
ACCESS_LOHI = 3
READ_BACK = 3  # the "select counter" value that means a read-back command
FULL_COUNT = 0x10000  # a reload value of 0 counts 65536 ticks


@dataclass(frozen=True)
class PitChannelState:
    """An immutable view of one channel, for the UI."""

    mode: int  # as programmed, 0..7
    access: int  # ACCESS_LOBYTE, ACCESS_HIBYTE or ACCESS_LOHI
    reload: int  # 1..65536
    counting: bool
    count: int  # what an unlatched counter read would see, 0..0xFFFF
    out: bool  # the OUT pin


@dataclass(eq=False)
class _Channel:
    """One counter. Its state is a function of the tick at which the count was loaded."""

    mode: int = 0
    access: int = ACCESS_LOHI
    bcd: bool = False
    reload: int = FULL_COUNT
    counting: bool = False
    start: int = 0  # global tick at which the current count was loaded
    stopped_count: int = 0  # what reads see while not counting
    stopped_out: bool = False
    null_count: bool = True  # programmed, but no count written yet
    low_byte: int | None = None  # first half of a lobyte/hibyte count write
    read_high: bool = False  # read flip-flop: the next lobyte/hibyte read returns the high byte
    latched_count: int | None = None
    latched_status: int | None = None

    @property
    def periodic(self) -> bool:
        return self.mode & 3 in (2, 3)  # modes 2, 3 and their aliases 6, 7

    @property
    def square(self) -> bool:
        return self.mode & 3 == 3

    # --- the count as a function of time -------------------------------------------------

    def count(self, now: int) -> int:
        if not self.counting:
            return self.stopped_count
        n, elapsed = self.reload, now - self.start
        if not self.periodic:
            return (n - elapsed) & 0xFFFF  # after zero it wraps and keeps counting down
        pos = elapsed % n
        if not self.square:
            return (n - pos) & 0xFFFF  # n, n-1, …, 1, then reload: 0 is never seen
        return self._square_count(pos) & 0xFFFF

    def _square_count(self, pos: int) -> int:
        """Mode 3 counts down by 2 through each half period, reloading at both halves.

        For an odd reload the high half is one tick longer: the first tick after a load
        subtracts 1 in the high half and 3 in the low half (8254 data sheet).
        """
        n, high_ticks = self.reload, (self.reload + 1) // 2
        if n % 2 == 0:
            return n - 2 * (pos % high_ticks)
        if pos < high_ticks:
            return n if pos == 0 else n + 1 - 2 * pos
        pos -= high_ticks
        return n if pos == 0 else n - 1 - 2 * pos

    def out(self, now: int) -> bool:
        if not self.counting:
            return self.stopped_out
        n, elapsed = self.reload, now - self.start
        if not self.periodic:
            return elapsed >= n  # low while counting, high from terminal count on
        if self.square:
            return elapsed % n < (n + 1) // 2
        return n == 1 or elapsed % n != n - 1  # low for the one tick at count 1

    def edges(self, old: int, new: int) -> int:
        """Rising edges of OUT in the tick interval (old, new]."""
        n = self.reload
        e0, e1 = old - self.start, new - self.start
        if self.periodic:
            return e1 // n - e0 // n
        return 1 if e0 < n <= e1 else 0

    def ticks_until_edge(self, now: int) -> int | None:
        if not self.counting:
            return None
        elapsed = now - self.start
        if self.periodic:
            return self.reload - elapsed % self.reload
        return self.reload - elapsed if elapsed < self.reload else None

    # --- programming -------------------------------------------------------------------

    def program(self, access: int, mode: int, bcd: bool, now: int) -> None:
        """A control word: reset the channel's logic; counting waits for a new count."""
        self._stop(now)
        self.stopped_out = mode != 0  # mode 0 drives OUT low, every other mode high
        self.mode, self.access, self.bcd = mode, access, bcd
        self.null_count = True
        self.low_byte = None
        self.read_high = False
        self.latched_count = self.latched_status = None

    def write(self, value: int, now: int) -> None:
        if self.access == ACCESS_LOBYTE:
            self._load(value, now)
        elif self.access == ACCESS_HIBYTE:
            self._load(value << 8, now)
        elif self.low_byte is None:
            self.low_byte = value
            if self.mode == 0:
                self._stop(now)  # in mode 0, writing the first byte stops the count
        else:
            self._load(self.low_byte | value << 8, now)
            self.low_byte = None

    def _load(self, value: int, now: int) -> None:
        self.reload = value or FULL_COUNT
        self.counting = True
        self.start = now
        self.null_count = False

    def _stop(self, now: int) -> None:
        self.stopped_count, self.stopped_out = self.count(now), self.out(now)
        self.counting = False

    # --- reading -----------------------------------------------------------------------

    def latch(self, now: int) -> None:
        """Counter latch: freeze the count for reading; ignored if a latch is unread."""
        if self.latched_count is None:
            self.latched_count = self.count(now)

    def latch_status(self, now: int) -> None:
        if self.latched_status is None:
            self.latched_status = (
                self.out(now) << 7
                | self.null_count << 6
                | self.access << 4
                | self.mode << 1
                | self.bcd
            )

    def read(self, now: int) -> int:
        if self.latched_status is not None:
            status, self.latched_status = self.latched_status, None
            return status
        value = self.count(now) if self.latched_count is None else self.latched_count
        if self.access == ACCESS_LOHI and not self.read_high:
            self.read_high = True
            return value & 0xFF
        self.read_high = False
        self.latched_count = None  # the latch is released once fully read
        return value >> 8 if self.access != ACCESS_LOBYTE else value & 0xFF

    def state(self, now: int) -> PitChannelState:
        return PitChannelState(
            self.mode, self.access, self.reload, self.counting, self.count(now), self.out(now)
        )


@dataclass(eq=False)
class Pit8254(BytePortDevice):
    """Three counters at 0x40–0x42, control word at 0x43; channel 0 drives `on_irq0`."""

    on_irq0: Callable[[], None]
    name: str = "PIT"
    ports: tuple[int, ...] = field(default=(*COUNTER_PORTS, CONTROL_PORT), init=False)
    ticks: int = field(default=0, init=False)  # input clock ticks since power-on
    channels: tuple[_Channel, _Channel, _Channel] = field(
        default_factory=lambda: (_Channel(), _Channel(), _Channel()), init=False
    )
    CHECKPOINTED = ("ticks", "channels")
    NOT_CHECKPOINTED = ("name", "ports", "on_irq0")

    def advance(self, ticks: int) -> int:
        """Let `ticks` input clocks pass; call `on_irq0` once per IRQ 0 edge, return how many.

        The arithmetic is O(1); the callbacks are one per edge, so a machine that slices its
        runs with `ticks_until_irq()` sees at most one.
        """
        if ticks < 0:
            raise ValueError(f"time only moves forward: advance({ticks})")
        old = self.ticks
        self.ticks += ticks
        channel = self.channels[0]
        if not channel.counting or ticks == 0:
            return 0
        edges = channel.edges(old, self.ticks)
        for _ in range(edges):
            self.on_irq0()
        return edges

    def ticks_until_irq(self) -> int | None:
        """Ticks until the next IRQ 0 edge (that many calls' worth of `advance` reaches it).

        None when channel 0 is not counting, or is a one-shot that has already fired.
        """
        return self.channels[0].ticks_until_edge(self.ticks)

    def channel_state(self, index: int) -> PitChannelState:
        return self.channels[index].state(self.ticks)

    def _read_byte(self, port: int) -> int:
        if port == CONTROL_PORT:
            return 0xFF  # the control register is write-only: the bus floats
        return self.channels[port - COUNTER_PORTS[0]].read(self.ticks)

    def _write_byte(self, port: int, value: int) -> None:
        if port != CONTROL_PORT:
            self.channels[port - COUNTER_PORTS[0]].write(value, self.ticks)
            return
        select, access = value >> 6, (value >> 4) & 3
        if select == READ_BACK:
            self._read_back(value)
        elif access == ACCESS_LATCH:
            self.channels[select].latch(self.ticks)
        else:
            self.channels[select].program(access, (value >> 1) & 7, bool(value & 1), self.ticks)

    def _read_back(self, value: int) -> None:
        """8254 read-back: latch count (bit 5 clear) and/or status (bit 4 clear) of the
        channels selected by bits 1–3; a status latch is read before the count."""
        for index, channel in enumerate(self.channels):
            if value & (2 << index):
                if not value & 0x20:
                    channel.latch(self.ticks)
                if not value & 0x10:
                    channel.latch_status(self.ticks)
