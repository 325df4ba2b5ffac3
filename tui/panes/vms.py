"""The VMs of the session: state, mode, step, and where each one's RAM really is in host
memory — disjoint slices of one buffer, which is what isolation rests on."""

from __future__ import annotations

import textwrap

from textual.content import Content

from hypervisor.devices.intc import InterruptsView
from tui.model import Snapshot, VmView
from tui.panes.base import Pane, lines
from tui.panes.style import MUTED

SLICE_STYLES = ("$text-primary", "$text-accent", "$text-secondary", "$text-success")
MIB = 1 << 20
MISALIGNED = "⚠ the engine's trace and its step count disagree here: tags may be off"


class VmsPane(Pane):
    TITLE = "VMs & isolation"

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self._lines = 0

    def show(self, snapshot: Snapshot) -> None:
        super().show(snapshot)
        width = self.content_size.width
        rows = sum(len(_vm(view, 0, False, width)) for view in snapshot.vms)
        rows += snapshot.host is not None
        irqs = snapshot.vm.interrupts
        if irqs is not None and irqs.in_use:
            rows += len(_interrupts(irqs, snapshot.vm.registers.guest.interrupts, width))
        if rows != self._lines:  # its height follows its content: lay the screen out again
            self._lines = rows
            self.refresh(layout=True)

    def part(self, snapshot: Snapshot) -> object:
        return snapshot.vms, snapshot.focus, snapshot.host_size, snapshot.host

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        rows: list[Content] = []
        host = snapshot.host
        if host is not None:
            rows.append(
                Content.assemble(
                    ("host clock", "bold $text-accent"),
                    f"  step {host.step:,} · quantum {host.quantum:,} · "
                    f"{host.switches:,} world switch{'' if host.switches == 1 else 'es'}",
                )
            )
        for index, view in enumerate(snapshot.vms):
            on_cpu = host is not None and host.running == index
            rows += _vm(view, index, index == snapshot.focus, width, on_cpu)
        rows.append(Content.styled(f"host RAM ({snapshot.host_size // MIB} MiB):", MUTED))
        rows.append(_host_bar(snapshot, width))
        irqs = snapshot.vm.interrupts
        if irqs is not None and irqs.in_use:  # the focused VM's, last: the first rows to go
            rows += _interrupts(irqs, snapshot.vm.registers.guest.interrupts, width)
        return lines(rows, width)


def _vm(view: VmView, index: int, focused: bool, width: int, on_cpu: bool = False) -> list[Content]:
    style = SLICE_STYLES[index % len(SLICE_STYLES)]
    end = f"{view.end:,}" if view.end is not None else "?"
    state = view.state + (" (replay)" if view.replay else "")
    start, size = view.ram
    isolation = f"{view.isolation:,} isolation events" if view.isolation else "no isolation events"
    rows = [
        Content.assemble(
            ("▶ " if focused else "  ", "bold"),
            (view.name, f"bold {style}"),
            f"  {state}  step {view.step:,} / {end}",
            ("  ● on the CPU" if on_cpu else "", "bold $text-success"),
        ),
    ]
    ram = f"RAM at host {start:#010x}–{start + size - 1:#010x} ({size // MIB} MiB)"
    parts: tuple[str, ...] = (ram, isolation)
    paging = view.paging
    if paging is not None and paging.pool_used:  # shadow page tables: the monitor's memory
        parts += (f"shadow page tables {paging.shadow_bytes // 1024} KiB (monitor memory)",)
    rows += [Content.styled(line, MUTED) for line in _wrap(parts, width)]
    if view.exit_detail:
        rows += _said(view.exit_detail, width, MUTED)
    if not view.aligned:
        rows += _said(MISALIGNED, width, "$text-warning")
    for depth, name, step, current in view.snapshots:  # the snapshot tree, the VM's on ●
        mark = "●" if current else "○"
        rows.append(Content.styled(f"    {'  ' * depth}{mark} {name}  step {step:,}", MUTED))
    return rows


def _interrupts(irqs: InterruptsView, interrupts_on: bool, width: int) -> list[Content]:
    """The interrupt controllers, and why the next interrupt is (or is not) delivered."""
    lapic = irqs.lapic
    wire = "passes to the CPU" if lapic.pic_passes else "cut off (the local APIC is on)"
    pic = (f"8259 IRR {irqs.pic_irr:04x} ISR {irqs.pic_isr:04x} IMR {irqs.pic_imr:04x}", wire)
    timer = f"timer {lapic.timer_mode} → {lapic.timer_vector:#04x}"
    if lapic.initial_count:
        timer += f", {lapic.current_count:,} of {lapic.initial_count:,}"
    local = (
        "local APIC " + ("on" if lapic.enabled else "off"),
        f"TPR {lapic.tpr:02x} PPR {lapic.ppr:02x}",
        f"IRR {_vectors(lapic.irr)} ISR {_vectors(lapic.isr)}",
        timer,
    )
    routes = tuple(
        f"pin {r.pin} → {r.vector:#04x} {'level' if r.level else 'edge'}"
        + (" (remote IRR)" if r.remote_irr else "")
        for r in irqs.routes
    )
    io = ("I/O APIC", *routes) if routes else ("I/O APIC: every pin masked",)
    parts = (pic, local, io)
    rows = [Content.styled(line, MUTED) for part in parts for line in _wrap(part, width, "  ")]
    why = _why(irqs, interrupts_on)
    if why:
        rows.append(Content.styled("  " + why, "$text-accent"))
    return rows


def _why(irqs: InterruptsView, interrupts_on: bool) -> str:
    lapic = irqs.lapic
    if irqs.pending is not None:
        if interrupts_on:
            return f"{irqs.pending:#04x} is delivered next"
        return f"{irqs.pending:#04x} waits for IF=1"
    if lapic.irr and lapic.enabled:
        top = max(lapic.irr)
        return f"{top:#04x} held back: its class {top >> 4} is not above PPR {lapic.ppr:#04x}"
    return ""


def _vectors(vectors: tuple[int, ...]) -> str:
    return " ".join(f"{v:02x}" for v in vectors) or "—"


def _said(text: str, width: int, style: str) -> list[Content]:
    """A sentence about a VM, indented under it and wrapped to the pane."""
    wrapped = textwrap.wrap(text, max(width, 20), initial_indent="    ", subsequent_indent="    ")
    return [Content.styled(line, style) for line in wrapped]


def _wrap(parts: tuple[str, ...], width: int, indent: str = "    ") -> list[str]:
    """Parts joined by " · " on indented lines, a new line where the next part would not fit
    (the pane is narrow beside the code: nothing it says may be cut)."""
    lines = [indent + parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines.append(indent + part)
    return lines


def _host_bar(snapshot: Snapshot, width: int) -> Content:
    """One cell per slice of host RAM: which VM's memory is where."""
    cells = max(8, width)
    bar = [("░", MUTED)] * cells
    for index, view in enumerate(snapshot.vms):
        start, size = view.ram
        first = start * cells // snapshot.host_size
        last = max(first + 1, (start + size) * cells // snapshot.host_size)
        for cell in range(first, min(last, cells)):
            bar[cell] = ("█", SLICE_STYLES[index % len(SLICE_STYLES)])
    return Content.assemble(*bar)
