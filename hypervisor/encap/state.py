"""A suspended VM: everything its guest can observe, as plain values — and nothing else.

Encapsulation is the monitor's to give: the whole state of a VM is the guest's CPU (as the
guest sees it, `GuestCpu`), its RAM, its devices (pending interrupts and running timers
included) and the image it was booted from. That is what `capture` takes and `restore` puts
into a fresh VM, in the same mode or another one. What the monitor derived from the guest —
shadow descriptor tables, the translation cache, write-protected code pages, the vCPU area —
is not in it: the monitor of the resumed VM rebuilds it, the way it built it the first time.
The run's counts (the step, the instruction classes, traps) go along, so the resumed VM's step
is the suspended one's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from hypervisor.events import EventLog
from hypervisor.guest.image import GuestImage
from hypervisor.machine.hostram import PAGE, RamPool
from hypervisor.vmm.guestcpu import GuestCpu, ResumeRefused
from hypervisor.vmm.vm import RunStats, Vm

Plain = int | bool | None
PIC_FIELDS = (
    "vector_base",
    "imr",
    "irr",
    "isr",
    "init_step",
    "single",
    "icw4_needed",
    "icw3",
    "auto_eoi",
    "read_isr",
    "poll",
)
PIT_FIELDS = (
    "mode",
    "access",
    "bcd",
    "reload",
    "counting",
    "start",
    "stopped_count",
    "stopped_out",
    "null_count",
    "low_byte",
    "read_high",
    "latched_count",
    "latched_status",
)
UART_FIELDS = ("ier", "lcr", "mcr", "scr", "fcr", "divisor")
LAPIC_FIELDS = (
    *("base", "apic_id", "tpr", "ldr", "dfr", "svr", "irr", "isr", "tmr"),
    *("esr", "errors", "icr", "lvt"),
)
APIC_TIMER_FIELDS = ("ticks", "start", "initial", "divide_config", "periodic")
IOAPIC_FIELDS = ("ioapic_id", "select", "table")
COUNTERS = ("by_class", "traps", "callouts", "hypercalls", "holes")


class SuspendError(ValueError):
    """The VM cannot be suspended now (it has ended; it is between two guest instructions)."""


@dataclass(frozen=True)
class DeviceState:
    """The devices' registers: each PIC chip's, each PIT channel's (with the PIT's clock),
    the UART's. Pending interrupts are the PICs' request bits; timers are counts loaded at
    a tick of the PIT's clock."""

    pic: tuple[dict[str, Plain], dict[str, Plain]]
    pit_ticks: int
    pit: tuple[dict[str, Plain], ...]
    uart: dict[str, Plain]
    platform_index: int  # how far the guest has read its identity
    # the local APIC (its timer under "timer") and the I/O APIC; None in a file written
    # before vmlab had them: the APICs as the firmware leaves them
    lapic: dict[str, Any] | None = None
    ioapic: dict[str, Any] | None = None

    @classmethod
    def of(cls, vm: Vm) -> DeviceState:
        pic, pit = vm.pic, vm.pit
        return cls(
            pic=(_take(pic.master, PIC_FIELDS), _take(pic.slave, PIC_FIELDS)),
            pit_ticks=pit.ticks,
            pit=tuple(_take(channel, PIT_FIELDS) for channel in pit.channels),
            uart=_take(vm.uart, UART_FIELDS),
            platform_index=vm.platform.index,
            lapic={
                **_take(vm.lapic, LAPIC_FIELDS),
                "lvt": list(vm.lapic.lvt),
                "timer": _take(vm.lapic.timer, APIC_TIMER_FIELDS),
            },
            ioapic={**_take(vm.ioapic, IOAPIC_FIELDS), "table": list(vm.ioapic.table)},
        )

    def apply(self, vm: Vm) -> None:
        pic, pit = vm.pic, vm.pit
        _put(pic.master, self.pic[0])
        _put(pic.slave, self.pic[1])
        pit.ticks = self.pit_ticks
        for channel, values in zip(pit.channels, self.pit, strict=True):
            _put(channel, values)
        _put(vm.uart, self.uart)
        vm.platform.index = self.platform_index
        if self.lapic is not None:
            registers = {k: v for k, v in self.lapic.items() if k != "timer"}
            _put(vm.lapic, {**registers, "lvt": list(registers["lvt"])})
            _put(vm.lapic.timer, self.lapic["timer"])
        if self.ioapic is not None:
            _put(vm.ioapic, {**self.ioapic, "table": list(self.ioapic["table"])})


