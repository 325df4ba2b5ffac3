"""The vmlab terminal UI: panes over one or more VMs, driven by an engine thread.

The engine thread (`tui.engine`) owns the VMs and publishes immutable snapshots; the app only
applies the latest one, all panes in one `batch_update`, when the engine says one is ready
(in run mode that is ~30 times a second). Keys, the footer, the help screen and the command
palette all call the same actions, which only submit commands.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import ClassVar

from textual import events
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.containers import Container, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Static, Tab, Tabs

from hypervisor.events import EventKind
from hypervisor.trace import tracefile
from hypervisor.vmm.contract import Mode, VmState
from tui.commands import VmlabCommands
from tui.engine import Engine, Session
from tui.engine_commands import (
    Annotate,
    Back,
    Clock,
    DeleteSnapshot,
    FastForward,
    Filter,
    Focus,
    LessonStop,
    Next,
    Pause,
    Previous,
    RevertSnapshot,
    Run,
    Save,
    Seek,
    SendInput,
    SetMode,
    Speed,
    Step,
    TakeSnapshot,
    Walk,
)
from tui.footer import KeyFooter
from tui.keys import BINDINGS
from tui.model import LessonView, Snapshot
from tui.panes import (
    CodePane,
    ConsolePane,
    EventsPane,
    GuestInput,
    OverheadPane,
    PagingPane,
    Pane,
    RegistersPane,
    ScreenPane,
    TranslationCachePane,
    TranslationPane,
    VmsPane,
)
from tui.panes.style import CLASS_STYLE, HOLE_STYLE, MUTED
from tui.screens import FilterScreen, HelpScreen, PromptScreen
from tui.targets import TargetError, address_of, target_of
from tui.themes import DARK, LIGHT

# What a fast-forward sees (not holes: a traced run's; not switches: the host's clock's)
FAST_KINDS = tuple(
    k.value for k in EventKind if k not in (EventKind.HOLE, EventKind.NOTE, EventKind.SWITCH)
)
COMPACT_WIDTH, COMPACT_HEIGHT = 140, 40  # below either, the side panes become tabs
SIDE_PANES = (
    ("screen", "Screen"),
    ("registers", "Registers"),
    ("events", "Events"),
    ("console", "Console"),
    ("vms", "VMs"),
    ("overhead", "Overhead"),
    ("paging", "Paging"),
    ("translation", "Transl."),
    ("tc", "TC"),
)


class SnapshotReady(Message):
    """The engine published a snapshot (posted from the engine thread)."""


class EngineNotice(Message):
    def __init__(self, text: str, severity: str) -> None:
        super().__init__()
        self.text, self.severity = text, severity


class VmlabApp(App[None]):
    CSS_PATH = "vmlab.tcss"
    TITLE = "vmlab"
    COMMANDS = App.COMMANDS | {VmlabCommands}
    BINDINGS: ClassVar[list[BindingType]] = list(BINDINGS)

    def __init__(self, session: Session, *, trace_path: str | None = None) -> None:
        super().__init__()
        self.engine = Engine(session, self._published, self._notice)
        self.snapshot: Snapshot | None = None
        self._latest: Snapshot | None = None
        self._trace_path = trace_path
        self.started = time.perf_counter()
        self.first_frame: float | None = None  # seconds from construction to first snapshot
        self.frames = 0  # snapshots applied (the benchmark counts them)
        self._panes: list[Pane] = []
        self._status: Static | None = None
        self._lesson: LessonView | None = None
        self._screen_used = True  # until a snapshot says otherwise
        self._paging_shown = True
        self.failure = ""  # why the UI ended without showing a guest (`run_app` says it)

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Container(id="panes"):
            with Vertical(id="left"):
                yield CodePane(id="code")
                yield TranslationPane(id="translation")
                yield EventsPane(id="events")
                yield PagingPane(id="paging")
                yield ScreenPane(id="screen")
            with Vertical(id="right"):
                yield RegistersPane(id="registers")
                yield VmsPane(id="vms")
                yield TranslationCachePane(id="tc")
                yield OverheadPane(id="overhead")
                yield ConsolePane(id="console")
        with VerticalScroll(id="lesson"):  # a long stop scrolls rather than being cut
            yield Static(id="lesson-text")
        yield Tabs(*(Tab(label, id=f"tab-{pane}") for pane, label in SIDE_PANES), id="tabs")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._panes = list(self.query(Pane))  # looked up once: a query costs at every step
        self._status = self.query_one("#status", Static)
        self.register_theme(LIGHT)
        self.theme = DARK
        self._show_screen()
        self._show_paging()
        self._layout(self.size.width, self.size.height)
        # Everything built so far (Textual's DOM, modules, guest images) lives as long as
        # the app: out of the collector's sight, a full collection no longer walks it — such
        # a pause (60 ms here) would delay a step. The VMs, made next, stay collectable.
        gc.freeze()
        self.engine.start()

    def on_unmount(self) -> None:
        self.engine.stop()
        # What this app froze is collectable again once it is gone, and collected now: its
        # VMs hold tens of MiB in reference cycles (unicorn's callbacks), which would wait
        # for a full collection (tests open many apps in one process).
        gc.unfreeze()
        gc.collect()

    def on_resize(self, event: events.Resize) -> None:
        self._layout(event.size.width, event.size.height)
        if self.snapshot is not None and self._status is not None:
            self._status.update(status_line(self.snapshot, event.size.width), layout=False)

    def _layout(self, width: int, height: int) -> None:
        compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
        self.screen.set_class(compact, "-compact")
        self._show_translation()

    def _show_translation(self) -> None:
        """The translation panes take room only when the VM the panes show translates (or
        as tabs): a trap VM beside a bt one gets its rows for code and events."""
        snapshot = self.snapshot
        translating = snapshot is not None and snapshot.vm.cache is not None
        hide = not translating and not self.screen.has_class("-compact")
        self.screen.set_class(hide, "-no-translation")

    def _show_paging(self) -> None:
        """The page tables pane (and its tab) takes room only while the VM the panes show
        has paging on."""
        paging = None if self.snapshot is None else self.snapshot.vm.paging
        on = paging is not None and paging.guest is not None
        if on != self._paging_shown:
            self._paging_shown = on
            self._show_pane("paging", on)

    def _show_screen(self) -> None:
        """The screen pane (and its tab) takes room only once a VM writes to its screen."""
        snapshot = self.snapshot
        used = snapshot is not None and any(v.uses_screen for v in snapshot.vms)
        if used != self._screen_used:
            self._screen_used = used
            self._show_pane("screen", used)

    def _show_pane(self, pane: str, shown: bool) -> None:
        """A pane that takes room only when it has something to show, and its tab."""
        self.screen.set_class(not shown, f"-no-{pane}")
        tabs = self.query_one("#tabs", Tabs)
        if shown:
            tabs.show(f"tab-{pane}")
        else:
            tabs.hide(f"tab-{pane}")

    def on_guest_input(self, message: GuestInput) -> None:
        """Keys typed into the screen or console pane: to the focused VM's guest."""
        self.engine.submit(SendInput(message.device, message.text))

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        shown = event.tab.id.removeprefix("tab-") if event.tab and event.tab.id else ""
        for pane, _ in SIDE_PANES:
            self.query_one(f"#{pane}").set_class(pane == shown, "-shown")
        for column in self.query("#left, #right"):
            column.set_class(bool(column.query(".-shown")), "-has-shown")

    # ------------------------------------------------------------------ snapshots
    def _published(self, snapshot: Snapshot) -> None:
        """Engine thread: keep the latest snapshot, wake the UI."""
        self._latest = snapshot
        self.post_message(SnapshotReady())

    def _notice(self, text: str, severity: str) -> None:
        self.post_message(EngineNotice(text, severity))

    def on_snapshot_ready(self, _: SnapshotReady) -> None:
        snapshot = self._latest
        if snapshot is None or snapshot is self.snapshot:
            return
        self.snapshot = snapshot
        self.frames += 1
        if self.first_frame is None:
            self.first_frame = time.perf_counter() - self.started
        with self.batch_update():
            self._show_translation()
            self._show_screen()
            self._show_paging()
            for pane in self._panes:
                pane.show(snapshot)
            if self._status is not None:
                self._status.update(status_line(snapshot, self.size.width), layout=False)
            self._show_lesson(snapshot.lesson)
        self.call_after_refresh(self.engine.painted)

    def _show_lesson(self, lesson: LessonView | None) -> None:
        if lesson == self._lesson:
            return
        self._lesson = lesson
        self.screen.set_class(lesson is not None, "-lesson")
        if lesson is not None:
            self.query_one("#lesson-text", Static).update(lesson_text(lesson))

    def on_engine_notice(self, notice: EngineNotice) -> None:
        if self.engine.failed:  # nothing to show: every pane would say "starting…" for ever
            self.failure = self.engine.failed
            self.exit(return_code=2)
            return
        self.notify(notice.text, severity=notice.severity)  # type: ignore[arg-type]

    async def settle(self, timeout: float = 60) -> None:
        """Wait until the engine has done every command and the UI shows its result (for
        tests and benchmarks)."""
        deadline = time.perf_counter() + timeout
        while not (self.engine.settled and self._latest is self.snapshot):
            if time.perf_counter() > deadline:
                raise TimeoutError("the engine did not settle")
            await asyncio.sleep(0.002)

    # ------------------------------------------------------------------ actions
    def action_step(self) -> None:
        self.engine.submit(Step())

    def action_step_back(self) -> None:
        self.engine.submit(Back())

    def action_run(self) -> None:
        self.engine.submit(Run())

    def action_pause(self) -> None:
        self.engine.submit(Pause())

    def action_speed(self, change: int) -> None:
        self.engine.submit(Speed(change))

    def action_next(self, kind: str) -> None:
        self.engine.submit(Next(kind))

    def action_previous(self, kind: str) -> None:
        self.engine.submit(Previous(kind))

    def action_next_vm(self) -> None:
        self.engine.submit(Focus(1))

    def action_mode(self, mode: str | None = None) -> None:
        self.engine.submit(SetMode(None if mode is None else Mode(mode)))

    def action_goto(self, fast: bool = False) -> None:
        """`g`: a step, an address or a function; `F`: also the next event of a kind."""
        kinds = FAST_KINDS if fast else ()

        def go(answer: str | None) -> None:
            if not answer:
                return
            try:
                target = target_of(answer, self.engine.symbols(), kinds)
            except TargetError as err:
                self.notify(str(err), severity="warning")
                return
            self.engine.submit(Seek(target) if isinstance(target, int) else FastForward(target))

        title, hint = "Go to step, address or function", "e.g. 4080, 0x10002a, kmain"
        if fast:
            title, hint = "Fast-forward to", "a step, 0x address, function, or " + ", ".join(kinds)
        self.push_screen(PromptScreen(title, placeholder=hint), go)

    def action_walk(self) -> None:
        """`P`: the page tables pane walks an address (empty: EIP / the last write again)."""

        def walk(answer: str | None) -> None:
            if answer is None:
                return
            try:
                address = address_of(answer, self.engine.symbols()) if answer.strip() else None
            except TargetError as err:
                self.notify(str(err), severity="warning")
                return
            self.engine.submit(Walk(address))

        hint = "0x address or function; empty: follow EIP / the last write"
        self.push_screen(PromptScreen("Walk the page tables for", placeholder=hint), walk)

    def action_clock(self) -> None:
        self.engine.submit(Clock())

    def action_lesson(self, change: int) -> None:
        self.engine.submit(LessonStop(change))

    def action_annotate(self) -> None:
        if self.snapshot is None:
            return
        view = self.snapshot.vm

        def keep(answer: str | None) -> None:
            if answer is not None:
                self.engine.submit(Annotate(answer.strip()))

        title = f"Note for step {view.step:,} of {view.name} (empty removes it)"
        self.push_screen(PromptScreen(title, view.annotation), keep)

    def action_snapshot(self) -> None:
        self._ask_snapshot("Name of the new snapshot", TakeSnapshot)

    def action_revert_snapshot(self) -> None:
        self._ask_snapshot("Revert to snapshot", RevertSnapshot)

    def action_delete_snapshot(self) -> None:
        self._ask_snapshot("Delete snapshot", DeleteSnapshot)

    def _ask_snapshot(
        self, title: str, command: type[TakeSnapshot | RevertSnapshot | DeleteSnapshot]
    ) -> None:
        if self.snapshot is None:
            return
        view = self.snapshot.vm
        names = ", ".join(name for _, name, _, _ in view.snapshots)

        def submit(answer: str | None) -> None:
            if answer and answer.strip():
                self.engine.submit(command(answer.strip()))

        hint = names or f"e.g. step-{view.step}"
        self.push_screen(PromptScreen(f"{title} ({view.name})", placeholder=hint), submit)

    def action_filter(self) -> None:
        if self.snapshot is None:
            return

        def apply(hidden: frozenset[str] | None) -> None:
            if hidden is not None:
                self.engine.submit(Filter(hidden))

        self.push_screen(FilterScreen(self.snapshot.kinds, self.snapshot.hidden), apply)

    def action_save(self) -> None:
        if self.snapshot is None:
            return
        view = self.snapshot.vm
        path = self._trace_path or f"{view.guest}-{view.mode}.vmtrace"
        self.engine.submit(Save(str(Path(path))))

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT.name if self.theme == DARK else DARK

    def action_maximize(self) -> None:
        screen = self.screen
        if screen.maximized is not None:
            screen.minimize()
            return
        focused = screen.focused
        screen.maximize(focused if isinstance(focused, Pane) else self.query_one("#code", Pane))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())


