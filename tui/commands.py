"""The command palette (ctrl+p): every action of the app, searchable by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from hypervisor.vmm.contract import Mode
from tui.keys import PALETTE


class VmlabCommands(Provider):
    def _commands(self) -> list[tuple[str, str, str]]:
        modes = [
            (f"Switch to {mode} mode", "restart the focused VM in this mode", f"mode('{mode}')")
            for mode in list(Mode)
        ]
        return [*PALETTE, *modes]

    async def discover(self) -> Hits:
        for title, help_text, action in self._commands():
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(self.app.run_action, action),
                    help=help_text,
                )