@dataclass(frozen=True)
class RunHistory:
    """What the run counted before it was suspended: carried on by the resumed VM."""

    step: int
    ticks: int  # instructions the physical CPU retired (more than `step` under bt)
    counters: dict[str, dict[str, int]]  # RunStats' Counters by name (COUNTERS)
    traced: bool
    timeline: tuple[tuple[int, float], ...]  # the overhead timeline

    def stats(self) -> RunStats:
        stats = RunStats(total=self.step, traced=self.traced)
        for name in COUNTERS:
            getattr(stats, name).update(self.counters.get(name, {}))
        return stats


@dataclass(frozen=True)
class SuspendedVm:
    """A whole VM between two guest instructions, mode-independent."""

    name: str
    image: GuestImage
    mode: str  # the mode it ran in (a resume may choose another)
    ram_size: int
    cpu: GuestCpu
    devices: DeviceState
    history: RunHistory
    console: bytes
    pending_line: bytes  # console output after the last newline
    ram: bytes  # empty: not included (a migration sends the RAM apart)

    @property
    def step(self) -> int:
        return self.history.step


def capture(vm: Vm, with_ram: bool = True) -> SuspendedVm:
    """Suspend `vm` where it stands (between two runs); without its RAM for a migration,
    which has copied that already."""
    if vm.exit is not None and vm.exit.final:
        raise SuspendError(f"{vm.name} has ended ({vm.exit.reason}): nothing left to resume")
    try:
        cpu = vm.executor.guest_cpu()
    except ResumeRefused as why:
        raise SuspendError(f"{vm.name}: {why}") from None
    stats = vm.stats
    history = RunHistory(
        step=stats.total,
        ticks=vm.ticks,
        counters={name: dict(getattr(stats, name)) for name in COUNTERS},
        traced=stats.traced,
        timeline=tuple(vm.overhead_timeline),
    )
    return SuspendedVm(
        name=vm.name,
        image=vm.image,
        mode=vm.mode,
        ram_size=vm.machine.ram_size,
        cpu=cpu,
        devices=DeviceState.of(vm),
        history=history,
        console=bytes(vm.console),
        pending_line=vm.pending_line,
        ram=vm.machine.read(0, vm.machine.ram_size) if with_ram else b"",
    )


def restore(
    suspended: SuspendedVm,
    mode: str | None = None,
    *,
    name: str | None = None,
    host: RamPool | None = None,
    events: EventLog | None = None,
    identity: str | None = None,
) -> Vm:
    """A new VM in `mode` (the suspended one's by default) that goes on where `suspended`
    stopped. ResumeRefused (with the reason) when that mode cannot run this guest state.
    `host` may already hold the suspended RAM (a clone's copy-on-write mapping): only the
    pages that differ are written, so the others stay shared."""
    if len(suspended.ram) != suspended.ram_size:
        raise ResumeRefused("the suspended state holds no RAM to resume from")
    vm = prepare(suspended, mode, name=name, host=host, events=events, identity=identity)
    apply(vm, suspended)
    return vm


def prepare(
    suspended: SuspendedVm,
    mode: str | None = None,
    *,
    name: str | None = None,
    host: RamPool | None = None,
    events: EventLog | None = None,
    identity: str | None = None,
) -> Vm:
    """The fresh VM `restore` puts the state into: built ahead by a migration's destination,
    so that the VM's stop lasts only as long as `apply`."""
    vm = Vm(
        suspended.image,
        mode or suspended.mode,
        name=name or suspended.name,
        ram_size=suspended.ram_size,
        host=host,
        events=events,
        identity=identity,
    )
    if vm.exit is not None:  # e.g. a paravirtualized kernel outside pv
        vm.machine.release()
        raise ResumeRefused(vm.exit.detail)
    return vm


def apply(vm: Vm, suspended: SuspendedVm) -> None:
    """Put the suspended state into `vm`, a VM `prepare` made and nothing has run (with no
    RAM in the state, the VM's RAM is left as the caller filled it)."""
    try:
        if suspended.ram:
            _write_changed_pages(vm, suspended.ram)
        suspended.devices.apply(vm)
        h = suspended.history
        vm.carry_on(h.stats(), h.ticks, list(h.timeline), suspended.console, suspended.pending_line)
        vm.executor.load_guest_cpu(suspended.cpu)
    except ResumeRefused:
        vm.machine.release()
        raise


def _write_changed_pages(vm: Vm, ram: bytes) -> None:
    machine = vm.machine
    for offset in range(0, len(ram), PAGE):
        page = ram[offset : offset + PAGE]
        if machine.read(offset, PAGE) != page:
            machine.write(offset, page)


def _take(obj: Any, names: tuple[str, ...]) -> dict[str, Plain]:
    return {name: getattr(obj, name) for name in names}


def _put(obj: Any, values: dict[str, Any]) -> None:
    known = {f.name for f in fields(obj)}
    for name, value in values.items():
        assert name in known, f"{type(obj).__name__} has no field {name}"
        setattr(obj, name, value)