def status_line(snapshot: Snapshot, width: int = 1 << 16) -> Content:
    """Where the focused VM is and what it does. When the line is wider than the screen, the
    last instruction (also in the code pane) gives way first: the state must stay in sight."""
    view = snapshot.vm
    end = f"{view.end:,}" if view.end is not None else "?"
    head: list[Content | str | tuple[str, str]] = []
    if snapshot.host is not None:
        head.append((f" host step {snapshot.host.step:,} ·", "bold $text-accent"))
    head += [(f" {view.name} ", "bold"), f"step {view.step:,} / {end}  "]
    last: list[Content | str | tuple[str, str]] = []
    if view.last is not None:
        ran = view.last
        last = [
            ("last: ", MUTED),
            (ran.text, "bold"),
            " ",
            (ran.cls.value, CLASS_STYLE[ran.cls]),
            (" ⚠ hole" if ran.hole else "", HOLE_STYLE),
            "  ",
        ]
    tail: list[Content | str | tuple[str, str]] = []
    if snapshot.busy:
        tail.append((snapshot.busy, "$text-warning"))
    elif view.state == VmState.RUNNING:
        tail.append((f"▶ running {snapshot.speed:,}/s", "$text-success"))
    else:
        tail.append((f"‖ {view.state}", MUTED))
    if view.annotation:
        tail += ["  ", (f"✎ {view.annotation}", "italic $text-accent")]
    line = Content.assemble(*head, *last, *tail)
    if line.cell_length > width:
        line = Content.assemble(*head, *tail)
    return line


def lesson_text(lesson: LessonView) -> Content:
    parts: list[Content | str | tuple[str, str]] = [
        (f"Lesson · {lesson.title}", "bold $text-accent"),
        (f"  stop {lesson.index + 1} of {lesson.count} · {lesson.go}", MUTED),
        ("   n next · p previous\n", MUTED),
        " ".join(lesson.text.split()),
    ]
    if lesson.problems:
        why = "; ".join(lesson.problems)
        parts.append((f"\n⚠ the engine does not show what this stop expects: {why}", "$text-error"))
    return Content.assemble(*parts)


def run_app(session: Session, trace_path: str | None = None) -> int:
    """Run the UI; its exit status (2, said in one line, when the guests cannot start)."""
    app = VmlabApp(session, trace_path=trace_path)
    app.run()
    if app.failure:
        print(f"vmlab: {app.failure}", file=sys.stderr)
    return app.return_code or 0


def open_trace(path: str) -> Session:
    """A session replaying a trace file (raises TraceFileError with a one-line message)."""
    return Session(replay=tracefile.load(path))
