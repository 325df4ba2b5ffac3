"""Many VMs on one physical CPU: deterministic round-robin with a quantum in guest instructions.

The host's one CPU goes to each runnable VM in turn (in the order they were created) for at
most `quantum` guest instructions; then the monitor takes it back and gives it to the next
one — a world switch. Time is counted in guest instructions, not wall-clock time, so a
schedule is the same on every run and every machine. A busy loop that never yields is
preempted like any other guest: it cannot starve the others. A VM halted waiting for an
interrupt does not take the CPU while it waits: its idle time is skipped (its own clock jumps
to the next timer tick, `Executor._wake`), so its quanta are spent only on instructions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypervisor.events import EventLog, WorldSwitch
from hypervisor.machine.cancel import CANCEL
from hypervisor.vmm.contract import ExitInfo, ExitReason

if TYPE_CHECKING:
    from hypervisor.vmm.host import HostedVm

DEFAULT_QUANTUM = 10_000


@dataclass
class CpuAccount:
    """One VM's use of the host's CPU."""

    instructions: int = 0  # guest instructions it ran on this host
    quanta: int = 0  # times it was given the CPU
    preempted: int = 0  # quanta it used to the end (the scheduler took the CPU back)


class RoundRobin:
    def __init__(self, events: EventLog, quantum: int = DEFAULT_QUANTUM) -> None:
        if quantum < 1:
            raise ValueError("the quantum must be at least one instruction")
        self.events = events
        self.quantum = quantum
        self.world_switches = 0
        self.host_step = 0  # guest instructions run for all VMs so far
        self.current: HostedVm | None = None
        self._left = 0  # instructions left of the current VM's quantum

    def run(self, vms: Sequence[HostedVm], limit: int | None = None) -> None:
        """Rounds over `vms` until none is runnable, or `limit` more guest instructions. A run
        cut short by `limit` is taken up where it stopped (the same VM, the rest of its
        quantum), so running a host at once or in pieces gives the same schedule (under bt a
        quantum ends with its translated block, a few instructions late: where a piece ends
        shifts that by as much)."""
        order = list(vms)
        if not order:
            return
        end = None if limit is None else self.host_step + limit
        index = order.index(self.current) if self.current in order else 0
        if self.current in order and self._left <= 0:
            index = (index + 1) % len(order)
        idle = 0  # VMs in a row found not runnable
        while idle < len(order):
            if CANCEL.requested:  # every VM stops where it is, those that waited too
                for waiting in order:
                    if waiting.vm.exit is None:
                        waiting.vm.interrupt()
                return
            if end is not None and self.host_step >= end:
                return
            hosted = order[index]
            if hosted.runnable:
                ran = self.give_cpu(hosted, None if end is None else end - self.host_step)
                idle = 0 if ran else idle + 1  # one asleep until input retires nothing
                if ran and self._left > 0 and hosted.runnable:
                    continue  # stopped by `limit` only: its turn goes on next time
            else:
                idle += 1
            index = (index + 1) % len(order)

    def give_cpu(self, hosted: HostedVm, at_most: int | None = None) -> int:
        """The rest of `hosted`'s quantum, or `at_most` of it (a new quantum, switching
        worlds, if another VM had the CPU or its last one was used up). Returns the guest
        instructions it ran."""
        if hosted is not self.current or self._left <= 0:
            if hosted is not self.current:
                self._switch(hosted)
            self._left = self.quantum
            hosted.account.quanta += 1
        vm = hosted.vm
        count = min(self._left, hosted.budget_left, at_most or self._left)
        # The VM's own budget ends here: it stops like a single run does ("budget").
        is_quantum = count < hosted.budget_left
        before = vm.stats.total
        exit_info: ExitInfo | None
        try:
            exit_info = vm.run(count, quantum=is_quantum)
        except Exception as err:  # a monitor bug stays inside its VM, like a guest's crash
            vm.finish(
                ExitInfo(ExitReason.CRASHED, detail=f"monitor error: {type(err).__name__}: {err}")
            )
            exit_info = vm.exit
        ran = vm.stats.total - before
        self._left -= ran
        hosted.account.instructions += ran
        stopped_by_budget = exit_info is not None and not exit_info.final
        if self._left <= 0 and stopped_by_budget and is_quantum:
            hosted.account.preempted += 1  # its quantum was used up: the scheduler took the CPU
        self.host_step += ran
        return ran

    def _switch(self, to: HostedVm) -> None:
        previous = self.current
        reason = ""
        if previous is not None:
            reason = "quantum" if previous.runnable else previous.state
        self.current = to
        self.world_switches += 1
        self.events.emit(
            WorldSwitch(
                to.name,
                to.vm.step,
                previous.name if previous else "",
                reason,
                self.host_step,
            )
        )
