"""What every pane shares: a border title, focus (so `z` can maximize it) and a snapshot.

A pane draws rows (one `Content` a line) from the last snapshot. A new snapshot repaints
only what changed: nothing when the part of the snapshot the pane shows (`part`) is the
same, else only the rows whose text or styles differ; each row is turned into a strip once
and kept while it stays the same (a listing scrolling by one line, a register that did not
change). Turning styled content into strips is what a repaint costs in Textual (~20 ms for a
full code pane here): a step used to repaint every pane, and so took longer to show than to
run. A hidden pane (a collapsed tab) draws nothing until it is shown.
"""

from __future__ import annotations

from textual.content import Content
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.visual import Visual
from textual.widget import Widget

from tui.model import Snapshot

STRIPS_KEPT = 4096  # rows turned into strips, per pane, before the cache starts over


class Pane(Widget):
    can_focus = True
    TITLE = ""

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.border_title = self.TITLE
        self.snapshot: Snapshot | None = None
        self._title = self.TITLE
        self._part: object = None
        self._rows: list[Content] | None = None  # drawn for `_rows_size`
        self._rows_size = Size(0, 0)
        self._strips: dict[tuple, Strip] = {}

    def show(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        title = self.title(snapshot)
        if title != self._title:
            self._title = self.border_title = title
        part = self.part(snapshot)
        if part == self._part:
            return
        self._part = part
        size = self.content_size
        old = self._rows
        if old is None or not size.area or size != self._rows_size:
            self._rows = None  # drawn when next rendered
            self.refresh()
            return
        rows = self._draw_rows()
        if len(rows) != len(old):
            self.refresh()
            return
        changed = [
            Region(0, y, size.width, 1)
            for y, (before, now) in enumerate(zip(old, rows, strict=True))
            if _key(before) != _key(now)
        ]
        if changed:
            self.refresh(*changed)

    def title(self, snapshot: Snapshot) -> str:
        return self.TITLE

    def part(self, snapshot: Snapshot) -> object:
        """What `draw` reads of the snapshot (compared with the last one drawn)."""
        return snapshot

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        raise NotImplementedError

    def _draw_rows(self) -> list[Content]:
        size = self.content_size
        if self.snapshot is None:
            rows = [Content.styled("starting…", "$text-muted")]
        else:
            rows = self.draw(self.snapshot, size.width, size.height)
        self._rows, self._rows_size = rows, size
        return rows

    def render(self) -> Content:
        """The whole pane as one piece of content (what Textual asks for a text selection)."""
        return Content("\n").join(self._current_rows())

    def render_line(self, y: int) -> Strip:
        rows = self._current_rows()
        width = self.content_size.width
        if y >= len(rows):
            return Strip.blank(width, self.visual_style.rich_style)
        key = (*_key(rows[y]), width, self.app.theme, self.visual_style)
        strip = self._strips.get(key)
        if strip is None:
            if len(self._strips) >= STRIPS_KEPT:
                self._strips.clear()
            strips = Visual.to_strips(self, rows[y], width, 1, self.visual_style)
            strip = strips[0] if strips else Strip.blank(width, self.visual_style.rich_style)
            self._strips[key] = strip
        return strip

    def _current_rows(self) -> list[Content]:
        if self._rows is None or self._rows_size != self.content_size:
            return self._draw_rows()
        return self._rows


def _key(row: Content) -> tuple:
    """A row's identity for repainting: its text and its styles (Content's own equality
    compares the text only)."""
    return row.plain, tuple(row.spans)


def lines(rows: list[Content], width: int) -> list[Content]:
    """Rows, each cut to the pane's width."""
    return [row.truncate(width) for row in rows]
