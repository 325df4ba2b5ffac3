"""Every key of the app, written once: each row makes its binding, its command in the palette
(ctrl+p) and its line in the help screen, and a test checks the README's list against it.

Rows are in the order of the help screen; the footer shows the rows with a `footer` rank in
the same order, as many as its width holds, chosen by rank (help and quit first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Key:
    """One key (or, without `key`, one palette command with no key)."""

    name: str  # the key as people write it: "s", "T", "?", "+", "ctrl+t"
    action: str  # the app's action: "step", "next('trapped')"
    label: str = ""  # in the footer
    command: str = ""  # its name in the command palette ("" when it has none)
    about: str = ""  # the palette's line about it
    help: str = ""  # its line in the help screen ("" when another line tells it)
    key: str = ""  # Textual's key names, when not `name`: "question_mark", "plus,equals_sign"
    footer: int = 0  # shown in the footer, by rank (1 first): narrow footers drop the last
    display: str | None = None  # how the footer writes it, when not Textual's way
    bound: bool = True  # False: Textual binds it itself (ctrl+p)

    @property
    def keys(self) -> str:
        return self.key or self.name

    def binding(self) -> Binding:
        return Binding(
            self.keys,
            self.action,
            self.label,
            id=re.sub(r"\W+", "_", self.action).strip("_"),
            show=bool(self.footer),
            key_display=self.display,
        )


_BACK = "one instruction forward / back (back re-executes: runs are deterministic)"
_TRAP = "next / previous *trapped* instruction (the monitor stepped in)"
_HOLE = "next / previous ⚠ hole (sensitive, ran directly, unseen by the monitor)"
_STOP = "in a lesson (`vmlab lesson`), its next / previous stop"

KEYS = (
    Key("s", "step", "Step", "Step", "one guest instruction forward", _BACK, footer=3),
    Key(
        "b",
        "step_back",
        "Back",
        "Step back",
        "one instruction back (re-executes from the start)",
        _BACK,
        footer=5,
    ),
    Key(
        "space",
        "run",
        "Run/pause",
        "Run / pause",
        "run the VMs at the chosen speed",
        "run / pause; `+` / `-` faster / slower; `escape` stops a long search",
        footer=4,
    ),
    Key(
        "+",
        "speed(1)",
        "Faster",
        "Faster",
        "run mode: more instructions per second",
        key="plus,equals_sign",
    ),
    Key(
        "-",
        "speed(-1)",
        "Slower",
        "Slower",
        "run mode: fewer instructions per second",
        key="minus",
    ),
    Key("escape", "pause", "Stop"),
    Key(
        "t",
        "next('trapped')",
        "Next trap",
        "Next trapped instruction",
        "run to where the monitor steps in next",
        _TRAP,
        footer=6,
    ),
    Key(
        "T",
        "previous('trapped')",
        "Prev trap",
        "Previous trapped instruction",
        "back to where the monitor stepped in",
        _TRAP,
        footer=8,
        display="⇧t",
    ),
    Key(
        "h",
        "next('hole')",
        "Next hole",
        "Next hole ⚠",
        "a sensitive instruction that ran unseen",
        _HOLE,
    ),
    Key("H", "previous('hole')", "Prev hole", "Previous hole ⚠", "back to the last hole", _HOLE),
    Key(
        "i",
        "next('interrupt')",
        "Next interrupt",
        "Next interrupt",
        "the next interrupt delivered to the guest",
        "next interrupt delivered",
    ),
    Key(
        "",
        "next('console')",
        command="Next console output",
        about="the next line the guest prints",
    ),
    Key(
        "",
        "next('isolation')",
        command="Next isolation event",
        about="the guest touched what it does not own",
    ),
    Key(
        "x",
        "next('translation')",
        "Next transl.",
        "Next translation",
        "the next block the binary translator translates",
        "next translation: a block of kernel code entering the translation cache",
        footer=12,
    ),
    Key(
        "P",
        "walk",
        "Walk",
        "Walk the page tables…",
        "the page tables pane for an address (else EIP or the last write)",
        "page tables pane: walk an address (empty: EIP or the last write)",
        display="⇧p",
    ),
    Key(
        "g",
        "goto",
        "Go to",
        "Go to step, address or function…",
        "jump to any step of the run, or to where the guest next runs an address",
        "go to a step, or the next time an address (0x…) or a function runs (fast-forwards)",
        footer=7,
    ),
    Key(
        "F",
        "goto(True)",
        "Fast-forward",
        "Fast-forward to…",
        "untraced, at full speed: to a step, a breakpoint or the next event of a kind",
        "fast-forward to a step, an address, a function or the next event of a kind",
        display="⇧f",
    ),
    Key(
        "m",
        "mode",
        "Mode",
        help="switch the VM to the next mode (restarts it)",
        footer=10,
    ),
    Key(
        "v",
        "next_vm",
        "Next VM",
        "Next VM",
        "show the next VM in the panes",
        "next VM (the panes follow it)",
        footer=9,
    ),
    Key(
        "c",
        "clock",
        "Clock",
        "Host clock",
        "the VMs of one real host taking turns (or each VM's own steps)",
        "the clock: each VM's own steps, or the host's (its VMs taking turns on its CPU)",
    ),
    Key(
        "W",
        "next('switch')",
        "Next switch",
        "Next world switch",
        "host clock: the scheduler gives the CPU to another VM",
        "on the host's clock, the next world switch (the scheduler gives the CPU to another VM)",
    ),
    Key(
        "",
        "previous('switch')",
        command="Previous world switch",
        about="host clock: back to the last world switch",
    ),
    Key("n", "lesson(1)", "Next stop", help=_STOP),
    Key("p", "lesson(-1)", "Prev stop", help=_STOP),
    Key(
        "a",
        "annotate",
        "Annotate",
        "Annotate this step…",
        "an instructor's note, saved with the trace",
        "annotate this step (saved with the trace: `w`)",
        footer=14,
    ),
    Key(
        "S",
        "snapshot",
        "Snapshot",
        "Take snapshot…",
        "a named snapshot of the focused VM (the VMs pane shows the tree)",
        "take a named snapshot of the focused VM; revert / delete one from the palette",
    ),
    Key(
        "",
        "revert_snapshot",
        command="Revert to snapshot…",
        about="the focused VM back to one of its snapshots, exactly",
    ),
    Key(
        "",
        "delete_snapshot",
        command="Delete snapshot…",
        about="forget a snapshot (its children go to its parent)",
    ),
    Key(
        "w",
        "save",
        "Save trace",
        "Save trace",
        "write the focused VM's recording to a trace file",
    ),
    Key(
        "f",
        "filter",
        "Filter",
        "Filter events…",
        "choose which kinds of events to show",
        "filter the events",
        footer=13,
    ),
    Key(
        "z",
        "maximize",
        "Zoom",
        "Maximize pane",
        "the focused pane fills the screen",
        "maximize the focused pane (`tab` moves focus); again to restore",
        footer=11,
    ),
    Key(
        "ctrl+t",
        "toggle_theme",
        "Theme",
        "Toggle theme",
        "dark / high-contrast light",
        "dark / high-contrast light theme",
    ),
    Key("ctrl+p", "command_palette", help="every command, searchable", bound=False),
    Key(
        "?",
        "help",
        "Help",
        "Help",
        "keys and what the colours mean",
        "this help; `q` quits",
        key="question_mark",
        footer=1,
    ),
    Key("q", "quit", "Quit", footer=2),
)

# A pane that types into the guest (screen, console) takes every printable key for the
# guest: its footer says which keys stay the UI's there.
TYPING_KEYS = (
    Key("tab", "app.focus_next", "Leave: keys type to the guest here", footer=1),
    Key("escape", "app.pause", "Stop", footer=2),
)

# The cluster view's own keys (`vmlab tui --cluster`): it has no VM of its own to step.
CLUSTER_KEYS = (
    Key("f", "follow_next", "Follow next VM", footer=1),
    Key("q", "quit", "Quit", footer=2),
)

BINDINGS = [key.binding() for key in KEYS if key.name and key.bound]
CLUSTER_BINDINGS = [key.binding() for key in CLUSTER_KEYS]
TYPING_BINDINGS = [key.binding() for key in TYPING_KEYS]
FOOTER_RANK = {key.action: key.footer for key in (*KEYS, *TYPING_KEYS) if key.footer}
PALETTE = tuple((key.command, key.about, key.action) for key in KEYS if key.command)


def help_table() -> str:
    """The help screen's table of keys: consecutive keys told by one line share its row."""
    rows: list[tuple[list[str], str]] = []
    for key in KEYS:
        if not key.help:
            continue
        if rows and rows[-1][1] == key.help:
            rows[-1][0].append(key.name)
        else:
            rows.append(([key.name], key.help))
    lines = ["| key | does |", "|---|---|"]
    lines += [f"| {' / '.join(f'`{n}`' for n in names)} | {text} |" for names, text in rows]
    return "\n".join(lines)
