"""The code pane: the guest's source (or disassembly) around EIP, each instruction tagged by
how it ran the last time — the lesson of the whole tool in one column of dots."""

from __future__ import annotations

import re
from functools import lru_cache

from pygments.token import Token
from textual.content import Content
from textual.highlight import HighlightTheme, TokenType, highlight

from hypervisor.events import InsnClass
from tui.model import CodeRow, Snapshot
from tui.panes.base import Pane, lines
from tui.panes.style import CLASS_STYLE, HOLE_STYLE, MUTED

LEGEND = (
    " ".join(
        f"[{CLASS_STYLE[cls]}]●[/] {cls.value}"
        for cls in (
            InsnClass.DIRECT,
            InsnClass.TRAPPED,
            InsnClass.TRANSLATED,
            InsnClass.HYPERCALL,
            InsnClass.NATIVE,
        )
    )
    + f" [{HOLE_STYLE}]⚠[/] hole"
)


TAG_WIDTH = len(" translated")
INSN_WIDTH = 30  # the column of the instruction beside a source line that says it otherwise
LABEL = re.compile(r"^\s*[\w.$@?]+:")  # a label before the instruction or data
NUMBER = re.compile(r"\b(0x[0-9a-f]+|[0-9][0-9a-f]*h|[0-9]+)\b")
DATA = ("db", "dw", "dd", "dq", "dt", "times", "resb", "resw", "resd", "incbin")
MARGIN = 3  # rows kept between the current instruction and the pane's edges


class CodePane(Pane):
    TITLE = "code"

    def on_mount(self) -> None:
        self.border_subtitle = LEGEND

    def title(self, snapshot: Snapshot) -> str:
        view = snapshot.vm
        source = "source" if view.language == "nasm" else view.language
        return f"code · {view.name} · {source}"

    def part(self, snapshot: Snapshot) -> object:
        return snapshot.vm.code

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self._top: int | None = None  # address of the first row shown

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        """The rows stay put while the current instruction moves inside them (a listing
        that scrolls at every step is hard to follow, and repaints every row); it scrolls
        to put the current instruction a third of the way down when it nears an edge."""
        code = snapshot.vm.code
        current = next((i for i, row in enumerate(code) if row.current), 0)
        start = next((i for i, row in enumerate(code) if row.address == self._top), None)
        margin = min(MARGIN, height // 4)
        if start is None or not start + margin <= current < start + height - margin:
            start = current - height // 3
        start = max(0, min(start, len(code) - height))
        self._top = code[start].address if start < len(code) else None
        return lines([_row(row, width) for row in code[start : start + height]], width)


@lru_cache(maxsize=4096)
def _row(row: CodeRow, width: int) -> Content:
    """One row (cached: stepping changes two or three rows of the listing, not all)."""
    marker = "▶" if row.current else "◆" if row.last else " "
    glyph = ("●", CLASS_STYLE[row.tag]) if row.tag else ("·", MUTED)
    left = Content.assemble(
        (marker, "bold $text-primary"),
        " ",
        glyph,
        ("⚠" if row.hole else " ", HOLE_STYLE),
        (f" {row.address:08x}  ", MUTED),
    )
    tail = Content.styled(
        f" {row.tag.value}" if row.tag else "", CLASS_STYLE[row.tag] if row.tag else ""
    )
    room = max(width - left.cell_length - TAG_WIDTH, 0)
    ran = _ran(row)
    if ran:  # the source says it another way: the instruction has its column on the right
        column = min(INSN_WIDTH, room // 2)
        source = _highlight(row.text).truncate(max(room - column - 1, 0), ellipsis=True)
        insn = Content.styled(ran, "$text-secondary").truncate(column, ellipsis=True)
        text = source.pad_right(room - column - source.cell_length) + insn
    else:  # a cut row says so: `+0x11` cut to `+0` would name another place
        text = _highlight(row.text).truncate(room, ellipsis=True)
    line = left + text.pad_right(room - text.cell_length) + tail
    if row.current:
        line = line.extend_right(max(0, width - line.cell_length)).stylize("on $primary-muted")
    return line


def _ran(row: CodeRow) -> str:
    """The instruction, when the source line does not already say it (a macro's body, a
    label or constant where the CPU has an address or a number); "" when it does, or when
    the line is data, not code."""
    source = LABEL.sub("", row.text.split(";", 1)[0]).lower().split()
    if not source or source[0] in DATA:
        return ""
    insn = row.insn.lower().split()
    if len(source) == 1 and insn[:1] == source:  # `lodsb`: its operands are implicit
        return ""
    if _plain(source) == _plain(insn):
        return ""
    return row.insn


def _plain(words: list[str]) -> str:
    """An instruction's words without what only spells it differently: `ptr`, short jumps'
    `short`, and how a number is written (13, 0xd, 0dh)."""
    text = " ".join(word for word in words if word not in ("ptr", "short"))
    return NUMBER.sub(lambda m: str(_number(m.group())), text).replace(" ", "")


def _number(text: str) -> int:
    if text.endswith("h"):
        return int(text[:-1], 16)
    return int(text, 0) if text.startswith("0x") else int(text)


class _CodeTheme(HighlightTheme):
    """Textual's highlight colours, without underlining every mnemonic."""

    STYLES: dict[TokenType, str] = {  # noqa: RUF012 (Textual declares it an instance variable)
        **HighlightTheme.STYLES,
        Token.Name.Function: "$text-warning",
        Token.Name.Function.Magic: "$text-warning",
    }


@lru_cache(maxsize=8192)
def _highlight(text: str) -> Content:
    return highlight(text, language="nasm", theme=_CodeTheme).rstrip()
