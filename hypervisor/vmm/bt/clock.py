"""The translation cache's clock: translated code runs with no per-instruction counting, so
it keeps its own count of guest instructions, as a budget in the vCPU area that each block
spends on entry. The monitor arms the budget before the CPU enters the cache, reads what was
spent when it leaves, ticks the PIT for it, and runs the last few instructions of a slice
(fewer than a block) with stepping fragments (one guest instruction each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypervisor.events import InsnClass
from hypervisor.vmm.bt.translator import MAX_BLOCK

if TYPE_CHECKING:
    from hypervisor.vmm.bt.executor import BinaryTranslation


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
        """Translated code only spends the budget, never past zero."""
        return 0 <= _signed(raw) <= self.budget

    def unread(self, raw: int) -> int:
        """Guest instructions spent from the budget since the monitor last read it."""
        return self.budget - _signed(raw)

    def take(self) -> bool:
        """A callout is about to run one guest instruction: spend it from the budget (as
        a block spends its own), or False if the slice has none left for it."""
        if self.budget <= 0:
            return False
        self.arm(self.budget - 1)
        return True

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
        """The budget of a slice of `count` instructions (to the timer's next interrupt,
        or the run's end). A fragment runs only if the budget covers its whole block, so
        the slice runs fast until less than a block is left, then with stepping fragments
        (one guest instruction each, back to the monitor after each) to its exact end.
        Only a scheduler's quantum (or a stride of time travel) may end a few instructions
        late, with the whole of a fragment; and a traced run's tracer sees every guest
        instruction start and stops at the run's end itself."""
        bt = self.bt
        vm = bt.vm
        run_end = None if bt.tracing else vm.run_end  # the tracer stops exactly
        if run_end is not None:
            count = min(count, max(run_end - vm.stats.total, 1))
        elif count < MAX_BLOCK and not self._exact_end(count):
            count = MAX_BLOCK
        stepping = count < MAX_BLOCK
        if stepping and not self.stepping and bt.parked is None:
            bt.park_here()
        self.stepping = stepping
        return count

    def _exact_end(self, count: int) -> bool:
        """Must a slice of `count` end exactly there: at the timer's interrupt, or at an
        interrupt that waits for the instruction after STI?"""
        irqs = self.bt.vm.irqs
        due = irqs.next_timer()
        return (due is not None and due <= count) or irqs.pending_vector() is not None


def _signed(value: int) -> int:
    return value - ((value & 0x80000000) << 1)
