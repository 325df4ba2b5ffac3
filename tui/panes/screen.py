"""The guest's VGA text screen at the step shown: its characters in their 16 colours, and
the cursor. Keys typed while it has focus go to the guest's keyboard (tab leaves it).

The screen is drawn from the VM's RAM (0xB8000) and the VGA's registers at the time
machine's position, so a seek shows that step's screen exactly. Blinking characters are
drawn steady (a snapshot does not blink), with the blink shown as underline.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import BindingType
from textual.content import Content, Span
from textual.message import Message

from hypervisor.devices.scancodes import typeable
from hypervisor.devices.vga import COLUMNS, PALETTE
from hypervisor.vmm.inputs import InputDevice
from tui.keys import TYPING_BINDINGS
from tui.model import Snapshot
from tui.panes.base import Pane

KEY_TEXT = {"enter": "\n", "backspace": "\b"}


class GuestInput(Message):
    """Text typed into a pane that hands keys to the guest."""

    def __init__(self, device: InputDevice, text: str) -> None:
        super().__init__()
        self.device, self.text = device, text


def typed(key: str, character: str | None) -> str | None:
    """The text a key types into the guest, if any (tab and escape stay the UI's: focus,
    and stop)."""
    text = KEY_TEXT.get(key, character)
    if key in ("tab", "escape") or not text or not typeable(text):
        return None
    return text


class TypingPane(Pane):
    """A pane whose focus sends printable keys to the guest's `DEVICE`, not to bindings
    (its own say in the footer what stays the UI's)."""

    DEVICE = InputDevice.KEYBOARD
    BINDINGS: ClassVar[list[BindingType]] = list(TYPING_BINDINGS)

    def check_consume_key(self, key: str, character: str | None) -> bool:
        return typed(key, character) is not None

    def on_key(self, event: events.Key) -> None:
        text = typed(event.key, event.character)
        if text is not None:
            event.stop()
            self.post_message(GuestInput(self.DEVICE, text))


class ScreenPane(TypingPane):
    TITLE = "screen"

    def title(self, snapshot: Snapshot) -> str:
        return f"screen · {snapshot.vm.name}"

    def part(self, snapshot: Snapshot) -> object:
        return snapshot.vm.screen

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        screen = snapshot.vm.screen
        rows = []
        for row, (text, attributes) in enumerate(zip(screen.text, screen.attributes, strict=True)):
            spans = [_span(col, attr, screen.blink) for col, attr in enumerate(attributes)]
            if screen.cursor is not None and screen.cursor[0] == row:
                col = screen.cursor[1]
                spans.append(Span(col, col + 1, "reverse"))
            rows.append(Content(text, spans=spans).truncate(min(width, COLUMNS)))
        return rows[:height]


def _span(col: int, attribute: int, blink: bool) -> Span:
    background = attribute >> 4
    if blink:
        background &= 0x7
    style = f"{PALETTE[attribute & 0x0F]} on {PALETTE[background]}"
    if blink and attribute & 0x80:
        style += " underline"
    return Span(col, col + 1, style)
