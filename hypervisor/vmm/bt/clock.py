"""The translation cache's clock: translated code runs with no per-instruction counting, so
it keeps its own count of guest instructions, as a budget in the vCPU area that each block
spends on entry. The monitor arms the budget before the CPU enters the cache, reads what was
spent when it leaves, ticks the PIT for it, and approaches the exact end of a run with
stepping fragments (one guest instruction each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypervisor.events import InsnClass
from hypervisor.vmm.bt.translator import MAX_BLOCK

if TYPE_CHECKING:
    from hypervisor.vmm.bt.executor import BinaryTranslation

STEPPING_MARGIN = 32  # > the most a fragment and the next one's unpaid prefix can overrun


class TcClock:
    def __init__(self, bt: BinaryTranslation) -> None:
        self.bt = bt
        self.budget = 0  # the vCPU area's budget as the monitor last wrote or read it
        self.clocked = 0  # translated guest instructions the PIT has ticked for
        self.stepping = False  # running stepping fragments, to stop at an exact step

    def arm(self, count: int) -> None:
        """The TC may run `count` guest instructions before it calls the monitor."""
        bt = self.bt
        self.budget = count
        bt.machine.write_monitor(bt.area.budget, count.to_bytes(4, "little"), code=False)

    def plausible(self, raw: int) -> bool:
        """Translated code only spends the budget, a block at most past zero."""
        return -MAX_BLOCK <= _signed(raw) <= self.budget

    def spend(self, raw: int) -> int:
        """The budget read back from the vCPU area: count what the TC ran since."""
        budget = _signed(raw)
        spent, self.budget = self.budget - budget, budget
        if spent:
            self.count(spent)
        return spent

    def count(self, n: int) -> None:
        """Guest instructions the TC ran, from its counter (a traced run counts them one by
        one as it sees them instead)."""
        bt = self.bt
        if bt.tracing:
            return
        stats = bt.vm.stats
        stats.total += n
        stats.by_class[InsnClass.TRANSLATED.value] += n

    def sync(self, ahead: int = 0) -> None:
        """Tick the timers for the guest instructions the TC ran (and the callouts), less
        `ahead` counted but not run yet (a device read in the middle of a block)."""
        vm = self.bt.vm
        done = vm.stats.by_class[InsnClass.TRANSLATED.value] - ahead
        if done > self.clocked:
            vm.tick(done - self.clocked)
            self.clocked = done

    def approach(self, count: int) -> int:
        """A run must stop at an exact step, but a fragment pays for all its instructions at
        once and may overrun its budget. So the end of a run is approached in two moves:
        fast, to within STEPPING_MARGIN of it, then with stepping fragments (one guest
        instruction each, back to the monitor after each). Slices that end well before,
        at a timer interrupt, need no precision and stay fast; and a traced run needs none
        of this: its tracer sees every guest instruction start and stops at the right one."""
        bt = self.bt
        run_end = None if bt.tracing else bt.vm.run_end  # the tracer stops exactly
        left = None if run_end is None else run_end - bt.vm.stats.total
        stepping = False
        if left is not None and count + STEPPING_MARGIN > left:
            if left > STEPPING_MARGIN:
                count = left - STEPPING_MARGIN
            else:
                count, stepping = min(count, max(left, 1)), True
        if stepping and not self.stepping and bt.parked is None:
            bt.park_here()
        self.stepping = stepping
        return count


def _signed(value: int) -> int:
    return value - ((value & 0x80000000) << 1)
