"""The footer: as many keys as the terminal's width holds, chosen by rank, never cut.

Textual's footer lays out every shown binding and lets the screen's edge cut the rest (at 160
columns "Quit" became "Qui"; at 80 help and quit were gone). Here the keys are chosen by
their rank in `tui.keys` (help and quit first) until the row is full, and shown in the
help screen's order; the command palette's key keeps its place on the right.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from tui.keys import FOOTER_RANK

PALETTE_EXTRA = 2  # the palette key's left border and right padding


def key_width(key: FooterKey) -> int:
    """Cells a key takes in the footer: " k " then "Label "."""
    return len(key.key_display) + len(key.description) + 3


def fitting(keys: list[FooterKey], room: int) -> list[FooterKey]:
    """The keys with the best ranks that fit in `room` cells, in their own order."""
    chosen: set[int] = set()
    for key in sorted(keys, key=lambda k: FOOTER_RANK.get(k.action, len(FOOTER_RANK) + 1)):
        width = key_width(key)
        if width <= room:
            chosen.add(id(key))
            room -= width
    return [key for key in keys if id(key) in chosen]


class KeyFooter(Footer):
    def compose(self) -> ComposeResult:
        widgets: list[Widget] = list(super().compose())
        keys = [w for w in widgets if isinstance(w, FooterKey)]
        palette = [k for k in keys if k.has_class("-command-palette")]
        keys = [k for k in keys if k not in palette]
        room = self.app.size.width - sum(key_width(k) + PALETTE_EXTRA for k in palette)
        yield from fitting(keys, room)
        yield from palette

    def on_resize(self, _: events.Resize) -> None:
        self.call_after_refresh(self.recompose)
