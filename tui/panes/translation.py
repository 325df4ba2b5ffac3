"""Binary translation, seen from inside: the guest block beside the code the CPU really runs
for it (translation pane), and the translation cache filling and linking up (TC pane).
In other modes they say why there is nothing to show."""

from __future__ import annotations

from textual.content import Content

from hypervisor.vmm.bt.introspect import CacheView
from hypervisor.vmm.contract import Mode
from tui.model import Snapshot, TranslationView
from tui.panes.base import Pane, lines
from tui.panes.style import MUTED

SUBKIND_STYLE = {"ident": "$text-muted", "callout": "$text-error"}
REWRITTEN = "$text-accent"


class TranslationPane(Pane):
    TITLE = "translation"

    def part(self, snapshot: Snapshot) -> object:
        return snapshot.vm.mode, snapshot.vm.translation

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        view = snapshot.vm
        if view.translation is None:
            why = (
                "the guest's code runs as it is: nothing is translated"
                if view.mode != Mode.BT
                else "user code runs directly at CPL 3: it is never translated"
            )
            return _explain(f"no translation here ({view.mode} mode): {why}.", width)
        return lines(_fragment(view.translation, width), width)


class TranslationCachePane(Pane):
    TITLE = "translation cache"

    def part(self, snapshot: Snapshot) -> object:
        return snapshot.vm.mode, snapshot.vm.cache

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        view = snapshot.vm
        if view.cache is None:
            return _explain(f"no translation cache in {view.mode} mode.", width)
        return lines(_cache(view.cache, width), width)


def _fragment(t: TranslationView, width: int) -> list[Content]:
    rows = [Content.styled(f"fragment #{t.fragment} ({t.why}): guest → translated", MUTED)]
    guest = [
        Content.assemble(
            (f"{address:08x} ", MUTED),
            f"{text:<24} ",
            (kind, SUBKIND_STYLE.get(kind, REWRITTEN)),
        )
        for address, text, kind in t.guest
    ]
    code = [
        Content.assemble(
            ("▶" if address == t.here else "┌" if starts else " ", "bold $text-primary"),
            (f"{address:08x} ", MUTED),
            text,
        )
        for address, text, starts in t.code
    ]
    half = (width - 3) // 2
    if half < 40:  # too narrow for two columns: one above the other
        return [*rows, *guest, Content.styled("translated code:", MUTED), *code]
    for index in range(max(len(guest), len(code))):
        left = (guest[index] if index < len(guest) else Content(" ")).truncate(half)
        right = code[index] if index < len(code) else Content("")
        rows.append(left.pad_right(half - left.cell_length) + " │ " + right)
    return rows


def _cache(c: CacheView, width: int) -> list[Content]:
    share = c.used / c.capacity if c.capacity else 0
    bar = max(4, width - 2)
    filled = round(bar * share)
    stats = "  ".join(f"{name.replace('_', ' ')} {value:,}" for name, value in c.stats)
    rows = [
        Content(f"{c.used:,} of {c.capacity:,} bytes used, {c.fragments:,} fragments"),
        Content.assemble(("█" * filled, "$text-accent"), ("░" * (bar - filled), MUTED)),
        *(Content.styled(part, MUTED) for part in _wrap(stats, width)),
        Content.styled("latest fragments (guest range, links in/out):", MUTED),
    ]
    rows += [
        Content(f"#{fid:<5} {start:08x}–{end:08x}  in {links_in} out {links_out}")
        for fid, start, end, links_in, links_out in reversed(c.recent)
    ]
    return rows


def _explain(text: str, width: int) -> list[Content]:
    return lines([Content.styled(row, MUTED) for row in _wrap(text, width)], width)


def _wrap(text: str, width: int) -> list[str]:
    rows, row = [], ""
    for word in text.split():
        if row and len(row) + 1 + len(word) > width:
            rows.append(row)
            row = word
        else:
            row = f"{row} {word}".strip()
    return [*rows, row]
