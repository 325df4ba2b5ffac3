"""The command palette (ctrl+p): every action of the app, searchable by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from hypervisor.vmm.contract import Mode

COMMANDS = (
    ("Step", "one guest instruction forward", "step"),
    ("Step back", "one instruction back (re-executes from the start)", "back"),
    ("Run / pause", "run the VMs at the chosen speed", "run"),
    ("Faster", "run mode: more instructions per second", "speed(1)"),
    ("Slower", "run mode: fewer instructions per second", "speed(-1)"),
    ("Next trapped instruction", "run to where the monitor steps in next", "next('trapped')"),
    ("Previous trapped instruction", "back to where the monitor stepped in", "previous('trapped')"),
    ("Next hole ⚠", "a sensitive instruction that ran unseen", "next('hole')"),
    ("Previous hole ⚠", "back to the last hole", "previous('hole')"),
    ("Next interrupt", "the next interrupt delivered to the guest", "next('interrupt')"),
    ("Next console output", "the next line the guest prints", "next('console')"),
    ("Next isolation event", "the guest touched what it does not own", "next('isolation')"),
    (
        "Next translation",
        "the next block the binary translator translates",
        "next('translation')",
    ),
    ("Go to step…", "jump to any step of the run", "goto"),
    ("Next VM", "show the next VM in the panes", "next_vm"),
    ("Host clock", "the VMs of one real host taking turns (or each VM's own steps)", "clock"),
    (
        "Next world switch",
        "host clock: the scheduler gives the CPU to another VM",
        "next('switch')",
    ),
    (
        "Previous world switch",
        "host clock: back to the last world switch",
        "previous('switch')",
    ),
    ("Annotate this step…", "an instructor's note, saved with the trace", "annotate"),
    ("Filter events…", "choose which kinds of events to show", "filter"),
    ("Save trace", "write the focused VM's recording to a trace file", "save"),
    ("Toggle theme", "dark / high-contrast light", "toggle_theme"),
    ("Maximize pane", "the focused pane fills the screen", "maximize"),
    ("Help", "keys and what the colours mean", "help"),
)


class VmlabCommands(Provider):
    def _commands(self) -> list[tuple[str, str, str]]:
        modes = [
            (f"Switch to {mode} mode", "restart the focused VM in this mode", f"mode('{mode}')")
            for mode in list(Mode)
        ]
        return [*COMMANDS, *modes]

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
