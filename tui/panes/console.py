"""The guest's UART output, as far as the VM has run (its last lines). Keys typed while it
has focus go to the guest's COM1 receiver (tab leaves it)."""

from __future__ import annotations

from textual.content import Content

from hypervisor.vmm.inputs import InputDevice
from tui.model import Snapshot
from tui.panes.base import lines
from tui.panes.screen import TypingPane


class ConsolePane(TypingPane):
    TITLE = "console"
    DEVICE = InputDevice.SERIAL

    def title(self, snapshot: Snapshot) -> str:
        return f"console · {snapshot.vm.name}"

    def part(self, snapshot: Snapshot) -> object:
        return snapshot.vm.console

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        text = snapshot.vm.console.replace("\r", "")
        rows = text.split("\n")
        if rows and rows[-1] == "" and len(rows) > 1:
            rows.pop()
        wrapped = [row[i : i + width] for row in rows[-height:] for i in _starts(row, width)]
        return lines([Content(row) for row in wrapped[-height:]], width)


def _starts(row: str, width: int) -> range:
    """Where a long line continues on the next row, as a terminal wraps it (a guest's output
    must not be cut at the pane's edge)."""
    return range(0, max(len(row), 1), max(width, 1))
