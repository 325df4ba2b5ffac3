"""Snapshots: named states of one VM, in a tree — the universal undo.

Taking a snapshot suspends a copy of the VM (`capture`) and leaves the VM running; reverting
builds a fresh VM from one (`restore`), exact to the instruction. The tree records where each
snapshot was taken from: the VM's *current* snapshot (the last taken or reverted to) is the
parent of the next one, so reverting to an earlier snapshot and going on grows a branch, as
in VMware's snapshot manager. Deleting a snapshot hands its children to its parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypervisor.encap.state import SuspendedVm, capture, restore
from hypervisor.events import EventLog
from hypervisor.machine.hostram import RamPool
from hypervisor.vmm.vm import Vm

MAX_NAME = 64


class SnapshotError(ValueError):
    """An operation on the tree that cannot be done (unknown name, name taken…)."""


@dataclass(frozen=True)
class Snapshot:
    name: str
    parent: str | None
    state: SuspendedVm

    @property
    def step(self) -> int:
        return self.state.step


@dataclass(frozen=True)
class TreeRow:
    """One line of the tree as shown: depth, the snapshot, whether the VM is now on it."""

    depth: int
    snapshot: Snapshot
    current: bool


@dataclass
class SnapshotTree:
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    current: str | None = None  # the snapshot the VM's present state descends from

    def take(self, vm: Vm, name: str) -> Snapshot:
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise SnapshotError(f"a snapshot's name is 1 to {MAX_NAME} printable characters")
        if name in self.snapshots:
            raise SnapshotError(f"there is a snapshot named {name!r} already")
        snapshot = Snapshot(name, self.current, capture(vm))
        self.snapshots[name] = snapshot
        self.current = name
        return snapshot

    def revert(
        self,
        name: str,
        mode: str | None = None,
        *,
        host: RamPool | None = None,
        events: EventLog | None = None,
    ) -> Vm:
        """A VM in the snapshot's state (the caller puts it in place of the old one)."""
        snapshot = self[name]
        vm = restore(snapshot.state, mode, host=host, events=events)
        self.current = name
        return vm

    def delete(self, name: str) -> None:
        snapshot = self[name]
        del self.snapshots[name]
        for child in self.children(name):
            self.snapshots[child.name] = Snapshot(child.name, snapshot.parent, child.state)
        if self.current == name:
            self.current = snapshot.parent

    def children(self, name: str | None) -> list[Snapshot]:
        """The snapshots taken from `name` (None: the roots), oldest first."""
        found = [s for s in self.snapshots.values() if s.parent == name]
        return sorted(found, key=lambda s: s.step)

    def rows(self) -> list[TreeRow]:
        """The tree depth first, for listing."""
        rows: list[TreeRow] = []

        def walk(parent: str | None, depth: int) -> None:
            for child in self.children(parent):
                rows.append(TreeRow(depth, child, child.name == self.current))
                walk(child.name, depth + 1)

        walk(None, 0)
        return rows

    def __getitem__(self, name: str) -> Snapshot:
        try:
            return self.snapshots[name]
        except KeyError:
            known = ", ".join(self.snapshots) or "none"
            raise SnapshotError(f"no snapshot named {name!r} (snapshots: {known})") from None

    def __len__(self) -> int:
        return len(self.snapshots)
