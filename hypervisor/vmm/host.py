"""The host: one physical machine's RAM and CPU shared by many VMs (consolidation).

Every VM's RAM is a slice of one host RAM buffer (docs/unicorn-facts.md, fact 8), mapped at
guest-physical 0 in that VM's own unicorn instance; nothing else of host RAM is mapped
there, so no guest can name another VM's memory. The monitor's window (MONITOR_BASE) is
memory of each VM's own unicorn instance, not host RAM: it is not in the host map.
Lifecycle: `create` (state created) → `run` schedules every runnable VM (running) → a VM ends
exited (debug-exit), halted (HLT with interrupts off) or crashed (triple fault, fetch outside
RAM, unsupported instruction, monitor error — with its reason); `pause`/`resume` take a VM out
of the schedule and back; `destroy` frees its RAM for the next VM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypervisor.events import EventLog, VmStateChanged
from hypervisor.guest.image import GuestImage
from hypervisor.machine.hostram import HostRam
from hypervisor.vmm.contract import DEFAULT_RAM, VmState
from hypervisor.vmm.isolation import IsolationState
from hypervisor.vmm.scheduler import DEFAULT_QUANTUM, CpuAccount, RoundRobin
from hypervisor.vmm.vm import Vm

DEFAULT_HOST_RAM = 64 << 20
UNLIMITED = 1 << 62


class LifecycleError(ValueError):
    """An operation the VM's state does not allow (resume a running VM, pause a dead one…)."""


@dataclass
class HostedVm:
    """A VM as its host sees it: the VM, its CPU account, its isolation state."""

    vm: Vm
    isolation: IsolationState
    budget: int = UNLIMITED  # guest instructions it may run in all
    account: CpuAccount = field(default_factory=CpuAccount)
    held: bool = False  # paused by the host

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def state(self) -> VmState:
        if self.held:
            return VmState.PAUSED
        # An instruction no monitor can emulate stops only this VM: it crashed.
        return VmState.CRASHED if self.vm.state == VmState.UNSUPPORTED else self.vm.state

    @property
    def budget_left(self) -> int:
        return max(self.budget - self.vm.stats.total, 0)

    @property
    def runnable(self) -> bool:
        return self.live and self.budget_left > 0

    @property
    def live(self) -> bool:
        """Created or running: it can run (or be paused)."""
        return self.state in (VmState.CREATED, VmState.RUNNING)


@dataclass(frozen=True, slots=True)
class MapEntry:
    start: int
    end: int
    owner: str  # a VM's name, or "free"


class Host:
    def __init__(
        self,
        ram_size: int = DEFAULT_HOST_RAM,
        quantum: int = DEFAULT_QUANTUM,
        events: EventLog | None = None,
        watch_reads: bool = True,
    ) -> None:
        """`watch_reads`: report guest reads of monitor memory too (a read hook; it slows
        every load, binary translation's the most: bench_host.py shows how much)."""
        self.watch_reads = watch_reads
        self.ram = HostRam(ram_size)
        self.events = events or EventLog()
        self.scheduler = RoundRobin(self.events, quantum)
        self.vms: dict[str, HostedVm] = {}

    # ------------------------------------------------------------------ lifecycle
    def create(
        self,
        image: GuestImage,
        mode: str,
        *,
        ram_size: int = DEFAULT_RAM,
        name: str | None = None,
        budget: int = UNLIMITED,
    ) -> HostedVm:
        """A new VM with RAM from the host (OutOfHostMemory when no slice that big is free)."""
        name = self.unique(name or image.name)
        vm = Vm(image, mode, name=name, ram_size=ram_size, host=self.ram, events=self.events)
        return self.add(vm, budget)

    def add(self, vm: Vm, budget: int = UNLIMITED) -> HostedVm:
        """Take in a VM built on this host's RAM and events (`create`, or a VM resumed from
        a suspended one) under a name `unique` gave it."""
        if self.watch_reads:
            vm.machine.watch_monitor_reads()
        isolation = IsolationState.of(vm)
        self.events.subscribe(isolation.observe)
        hosted = HostedVm(vm, isolation, budget)
        self.vms[vm.name] = hosted
        return hosted

    def run(self, limit: int | None = None) -> None:
        """Run the runnable VMs round-robin until none is left (or `limit` guest
        instructions in all)."""
        self.scheduler.run(list(self.vms.values()), limit)

    def pause(self, name: str) -> None:
        hosted = self[name]
        if not hosted.live:
            raise LifecycleError(f"{name} is {hosted.state}: only a live VM can be paused")
        hosted.held = True
        self.events.emit(VmStateChanged(name, hosted.vm.step, VmState.PAUSED, "paused by the host"))

    def resume(self, name: str) -> None:
        hosted = self[name]
        if not hosted.held:
            raise LifecycleError(f"{name} is {hosted.state}, not paused")
        hosted.held = False
        self.events.emit(VmStateChanged(name, hosted.vm.step, hosted.state, "resumed"))

    def destroy(self, name: str) -> None:
        """Stop the VM for good and give its RAM back to the host."""
        hosted = self[name]
        del self.vms[name]
        self.events.unsubscribe(hosted.isolation.observe)
        hosted.vm.machine.release()
        if self.scheduler.current is hosted:
            self.scheduler.current = None
        self.events.emit(VmStateChanged(name, hosted.vm.step, VmState.DESTROYED))

    def __getitem__(self, name: str) -> HostedVm:
        try:
            return self.vms[name]
        except KeyError:
            raise LifecycleError(f"no VM named {name!r} on this host") from None

    def unique(self, name: str) -> str:
        """`name`, or `name-2`, `name-3`… if a VM of this host has it already."""
        candidate, n = name, 1
        while candidate in self.vms:
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    # ------------------------------------------------------------------ the host's view
    def memory_map(self) -> list[MapEntry]:
        """Host RAM from 0 to its end: each VM's slice, and the free gaps between."""
        entries, cursor = [], 0
        for piece in self.ram.slices:
            if piece.start > cursor:
                entries.append(MapEntry(cursor, piece.start, "free"))
            entries.append(MapEntry(piece.start, piece.end, piece.owner))
            cursor = piece.end
        if cursor < self.ram.size:
            entries.append(MapEntry(cursor, self.ram.size, "free"))
        return entries

    def cpu_share(self, name: str) -> float:
        """This VM's share of the guest instructions the host's CPU has run."""
        total = sum(h.account.instructions for h in self.vms.values())
        return self[name].account.instructions / total if total else 0.0
