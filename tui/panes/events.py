"""The event log of the focused VM up to the current step, filterable by kind (`f`)."""

from __future__ import annotations

from textual.content import Content

from tui.model import Snapshot
from tui.panes.base import Pane, lines
from tui.panes.style import KIND_STYLE, MUTED


class EventsPane(Pane):
    TITLE = "events"

    def title(self, snapshot: Snapshot) -> str:
        hidden = ", ".join(sorted(snapshot.hidden))
        return f"events · {snapshot.vm.name}" + (f" · hidden: {hidden}" if hidden else "")

    def part(self, snapshot: Snapshot) -> object:
        return snapshot.vm.events

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        """The last events that fit; a long one wraps under its own text column (its end,
        an address or a port, is often what the reader is after)."""
        rows: list[Content] = []
        for row in reversed(snapshot.vm.events):
            head = Content.assemble(
                (f"{row.step:>10,} ", MUTED), (f"{row.kind:<13}", KIND_STYLE.get(row.kind, ""))
            )
            text = Content(row.text).wrap(max(width - head.cell_length, 8))
            pad = Content(" " * head.cell_length)
            rows[:0] = [head + text[0], *(pad + more for more in text[1:])]
            if len(rows) >= height:
                break
        if not rows:
            rows = [Content.styled("no events yet", MUTED)]
        return lines(rows[-height:], width)
