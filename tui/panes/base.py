"""What every pane shares: a border title, focus (so `z` can maximize it) and a snapshot.

Panes render from the last snapshot in `render()`, so a resize re-lays them out without the
engine, and a pane that is hidden (a collapsed tab) costs nothing.
"""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from tui.model import Snapshot


class Pane(Widget):
    can_focus = True
    TITLE = ""

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.border_title = self.TITLE
        self.snapshot: Snapshot | None = None

    def show(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.refresh()

    def render(self) -> Content:
        if self.snapshot is None:
            return Content.styled("starting…", "$text-muted")
        return self.draw(self.snapshot, self.content_size.width, self.content_size.height)

    def draw(self, snapshot: Snapshot, width: int, height: int) -> Content:
        raise NotImplementedError


def lines(rows: list[Content], width: int) -> Content:
    """Rows, each cut to the pane's width, one per line."""
    return Content("\n").join(row.truncate(width) for row in rows)
