"""The local APIC's timer, on the machine's instruction clock.

The timer counts the APIC bus clock divided by the divide configuration. vmlab's APIC bus
runs at 1 GHz, as QEMU's does, and its time is the machine's: one PIT input tick (1/1.193182
MHz = 838.1 ns) per retired guest instruction, so `bus(t) = t * 10**9 // 1_193_182` bus
cycles have passed at instruction `t`. Like the PIT's, every count is arithmetic on the
instruction at which the initial count was written: reads and `advance()` cost O(1), and
`ticks_until_expiry()` lets the machine run exactly to the next expiry in one slice, so a
run is repeatable and time travel exact.

One-shot: the count goes from the initial count down to 0, once (it stays 0). Periodic:
it reloads at 0, an expiry every `initial * divide` bus cycles. Writing 0 stops the timer.
A change of the divide configuration or the mode applies to the time since the count was
written (as QEMU computes it).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypervisor.devices.cmos import PIT_HZ

BUS_HZ = 1_000_000_000


def bus_cycles(ticks: int) -> int:
    """APIC bus cycles in the first `ticks` instructions of the machine's clock."""
    return ticks * BUS_HZ // PIT_HZ


def divide_by(config: int) -> int:
    """The divisor a divide configuration register value selects (bits 0, 1 and 3)."""
    code = (config & 3) | (config >> 1 & 4)
    return 1 if code == 7 else 2 << code


@dataclass
class ApicTimer:
    ticks: int = 0  # the machine's clock, as last advanced
    start: int = 0  # the tick at which the initial count was written
    initial: int = 0
    divide_config: int = 0
    periodic: bool = False

    def stop(self) -> None:
        self.initial = self.divide_config = 0
        self.periodic = False

    def load(self, count: int, periodic: bool) -> None:
        self.initial, self.start, self.periodic = count, self.ticks, periodic

    def set_divide(self, value: int) -> None:
        self.divide_config = value & 0xB

    def _counted(self, ticks: int) -> int:
        """Counts the timer has gone down by at `ticks` since the initial count was written."""
        return (bus_cycles(ticks) - bus_cycles(self.start)) // divide_by(self.divide_config)

    def _expiries(self, ticks: int) -> int:
        if not self.initial:
            return 0
        counted = self._counted(ticks)
        return counted // self.initial if self.periodic else int(counted >= self.initial)

    def current(self) -> int:
        """The current count register."""
        if not self.initial:
            return 0
        counted = self._counted(self.ticks)
        if self.periodic:
            return self.initial - counted % self.initial
        return max(0, self.initial - counted)

    def advance(self, ticks: int) -> bool:
        """Let `ticks` instructions pass; True if the timer expired meanwhile."""
        before = self._expiries(self.ticks)
        self.ticks += ticks
        return self._expiries(self.ticks) > before

    def ticks_until_expiry(self) -> int | None:
        """Instructions until the next expiry (None: stopped, or a one-shot that fired)."""
        if not self.initial:
            return None
        done = self._expiries(self.ticks)
        if not self.periodic and done:
            return None
        target = bus_cycles(self.start) + (done + 1) * self.initial * divide_by(self.divide_config)
        first_tick = -(-target * PIT_HZ // BUS_HZ)  # the first tick with bus_cycles >= target
        return max(1, first_tick - self.ticks)
