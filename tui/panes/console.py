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
        return lines([Content(row) for row in rows[-height:]], width)
