"""Running guests and summarising runs: the one API the CLI, tests and the UI share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypervisor.guest.image import GuestImage, load_guest
from hypervisor.trace.events import Event, EventLog
from hypervisor.vmm.executors import available_modes
from hypervisor.vmm.vm import ExitInfo, Vm

DEFAULT_BUDGET = 20_000_000


@dataclass
class RunReport:
    """The outcome of one VM's run, in the shape of the CLI's JSON."""

    guest: str
    mode: str
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
        }


def run_guest(
    image: GuestImage | str,
    mode: str,
    *,
    max_insns: int = DEFAULT_BUDGET,
    trace: bool = False,
    keep_events: bool = False,
    unported: bool = False,
) -> RunReport:
    """Run one guest in one mode to its end (or the budget) and report. A sample named under
    pv runs its paravirtual build, unless `unported` asks for the unmodified one."""
    if isinstance(image, str):
        image = load_guest(image, paravirtual=mode == "pv" and not unported)
    log = EventLog()
    kept: list[Event] = []
    if keep_events:
        log.subscribe(kept.append)
    vm = Vm(image, mode, events=log)
    exit_info = vm.run(max_insns, trace=trace)
    stats = vm.stats
    return RunReport(
        guest=image.name,
        mode=mode,
        console=vm.console.decode("latin-1"),
        exit=exit_info,
        instructions=stats.instructions(vm.mode_class),
        traps=dict(sorted(stats.traps.items())),
        holes=dict(sorted(stats.holes.items())),
        traced=stats.traced,
        paravirtual=image.paravirtual,
        callouts=dict(sorted(stats.callouts.items())),
        hypercalls=dict(sorted(stats.hypercalls.items())),
        tcache=vm.executor.tcache_summary(),
        cycles=_cycles(vm),
        events=kept,
    )


def _cycles(vm: Vm) -> dict[str, Any]:
    count = vm.cycles()
    return {
        "virtual": round(count.virtual),
        "native_equivalent": round(count.native_equivalent),
        "overhead_pct": round(count.overhead_pct, 1),
        "profile": vm.cost_profile.name,
        "timeline": [[step, round(pct, 1)] for step, pct in vm.overhead_timeline],
    }


def compare(
    image: GuestImage | str, *, max_insns: int = DEFAULT_BUDGET, trace: bool = True
) -> list[RunReport]:
    """The same guest in every mode, native first (the reference); a sample named runs its
    paravirtual build under pv."""
    return [run_guest(image, mode, max_insns=max_insns, trace=trace) for mode in available_modes()]
