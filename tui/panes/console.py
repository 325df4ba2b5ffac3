"""The guest's UART output, as far as the VM has run (its last lines)."""

from __future__ import annotations

from textual.content import Content

from tui.model import Snapshot
from tui.panes.base import Pane, lines


class ConsolePane(Pane):
    TITLE = "console"

    def draw(self, snapshot: Snapshot, width: int, height: int) -> Content:
        view = snapshot.vm
        self.border_title = f"console · {view.name}"
        text = view.console.replace("\r", "")
        rows = text.split("\n")
        if rows and rows[-1] == "" and len(rows) > 1:
            rows.pop()
        return lines([Content(row) for row in rows[-height:]], width)
