"""Where the instructions went: counts by class, and how often the monitor had to step in
(trapped instructions per bucket of steps, as a sparkline)."""

from __future__ import annotations

from textual.content import Content

from hypervisor.events import InsnClass
from tui.model import Snapshot
from tui.panes.base import Pane, lines
from tui.panes.style import CLASS_STYLE, MUTED

BARS = " ▁▂▃▄▅▆▇█"


class OverheadPane(Pane):
    TITLE = "overhead"

    def part(self, snapshot: Snapshot) -> object:
        view = snapshot.vm
        return view.counts, view.spark, view.spark_bucket, view.cycles

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        view = snapshot.vm
        total = sum(view.counts.values())
        bar_width = max(4, width - 22)
        rows = []
        for cls in InsnClass:
            count = view.counts.get(cls.value, 0)
            filled = round(bar_width * count / total) if total else 0
            rows.append(
                Content.assemble(
                    (f"{cls.value:<11}", CLASS_STYLE[cls]),
                    f"{count:>9,} ",
                    ("█" * filled, CLASS_STYLE[cls]),
                )
            )
        traps = sum(view.spark)
        rows.append(Content.styled(f"trapped per {view.spark_bucket:,} steps:", MUTED))
        rows.append(Content.styled(_sparkline(view.spark, width), CLASS_STYLE[InsnClass.TRAPPED]))
        if total:
            span = min(total, len(view.spark) * view.spark_bucket)
            said = f"{traps:,} in the last {span:,} steps"
            cost = view.cycles
            if cost is not None and cost.mmu:  # shadow paging: the MMU's part of the cost
                said += f" · the MMU: {cost.mmu_share_pct:.0f}% of the overhead"
            rows.append(Content.styled(said, MUTED))
        return lines(rows, width)


def _sparkline(values: tuple[int, ...], width: int) -> str:
    values = values[-width:]
    top = max(values, default=0)
    if not top:
        return BARS[1] * len(values)
    return "".join(BARS[1 + round((len(BARS) - 2) * v / top)] for v in values)
