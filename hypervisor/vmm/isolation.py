"""Isolation state of one VM on a host: what it owns, and every attempt to reach past it.

A VM owns a slice of host RAM (seen by the guest as its RAM from 0), the devices on its own
I/O bus and their ports, and its virtual CPU. Everything else in its address space is either
open bus (reads all ones, writes dropped) or the monitor's window at MONITOR_BASE (writes
dropped by page protection, docs/unicorn-facts.md, fact 7). Each attempt is an `IsolationViolation`
event, reported where it happened (address, EIP, instruction); the access is contained and
the VM goes on. This module keeps them per VM and says what the VM owns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hypervisor.events import Event, IsolationViolation
from hypervisor.machine.descriptors import DESCRIPTOR_SIZE, SegmentDescriptor
from hypervisor.machine.machine import MONITOR_BASE
from hypervisor.platform.board import PortRange

UNANSWERED_KINDS = ("open_bus_read", "open_bus_write")  # memory nothing answered
PAGE = 4096  # open-bus memory is listed by page: a probe of a device window is one range
LISTED = 256  # isolation events kept one by one; past them only counted (a sweep makes millions)

if TYPE_CHECKING:
    from hypervisor.vmm.vcpu import VirtualCpu
    from hypervisor.vmm.vm import Vm


def descriptors_outside_ram(
    gdt: bytes, vcpu: VirtualCpu, ram_size: int, paging: bool = False
) -> list[tuple[int, str]]:
    """Descriptor tricks: tables, or segments of the guest's GDT, based outside its RAM.

    The monitor never follows them anywhere harmful (it reads guest tables through the same
    open-bus view the guest has), but a hostile kernel uses them to aim at the monitor's
    window or at memory it does not own, so each is reported as (address, what). With the
    guest's paging on, bases are linear (its page tables say where they lead, page by page):
    only a table reaching into the monitor's window is a trick then.
    """
    bound, where = (MONITOR_BASE, "the monitor's window") if paging else (ram_size, "RAM")
    found = []
    for name, (base, limit) in (("GDT", vcpu.gdtr), ("IDT", vcpu.idtr)):
        if base + limit >= bound:
            found.append((base, f"{name} at {base:#010x} (limit {limit:#x}) reaches past {where}"))
    for offset in range(DESCRIPTOR_SIZE, len(gdt) - DESCRIPTOR_SIZE + 1, DESCRIPTOR_SIZE):
        descriptor = SegmentDescriptor.unpack(gdt[offset : offset + DESCRIPTOR_SIZE])
        if descriptor.present and descriptor.is_code_or_data and descriptor.base >= bound:
            found.append(
                (
                    descriptor.base,
                    f"GDT entry {offset:#x}: segment based at {descriptor.base:#010x}",
                )
            )
    return found


@dataclass
class IsolationState:
    """What one VM owns on its host, and the isolation events it caused."""

    vm: str
    ram_start: int  # host-physical range of its RAM
    ram_end: int
    ports: tuple[PortRange, ...]
    first: list[IsolationViolation] = field(default_factory=list)  # the first LISTED
    counts: Counter[str] = field(default_factory=Counter)  # every event, by kind
    # what the guest touched that nothing answered: absent hardware it probed (or a bug)
    unanswered_ports: set[int] = field(default_factory=set)
    unanswered_pages: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, vm: Vm) -> IsolationState:
        ram = vm.machine.ram
        return cls(vm.name, ram.start, ram.end, owned_ports(vm))

    def observe(self, event: Event) -> None:
        """An event listener: keep this VM's isolation events."""
        if isinstance(event, IsolationViolation) and event.vm == self.vm:
            self.counts[event.kind] += 1
            if len(self.first) < LISTED:
                self.first.append(event)
            if event.kind == "foreign_port":
                self.unanswered_ports.add(event.address)
            elif event.kind in UNANSWERED_KINDS:
                self.unanswered_pages.add(event.address & ~(PAGE - 1))

    def summary(self) -> dict[str, Any]:
        """For the JSON: the total, the count of each kind, and the first events themselves
        (where the guest was and what it ran)."""
        return {
            "events": self.counts.total(),
            "by_kind": dict(sorted(self.counts.items())),
            "unanswered": {
                "ports": sorted(self.unanswered_ports),
                "mmio": [list(r) for r in _ranges(self.unanswered_pages)],
            },
            "listed": [
                {
                    "step": e.step,
                    "kind": e.kind,
                    "address": e.address,
                    "eip": e.eip,
                    "instruction": e.text,
                    "detail": e.detail,
                }
                for e in self.first
            ],
        }


def _ranges(pages: set[int]) -> list[tuple[int, int]]:
    """Adjacent pages merged: (first address, last address) of each run."""
    runs: list[tuple[int, int]] = []
    for page in sorted(pages):
        if runs and runs[-1][1] + 1 == page:
            runs[-1] = (runs[-1][0], page + PAGE - 1)
        else:
            runs.append((page, page + PAGE - 1))
    return runs


def unanswered_line(summary: dict[str, Any]) -> str | None:
    """One line for the run summary: the ports and memory ranges nothing answered."""
    ports, mmio = summary["unanswered"]["ports"], summary["unanswered"]["mmio"]
    if not ports and not mmio:
        return None
    parts = [f"ports {', '.join(f'{p:#x}' for p in ports)}"] if ports else []
    parts += [f"memory {', '.join(f'{a:#010x}-{b:#010x}' for a, b in mmio)}"] if mmio else []
    return "   nothing answered (open bus): " + "; ".join(parts)


def owned_ports(vm: Vm) -> tuple[PortRange, ...]:
    return tuple(PortRange(d.name, min(d.ports), max(d.ports)) for d in vm.devices)


def vcpu_view(vm: Vm) -> dict[str, Any]:
    """The VM's CPU as its guest believes it to be (the virtual CPU under a monitor)."""
    executor = vm.executor
    return {
        **executor.virtual_state().as_dict(),
        "cpl": executor.guest_cpl(),
        "if": executor.guest_interrupts_enabled(),
        "waiting_for_interrupt": executor.waiting_for_interrupt,
    }
