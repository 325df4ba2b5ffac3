"""Watching a live cluster (its manager's `cluster` and `view` requests): what the cluster
view of the UI renders, as immutable values. The UI never talks to a host itself.

A followed VM is asked for wherever the manager says it runs: after a migration or a
takeover its console, screen and registers come from its new host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypervisor.encap.migration import MigrationFailed
from hypervisor.encap.wire import HostClient


@dataclass(frozen=True)
class HostRow:
    name: str
    address: str
    state: str  # up, maintenance, dead
    load: int  # VMs placed on it


@dataclass(frozen=True)
class VmRow:
    name: str
    host: str
    state: str
    mode: str
    step: int
    role: str  # its FT role: primary, took over, alone, or empty
    backup: str  # the host of its FT backup, if it has one


@dataclass(frozen=True)
class Migration:
    vm: str
    source: str
    target: str
    round: int  # the pre-copy round in progress
    pages: int  # pages the target holds so far
    ram_pages: int

    @property
    def fraction(self) -> float:
        return min(self.pages / self.ram_pages, 1.0) if self.ram_pages else 0.0


@dataclass(frozen=True)
class Followed:
    vm: str
    host: str
    step: int
    console: str
    screen: tuple[str, ...]
    registers: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class ClusterView:
    hosts: tuple[HostRow, ...]
    vms: tuple[VmRow, ...]
    migrations: tuple[Migration, ...]
    events: tuple[str, ...]
    followed: Followed | None = None
    problem: str = ""  # why the manager could not be asked (it keeps the last view)


def view_of(state: dict[str, Any], followed: Followed | None = None) -> ClusterView:
    return ClusterView(
        tuple(HostRow(h["name"], h["address"], h["state"], h["load"]) for h in state["hosts"]),
        tuple(
            VmRow(
                v["name"],
                v["host"],
                v.get("state", "?"),
                v.get("mode", "?"),
                v.get("step", 0),
                v.get("role", ""),
                v.get("backup", ""),
            )
            for v in state["vms"]
        ),
        tuple(
            Migration(m["vm"], m["source"], m["target"], m["round"], m["pages"], m["ram_pages"])
            for m in state["migrations"]
        ),
        tuple(state["events"]),
        followed,
    )


class ClusterWatch:
    """A connection to a cluster's manager, asked for a view at each `poll`."""

    def __init__(self, address: str, token: str) -> None:
        self.client = HostClient(address, token)

    def poll(self, follow: str | None) -> ClusterView:
        state, _ = self.client.call("cluster")
        followed = None
        if follow is not None:
            try:
                reply, console = self.client.call("view", vm=follow)
            except MigrationFailed:
                reply = None
            if reply is not None:
                followed = Followed(
                    follow,
                    reply["host"],
                    reply["step"],
                    console.decode("latin-1"),
                    tuple(reply["screen"]),
                    tuple(reply["registers"].items()),
                )
        return view_of(state, followed)

    def close(self) -> None:
        self.client.close()
