"""Running guests and summarising runs: the one API the CLI, tests and the UI share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hypervisor.events import Event, EventLog, Listener
from hypervisor.guest.image import PV_SUFFIX, GuestImage, load_for_mode
from hypervisor.machine.hostram import OutOfHostMemory
from hypervisor.platform.board import MAX_RAM
from hypervisor.trace.recording import Recording
from hypervisor.vmm.contract import DEFAULT_RAM, ExitInfo, Mode, VmState
from hypervisor.vmm.host import DEFAULT_HOST_RAM, Host, HostedVm, MapEntry
from hypervisor.vmm.inputs import Input, InputScript
from hypervisor.vmm.isolation import IsolationState, vcpu_view
from hypervisor.vmm.scheduler import DEFAULT_QUANTUM, CpuAccount
from hypervisor.vmm.vm import Vm

DEFAULT_BUDGET = 20_000_000
MAX_HOST_RAM = MAX_RAM  # a host for one run grows to hold its VMs, up to this


@dataclass
class RunReport:
    """The outcome of one VM's run, in the shape of the CLI's JSON."""

    guest: str
    mode: Mode
    console: str
    exit: ExitInfo
    instructions: dict[str, int]
    traps: dict[str, int]
    holes: dict[str, int]
    traced: bool
    paravirtual: bool = False  # the guest is a ported (-DPARAVIRT) kernel
    callouts: dict[str, int] = field(default_factory=dict)
    hypercalls: dict[str, int] = field(default_factory=dict)
    tcache: dict[str, int] | None = None
    cycles: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list, repr=False)
    isolation: dict[str, Any] = field(default_factory=dict)  # IsolationState.summary()
    hosted: HostedReport | None = None  # on a host of several VMs
    recording: Recording | None = field(default=None, repr=False)  # a traced run's instructions
    screen: list[str] = field(default_factory=list)  # the VGA text screen's 25 lines at the end

    def as_json(self) -> dict[str, Any]:
        return {
            "guest": self.guest,
            "mode": self.mode,
            "console": self.console,
            "exit": {
                "reason": self.exit.reason,
                "status": self.exit.status,
                "detail": self.exit.detail,
            },
            "instructions": self.instructions,
            "traps": self.traps,
            "holes": self.holes,
            "callouts": self.callouts,
            "hypercalls": self.hypercalls,
            **({"tcache": self.tcache} if self.tcache is not None else {}),
            "cycles": self.cycles,
            "traced": self.traced,
            "paravirtual": self.paravirtual,
            "isolation": self.isolation,
            "screen": self.screen,
            **(self.hosted.as_json() if self.hosted else {}),
        }


@dataclass(frozen=True)
class HostedReport:
    """One VM as its host saw it: its state there, its use of the CPU, its isolation."""

    name: str
    state: VmState
    cpu: CpuAccount
    share: float  # of the guest instructions the host ran
    cycles_share: float  # of the virtual cycles
    isolation: IsolationState
    vcpu: dict[str, Any]  # the CPU as the guest believes it to be

    def as_json(self) -> dict[str, Any]:
        isolation, cpu = self.isolation, self.cpu
        return {
            "name": self.name,
            "state": self.state,
            "cpu": {
                "instructions": cpu.instructions,
                "quanta": cpu.quanta,
                "preempted": cpu.preempted,
                "share": self.share,
                "cycles_share": self.cycles_share,
            },
            "isolation": {
                **isolation.summary(),
                "ram": {"start": isolation.ram_start, "end": isolation.ram_end},
                "ports": [
                    {"device": p.device, "first": p.first, "last": p.last} for p in isolation.ports
                ],
                "vcpu": self.vcpu,
            },
        }


def run_guest(
    image: GuestImage | str,
    mode: Mode | str,
    *,
    max_insns: int = DEFAULT_BUDGET,
    trace: bool = False,
    keep_events: bool = False,
    unported: bool = False,
    inputs: tuple[Input, ...] = (),
    ram_size: int = DEFAULT_RAM,
    on_event: Listener | None = None,
) -> RunReport:
    """Run one guest in one mode to its end (or the budget) and report. A sample named under
    pv runs its paravirtual build, unless `unported` asks for the unmodified one. `inputs`
    are typed or sent to COM1 (at their step, or when the guest waits).

    `keep_events` keeps the events in the report, and a traced run's instructions in the
    columns of a `Recording` (`report.recording`): millions of instructions as objects would
    take gigabytes. `on_event` sees every event as it happens (instructions too, as events,
    unless they are kept)."""
    mode = Mode.parse(mode)
    if isinstance(image, str):
        image = load_for_mode(image, mode, unported=unported)
    log = EventLog()
    kept: list[Event] = []
    recording = None
    if keep_events:
        log.subscribe(kept.append)
        if trace:
            recording = Recording(image.name, mode, image.sha256, ram_size)
            log.instructions = recording.sink()
    if on_event is not None:
        log.subscribe(on_event)
    vm = Vm(image, mode, events=log, ram_size=ram_size, inputs=InputScript(inputs))
    isolation = IsolationState.of(vm)
    log.subscribe(isolation.observe)
    vm.run(max_insns, trace=trace)
    report = _report(vm, kept, isolation)
    report.recording = recording
    return report


def report_of(vm: Vm, isolation: IsolationState | None = None) -> RunReport:
    """The report of a VM that has stopped, however it was run (resumed, cloned…), with
    the isolation events `isolation` observed (none, if not given)."""
    return _report(vm, [], isolation or IsolationState.of(vm))


def _report(vm: Vm, events: list[Event], isolation: IsolationState) -> RunReport:
    stats = vm.stats
    assert vm.exit is not None, "a report is made of a VM that has stopped"
    return RunReport(
        guest=vm.image.name,
        mode=vm.mode,
        console=vm.console.decode("latin-1"),
        exit=vm.exit,
        instructions=stats.instructions(vm.mode_class),
        traps=dict(sorted(stats.traps.items())),
        holes=dict(sorted(stats.holes.items())),
        traced=stats.traced,
        paravirtual=vm.image.paravirtual,
        callouts=dict(sorted(stats.callouts.items())),
        hypercalls=dict(sorted(stats.hypercalls.items())),
        tcache=None if (tc := vm.executor.introspect()) is None else tc.counters(),
        cycles=_cycles(vm),
        events=events,
        isolation=isolation.summary(),
        screen=vm.screen().lines(),
    )


def _cycles(vm: Vm) -> dict[str, Any]:
    count = vm.cycles()
    return {
        "virtual": round(count.virtual),
        "native_equivalent": round(count.native_equivalent),
        "overhead_pct": round(count.overhead_pct, 1),
        "mmu_share_pct": round(count.mmu_share_pct, 1),
        "profile": vm.cost_profile.name,
        "timeline": [[step, round(pct, 1)] for step, pct in vm.overhead_timeline],
    }


def compare(
    image: GuestImage | str,
    *,
    max_insns: int = DEFAULT_BUDGET,
    trace: bool = True,
    ram_size: int = DEFAULT_RAM,
) -> list[RunReport]:
    """The same guest in every mode, native first (the reference); a sample named runs its
    paravirtual build under pv."""
    return [
        run_guest(image, mode, max_insns=max_insns, trace=trace, ram_size=ram_size)
        for mode in list(Mode)
    ]


@dataclass
class HostReport:
    """Several VMs run on one host: each VM's report (in the order given), and the host's."""

    vms: list[RunReport]
    ram: int
    map: list[MapEntry]
    world_switches: int
    quantum: int

    def as_json(self) -> dict[str, Any]:
        return {
            "vms": [r.as_json() for r in self.vms],
            "host": {
                "ram": self.ram,
                "quantum": self.quantum,
                "map": [{"start": e.start, "end": e.end, "owner": e.owner} for e in self.map],
                "world_switches": self.world_switches,
            },
        }


def run_host(
    guests: Sequence[tuple[GuestImage | str, Mode | str]],
    *,
    max_insns: int = DEFAULT_BUDGET,
    quantum: int = DEFAULT_QUANTUM,
    host: Host | None = None,
    keep_events: bool = False,
    unported: bool = False,
    ram_size: int = DEFAULT_RAM,
) -> HostReport:
    """Run (guest, mode) pairs as VMs of one host, round-robin, each to its end or its own
    budget of `max_insns`, each with `ram_size` of RAM (the host's grows to hold them all);
    a sample under pv runs its paravirtual build, unless `unported`. Pass a `host` to
    watch it (its events) while it runs."""
    if host is None:
        needed = len(guests) * ram_size
        if needed > MAX_HOST_RAM:
            raise OutOfHostMemory(
                f"{len(guests)} VMs of {ram_size >> 20} MiB need {needed >> 20} MiB of host RAM "
                f"(at most {MAX_HOST_RAM >> 20} MiB)"
            )
        host = Host(max(DEFAULT_HOST_RAM, needed), quantum)
    kept: list[Event] = []
    if keep_events:
        host.events.subscribe(kept.append)
    hosted = []
    for image, name_of_mode in guests:
        mode = Mode.parse(name_of_mode)
        if isinstance(image, str):
            image = load_for_mode(image, mode, unported=unported)
        name = image.name.removesuffix(PV_SUFFIX)  # the guest's name, whichever its build
        hosted.append(host.create(image, mode, name=name, budget=max_insns, ram_size=ram_size))
    host.run()
    total_cycles = sum(h.vm.cycles().virtual for h in hosted) or 1.0
    reports = []
    for h in hosted:
        report = _report(h.vm, [e for e in kept if e.vm == h.name], h.isolation)
        report.hosted = _hosted(host, h, total_cycles)
        reports.append(report)
    scheduler = host.scheduler
    return HostReport(
        reports, host.ram.size, host.memory_map(), scheduler.world_switches, scheduler.quantum
    )


def _hosted(host: Host, hosted: HostedVm, total_cycles: float) -> HostedReport:
    return HostedReport(
        hosted.name,
        hosted.state,
        replace(hosted.account),
        round(host.cpu_share(hosted.name), 4),
        round(hosted.vm.cycles().virtual / total_cycles, 4),
        hosted.isolation,
        vcpu_view(hosted.vm),
    )
