"""Modal screens: help, a one-line prompt (go to step, annotate), the event filter."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, SelectionList

from tui.keys import help_table

HELP = f"""\
# vmlab

Real 32-bit x86 guest kernels on an emulated machine, on bare metal or under a monitor.
**Nothing is scripted**: the CPU decides what traps, and every step below is one guest
instruction really retired.

{help_table()}

## Colours in the code pane

* **direct** — ran on the CPU under the monitor, which never saw it
* **trapped** — faulted (or was intercepted) and the monitor emulated it
* **translated** — ran as translated code from the translation cache
* **hypercall** — a paravirtual call into the monitor
* **native** — bare metal: no monitor at all
* **⚠ hole** — a sensitive instruction that ran directly and gave the guest another answer
  than bare metal would have (POPF, PUSHF, SGDT, SIDT, SMSW, MOV from CS…)

`▶` marks the instruction that runs next, `◆` the one that just ran.

## Registers

*guest* is what the guest's own (virtual) CPU holds; *real* is the physical CPU running it.
Under trap-and-emulate they differ: the kernel really runs in ring 1 (selector RPL, CPL),
its interrupt flag is virtual, and the descriptor tables are the monitor's. Values that
changed in the last step are highlighted; `≠` marks a real value the guest does not see.

## Screen and typing

The screen pane shows the guest's VGA text screen at the step shown. Keys typed while the
screen pane has focus go to the guest's keyboard; while the console pane has focus, to its
COM1. `tab` leaves the pane, `escape` still stops a run. Input arrives where the recording
ends, and a replay delivers it at the same step.
"""


class HelpScreen(ModalScreen[None]):
    """The keys and the colours. Its text is longer than a small terminal: it scrolls, and
    has the focus, so the arrows, page keys, home and end move it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help.close"),
    ]

    def compose(self) -> ComposeResult:
        # Imported when help is first asked for: Markdown's parser takes ~60 ms to import,
        # which need not stand between `vmlab` and its first screen.
        from textual.widgets import Markdown

        with VerticalScroll(id="help") as scroll:
            scroll.border_subtitle = "↑ ↓ pgup pgdn home end scroll · escape closes"
            yield Markdown(HELP)

    def on_mount(self) -> None:
        self.query_one("#help", VerticalScroll).focus()

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """Asks for one line; returns it, or None on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="prompt.cancel")
    ]

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self._title, self._value, self._placeholder = title, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title)
            yield Input(self._value, placeholder=self._placeholder)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FilterScreen(ModalScreen[frozenset[str] | None]):
    """Which event kinds to show; returns the kinds to hide."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="filter.cancel"),
        Binding("enter", "apply", "Apply", id="filter.apply"),
    ]

    def __init__(self, kinds: tuple[str, ...], hidden: frozenset[str]) -> None:
        super().__init__()
        self._kinds, self._hidden = kinds, hidden

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Show these events (space toggles, enter applies)")
            yield SelectionList[str](
                *((kind, kind, kind not in self._hidden) for kind in self._kinds)
            )

    def action_apply(self) -> None:
        shown = set(self.query_one(SelectionList).selected)
        self.dismiss(frozenset(k for k in self._kinds if k not in shown))

    def action_cancel(self) -> None:
        self.dismiss(None)
