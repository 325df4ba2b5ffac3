"""The cluster view (`vmlab tui --cluster ADDRESS`): a live cluster's hosts, their VMs and
load, migrations in progress (a bar per migration, its pre-copy round), what happened
(placements, migrations, failovers, FT takeovers), and one followed VM's console, screen and
registers — from whichever host it runs on now.

A thread polls the cluster's manager (`hypervisor/encap/clusterwatch.py`) and hands the app
immutable `ClusterView`s; the app only renders the latest. `f` follows the next VM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Static

from hypervisor.encap.clusterwatch import ClusterView, Followed, Migration, VmRow
from hypervisor.encap.migration import MigrationFailed
from tui.keys import CLUSTER_BINDINGS

Poll = Callable[[str | None], ClusterView]
INTERVAL = 0.2  # seconds between two looks at the cluster
BAR = 24  # cells of a progress bar
LOAD_CELLS = 8
REGISTERS = ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip", "eflags")


def bar(fraction: float, width: int = BAR) -> str:
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


def hosts_text(view: ClusterView) -> str:
    most = max((h.load for h in view.hosts), default=0) or 1
    lines = []
    for host in view.hosts:
        flag = "" if host.state == "up" else f" ({host.state})"
        load = bar(host.load / most, LOAD_CELLS) if host.state != "dead" else " " * LOAD_CELLS
        lines.append(f"{host.name:<8} {load} {host.load} VMs  {host.address}{flag}")
        lines += [f"  · {_vm_line(vm)}" for vm in view.vms if vm.host == host.name]
    return "\n".join(lines)


def _vm_line(vm: VmRow) -> str:
    ft = f"  FT {vm.role}" + (f" → {vm.backup}" if vm.backup else "") if vm.role else ""
    return f"{vm.name:<10} {vm.mode:<6} {vm.state:<8} {vm.step:>12,}{ft}"


def migrations_text(view: ClusterView) -> str:
    if not view.migrations:
        return "none in progress"
    return "\n".join(_migration_line(m) for m in view.migrations)


def _migration_line(m: Migration) -> str:
    return (
        f"{m.vm} {m.source} → {m.target}  round {m.round}  {bar(m.fraction)} "
        f"{m.pages:,}/{m.ram_pages:,} pages"
    )


def console_text(followed: Followed, height: int = 12) -> str:
    rows = followed.console.replace("\r", "").rstrip("\n").split("\n")
    return "\n".join(rows[-height:])


def registers_text(followed: Followed) -> str:
    values = dict(followed.registers)
    return "\n".join(f"{name:<6} {values[name]:08x}" for name in REGISTERS if name in values)


def _pane(name: str) -> Static:
    pane = Static(id=name)
    pane.border_title = name
    return pane


class ClusterApp(App[None]):
    CSS = """
    #top { height: 1fr; }
    #hosts, #migrations, #events, #console, #screen, #registers {
        border: round $primary; padding: 0 1;
    }
    #hosts { width: 1fr; height: 100%; }
    #side { width: 1fr; }
    #migrations { height: 6; }
    #events { height: 1fr; }
    #followed { height: 29; }
    #console { width: 1fr; height: 100%; }
    #screen { width: 84; height: 100%; }
    #registers { width: 24; height: 100%; }
    #status { dock: top; height: 1; background: $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = list(CLUSTER_BINDINGS)

    def __init__(self, poll: Poll, title: str, *, interval: float = INTERVAL) -> None:
        super().__init__()
        self.poll, self.where, self.interval = poll, title, interval
        self.view: ClusterView | None = None
        self.follow: str | None = None
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal(id="top"):
            yield _pane("hosts")
            with Vertical(id="side"):
                yield from map(_pane, ("migrations", "events"))
        with Horizontal(id="followed"):
            yield from map(_pane, ("console", "screen", "registers"))

    def on_mount(self) -> None:
        threading.Thread(target=self._watch, daemon=True).start()

    def on_unmount(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        """The polling thread: the app gets each new view through `call_from_thread`."""
        while not self._stop.is_set():
            try:
                view = self.poll(self.follow)
            except MigrationFailed as err:
                self.call_from_thread(self._problem, str(err))
            else:
                if not self._stop.is_set():
                    self.call_from_thread(self.show, view)
            self._stop.wait(self.interval)

    def _problem(self, text: str) -> None:
        self._set("status", f"cluster {self.where} · not answering: {text}")

    def show(self, view: ClusterView) -> None:
        """Render one view (the only way the app changes)."""
        self.view = view
        if self.follow is None and view.vms:
            self.follow = view.vms[0].name
        followed = view.followed
        where = f" · following {followed.vm} on {followed.host}" if followed else ""
        self._set("status", f"cluster {self.where}{where}   f: follow the next VM · q: quit")
        self._set("hosts", hosts_text(view))
        self._set("migrations", migrations_text(view))
        self._set("events", "\n".join(view.events[-20:]))
        if followed is not None:
            self._set("console", console_text(followed), f"console · {followed.vm}@{followed.host}")
            self._set("screen", "\n".join(followed.screen), f"screen · {followed.vm}")
            self._set("registers", registers_text(followed), f"step {followed.step:,}")

    def _set(self, pane: str, text: str, title: str | None = None) -> None:
        widget = self.query_one(f"#{pane}", Static)
        widget.update(Content(text))
        if title is not None:
            widget.border_title = title

    def action_follow_next(self) -> None:
        names = [vm.name for vm in self.view.vms] if self.view else []
        if names:
            at = names.index(self.follow) + 1 if self.follow in names else 0
            self.follow = names[at % len(names)]


def run_cluster_app(poll: Poll, title: str) -> None:
    ClusterApp(poll, title).run()
