"""The host's timeline: which VM had the CPU when, from a real run of the host's scheduler.

A time machine (`timetravel.py`) follows one VM through its own steps. On a host the VMs take
turns: the round-robin scheduler gives each one a quantum, then switches worlds. VMs are
isolated and deterministic, so a VM's step k on the host is its step k alone: what the host
adds is the order. A `HostTimeline` runs a real `Host` with the same guests (untraced, as far
as asked), keeps its turns from the scheduler's `WorldSwitch` events, and answers: at host
step H (guest instructions run for all VMs), which VM has the CPU, and where is each VM?
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypervisor.events import Event, WorldSwitch
from hypervisor.guest.image import GuestImage
from hypervisor.vmm.contract import DEFAULT_RAM
from hypervisor.vmm.host import Host

if TYPE_CHECKING:
    from hypervisor.trace.timetravel import TimeMachine

CHUNK = 50_000  # host steps run at a time when the timeline is extended
HOST_QUANTUM = 1_000  # the quantum the UI's host clock uses: a world switch every 1,000 steps


@dataclass(frozen=True, slots=True)
class Turn:
    """A VM holding the host's CPU from `host_start` (its own step then: `vm_start`)."""

    vm: int  # index of the VM, in the order given
    host_start: int
    vm_start: int
    previous: str  # the VM that had the CPU before ("" for the first turn)
    reason: str  # why it left the CPU: quantum, exited, halted, crashed…


class HostTimeline:
    def __init__(
        self,
        guests: Sequence[tuple[GuestImage, str, str]],  # image, mode, name
        quantum: int,
        limit: int,
    ) -> None:
        self.quantum = quantum
        host_ram = max(len(guests), 1) * DEFAULT_RAM
        self.host = Host(host_ram, quantum, watch_reads=False)
        self.turns: list[Turn] = []
        self._starts: list[int] = []  # host_start of each turn, for bisection
        self._hosted = [
            self.host.create(image, mode, name=name, budget=limit) for image, mode, name in guests
        ]
        # A VM is its place in `guests`; its name is the host's, unique even for two VMs of
        # one guest in one mode (the labels asked for may be the same)
        self.names = [hosted.name for hosted in self._hosted]
        self._index = {name: i for i, name in enumerate(self.names)}
        self.host.events.subscribe(self._observe)

    @classmethod
    def of(cls, machines: Sequence[TimeMachine], quantum: int = HOST_QUANTUM) -> HostTimeline:
        """The host on which the time machines' VMs take turns (up to their limit)."""
        guests = [(machine.image, machine.mode, machine.name) for machine in machines]
        return cls(guests, quantum, machines[0].limit)

    def _observe(self, event: Event) -> None:
        if isinstance(event, WorldSwitch):
            vm = self._index[event.vm]
            self.turns.append(Turn(vm, event.host_step, event.step, event.previous, event.reason))
            self._starts.append(event.host_step)

    # ------------------------------------------------------------------ running the host
    @property
    def reached(self) -> int:
        """Host steps run so far."""
        return self.host.scheduler.host_step

    @property
    def finished(self) -> bool:
        """No VM can run any more: the timeline ends at `reached`."""
        return not any(hosted.runnable for hosted in self._hosted)

    def extend(self, host_step: int) -> None:
        """Run the host until it has run `host_step` steps (or no VM can run)."""
        while self.reached < host_step and not self.finished:
            self.host.run(min(CHUNK, host_step - self.reached))

    def clamp(self, host_step: int) -> int:
        self.extend(host_step + 1)  # knows who runs the step after it too
        return max(0, min(host_step, self.reached) if self.finished else host_step)

    # ------------------------------------------------------------------ reading it
    def turn_at(self, host_step: int) -> int | None:
        """Index of the turn during which host step `host_step` runs (the next instruction
        after it); None before the first."""
        self.extend(host_step + 1)
        index = bisect_right(self._starts, host_step) - 1
        return index if index >= 0 else None

    def running_at(self, host_step: int) -> int | None:
        """The VM that has the CPU at `host_step` (runs the next instruction after it)."""
        turn = self.turn_at(host_step)
        return None if turn is None else self.turns[turn].vm

    def _end_of(self, index: int) -> int:
        """Where turn `index` ends: the next one's start, or the host's last step."""
        return self._starts[index + 1] if index + 1 < len(self.turns) else self.reached

    def steps_at(self, host_step: int) -> list[int]:
        """Each VM's own step once the host has run `host_step` steps."""
        self.extend(host_step)
        steps = [0] * len(self.names)
        end = min(host_step, self.reached)
        for index, turn in enumerate(self.turns):
            if turn.host_start >= end:
                break
            steps[turn.vm] = turn.vm_start + min(self._end_of(index), end) - turn.host_start
        return steps

    def host_step_of(self, vm: int, step: int) -> int | None:
        """When VM `vm` first reaches its step `step` on the host (running the host until it
        does); None if it never does."""
        while True:
            for index, turn in enumerate(self.turns):
                length = self._end_of(index) - turn.host_start
                if turn.vm == vm and turn.vm_start <= step <= turn.vm_start + length:
                    return turn.host_start + step - turn.vm_start
            if self.finished:
                return None
            self.extend(self.reached + CHUNK)

    def switch_after(self, host_step: int) -> int | None:
        """The host step of the next world switch after `host_step` (None: no more)."""
        while True:
            index = bisect_right(self._starts, host_step)
            if index < len(self.turns):
                return self._starts[index]
            if self.finished:
                return None
            self.extend(self.reached + CHUNK)

    def switch_before(self, host_step: int) -> int | None:
        index = bisect_right(self._starts, host_step - 1) - 1
        return self._starts[index] if index > 0 else None

    def close(self) -> None:
        """Destroy the host's VMs (their RAM, their CPUs)."""
        for name in list(self.host.vms):
            self.host.destroy(name)
