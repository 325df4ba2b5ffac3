"""Registers as the guest sees them beside the real CPU's: under a monitor they differ (the
ring the kernel really runs in, the interrupt flag it only believes it has, the monitor's
descriptor tables), and the difference is the monitor's work."""

from __future__ import annotations

from functools import lru_cache

from textual.content import Content

from tui.model import Snapshot
from tui.panes.base import Pane, lines
from tui.panes.style import CHANGED_STYLE, DIFFERS_STYLE, MUTED

ROWS = (
    ("eax", 8),
    ("ebx", 8),
    ("ecx", 8),
    ("edx", 8),
    ("esi", 8),
    ("edi", 8),
    ("ebp", 8),
    ("esp", 8),
    ("eip", 8),
    ("eflags", 8),
    ("if", 1),
    ("iopl", 1),
    ("cpl", 1),
    ("cs", 4),
    ("ss", 4),
    ("ds", 4),
    ("es", 4),
    ("fs", 4),
    ("gs", 4),
    ("gdtr", 8),
    ("idtr", 8),
)
BLOCK = 25  # columns one name/guest/real row takes
GAP = 2


class RegistersPane(Pane):
    TITLE = "registers"

    def title(self, snapshot: Snapshot) -> str:
        regs = snapshot.vm.registers
        return "registers · bare metal" if regs.guest is regs.real else "registers · guest │ real"

    def part(self, snapshot: Snapshot) -> object:
        return snapshot.vm.registers

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        regs = snapshot.vm.registers
        bare = regs.guest is regs.real
        guest, real = regs.guest.values(), regs.real.values()
        rows = [_header(bare)] + [
            _row(
                name,
                digits,
                guest[name],
                None if bare else real[name],
                (name in regs.guest_changed, name in regs.real_changed),
            )
            for name, digits in ROWS
        ]
        blocks = max(1, min((width + GAP) // (BLOCK + GAP), -(-len(rows) // max(1, height))))
        if blocks == 1:
            return lines(rows, width)
        per = -(-len(rows) // blocks)
        columns = [rows[i * per : (i + 1) * per] for i in range(blocks)]
        joined = [
            Content(" " * GAP).join(c[i].pad_right(BLOCK - c[i].cell_length) for c in columns[:-1])
            + (Content(" " * GAP) + columns[-1][i] if i < len(columns[-1]) else Content(""))
            for i in range(per)
        ]
        return lines(joined, width)


def _header(bare: bool) -> Content:
    if bare:
        return Content.styled(f"{'':7}{'cpu':>8}", MUTED)
    return Content.styled(f"{'':7}{'guest':>8}{'real':>10}", MUTED)


@lru_cache(maxsize=4096)
def _row(
    name: str, digits: int, guest: int, real: int | None, changed: tuple[bool, bool]
) -> Content:
    """One register's row (cached: a step changes a few registers)."""
    row = Content.assemble(
        (f"{name.upper():<7}", MUTED),
        (f"{guest:0{digits}x}".rjust(8), CHANGED_STYLE if changed[0] else ""),
    )
    if real is None:
        return row
    differs = real != guest
    style = CHANGED_STYLE if changed[1] else DIFFERS_STYLE if differs else ""
    return row + Content.styled(f"{'≠' if differs else ' '}{real:0{digits}x}".rjust(10), style)
