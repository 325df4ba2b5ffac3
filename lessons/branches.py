"""A lesson VM's runs when a lesson takes snapshots and reverts to them: the universal undo.

A time machine moves through one run, deterministic given its inputs. A revert is more: the
run after the snapshot is abandoned, inputs given after it included (the mistake the
snapshot undoes), and the VM goes on from the snapshot's state as if they never came. So a
revert starts a new time machine with only the inputs given before the snapshot and brings
it to the snapshot's step — which is the snapshot's state exactly (checked: the revert
compares the two, CPU and RAM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypervisor.encap.state import SuspendedVm, SuspendError, capture
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.inputs import Input


@dataclass(frozen=True)
class Taken:
    step: int
    given: int  # inputs given before it
    state: SuspendedVm


@dataclass
class Branches:
    """`tm` is the run followed now; `make` starts a run of the same VM with some inputs."""

    make: Callable[[tuple[Input, ...]], TimeMachine]
    tm: TimeMachine
    given: list[Input] = field(default_factory=list)
    snapshots: dict[str, Taken] = field(default_factory=dict)

    @classmethod
    def start(cls, make: Callable[[tuple[Input, ...]], TimeMachine]) -> Branches:
        return cls(make, make(()))

    def take(self, name: str) -> str:
        """A problem (one line) when there is nothing to snapshot: the VM has ended."""
        try:
            state = capture(self.tm.vm)
        except SuspendError as err:
            return str(err)
        self.snapshots[name] = Taken(self.tm.position, len(self.given), state)
        return ""

    def give(self, item: Input) -> str:
        """The input reaches the guest at the step the run is at; a problem (one line) when
        it cannot: inputs go in where the recording ends, not in the middle of it."""
        tm = self.tm
        if tm.position != tm.frontier:
            return f"an input goes in where the run is recorded to (step {tm.frontier:,})"
        timed = Input(item.device, item.text, tm.position)
        tm.inputs.add(timed)
        self.given.append(timed)
        return ""

    def revert(self, name: str) -> tuple[str, ...]:
        """Back to snapshot `name`; what differs from it, if anything (nothing should)."""
        taken = self.snapshots.get(name)
        if taken is None:
            return (f"no snapshot {name!r} was taken",)
        self.tm.close()
        self.given = self.given[: taken.given]
        self.tm = self.make(tuple(self.given))
        self.tm.seek(taken.step)
        now = capture(self.tm.vm)
        problems = []
        if now.cpu != taken.state.cpu:
            problems.append(f"the CPU is not the snapshot's {name!r}")
        if now.ram != taken.state.ram:
            problems.append(f"RAM is not the snapshot's {name!r}")
        return tuple(problems)

    def close(self) -> None:
        self.tm.close()
