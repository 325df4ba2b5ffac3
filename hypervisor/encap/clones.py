"""Clones: N VMs started from one suspended VM, each with its own identity, their RAM one
copy-on-write copy in host memory until they write it (cowram.py).

This is how a monitor provisions services quickly: boot once, suspend, clone. Every clone
resumes where the suspended VM stopped, with its own name on the platform identity port
(the only thing the guest can tell them apart by), and its own CPU, devices and console.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypervisor.encap.state import SuspendedVm, restore
from hypervisor.events import EventLog
from hypervisor.machine.cowram import CloneRam, SharedRam
from hypervisor.machine.hostram import PAGE
from hypervisor.vmm.vm import Vm

MAX_CLONES = 256


@dataclass(frozen=True)
class CloneMemory:
    """One clone's RAM as the host holds it."""

    name: str
    private_pages: int  # pages it wrote: its own copies
    shared_pages: int  # pages still the template's


@dataclass(frozen=True)
class MemoryReport:
    clones: tuple[CloneMemory, ...]
    ram_size: int  # each clone's RAM

    @property
    def host_bytes(self) -> int:
        """What the clones take in host memory: one template, plus their private pages."""
        return self.ram_size + PAGE * sum(c.private_pages for c in self.clones)

    @property
    def saved_bytes(self) -> int:
        """Against N full copies."""
        return self.ram_size * len(self.clones) - self.host_bytes


@dataclass
class Clones:
    shared: SharedRam
    vms: list[Vm] = field(default_factory=list)
    rams: list[CloneRam] = field(default_factory=list)

    def memory(self) -> MemoryReport:
        rows = []
        for vm, ram in zip(self.vms, self.rams, strict=True):
            private = len(ram.private_pages())
            rows.append(CloneMemory(vm.name, private, ram.size // PAGE - private))
        return MemoryReport(tuple(rows), self.shared.size)

    def close(self) -> None:
        """Release every clone's RAM, then the template."""
        for vm in self.vms:
            vm.machine.release()
        self.vms.clear()
        self.rams.clear()
        self.shared.close()


def clone(
    suspended: SuspendedVm,
    count: int,
    *,
    mode: str | None = None,
    prefix: str | None = None,
    events: EventLog | None = None,
) -> Clones:
    """`count` VMs resumed from `suspended`, named PREFIX-1 … PREFIX-N (the suspended VM's
    name by default) — names the guests read on their platform identity port."""
    if not 1 <= count <= MAX_CLONES:
        raise ValueError(f"from 1 to {MAX_CLONES} clones, not {count}")
    prefix = prefix or suspended.name
    clones = Clones(SharedRam(suspended.ram, prefix))
    try:
        for number in range(1, count + 1):
            name = f"{prefix}-{number}"
            ram = clones.shared.clone(name)
            vm = restore(suspended, mode, name=name, host=ram, events=events, identity=name)
            clones.rams.append(ram)
            clones.vms.append(vm)
    except BaseException:
        clones.close()
        raise
    return clones
