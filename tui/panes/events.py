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
        view = snapshot.vm
        rows = [
            Content.assemble(
                (f"{row.step:>10,} ", MUTED),
                (f"{row.kind:<13}", KIND_STYLE.get(row.kind, "")),
                row.text,
            )
            for row in view.events[-height:]
        ]
        if not rows:
            rows = [Content.styled("no events yet", MUTED)]
        return lines(rows, width)
