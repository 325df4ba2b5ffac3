"""The page tables: for one linear address, the guest's page directory and table entries
beside the ones the CPU really walks (under trap, the monitor's shadow), the walk
linear → guest-physical → host-physical, and what the MMU's virtualization cost so far.

Everything here is the engine's `PagingView` (hypervisor/vmm/mmu/introspect.py): the pane
never reads guest memory itself.
"""

from __future__ import annotations

from textual.content import Content

from hypervisor.vmm.mmu.introspect import Entry, PagingKind, PagingView, TablesView
from tui.model import Snapshot
from tui.panes.base import Pane, lines
from tui.panes.style import DIFFERS_STYLE, MUTED

COLUMN = 34  # the guest's entries, then the shadow's
WHAT = {
    PagingKind.OFF: "paging off: linear = guest-physical",
    PagingKind.BARE: "the CPU walks the guest's own tables",
    PagingKind.SHADOW: "the CPU walks the monitor's shadow of them",
    PagingKind.DIRECT: "the CPU walks them, validated by the monitor",
}


class PagingPane(Pane):
    TITLE = "page tables"

    def title(self, snapshot: Snapshot) -> str:
        paging = snapshot.vm.paging
        return self.TITLE if paging is None else f"{self.TITLE} · {paging.kind}"

    def part(self, snapshot: Snapshot) -> object:
        return snapshot.vm.paging

    def draw(self, snapshot: Snapshot, width: int, height: int) -> list[Content]:
        paging = snapshot.vm.paging
        if paging is None:
            return [Content.styled("no MMU to show", MUTED)]
        rows = [
            Content.assemble(
                ("address ", MUTED),
                (f"{paging.linear:08x} ", "bold"),
                (f"({paging.why}) · {WHAT[paging.kind]}", MUTED),
            )
        ]
        if paging.guest is not None:
            rows += _tables(paging)
        rows += _walk(paging)
        if paging.counts:
            rows.append(Content(" · ".join(f"{name} {n:,}" for name, n in paging.counts)))
        if paging.pool_pages:
            spaces = f"{paging.spaces} address space{'' if paging.spaces == 1 else 's'}"
            rows.append(
                Content.styled(
                    f"shadows: {spaces}, {paging.pool_used} of {paging.pool_pages} pool pages "
                    f"({paging.shadow_bytes // 1024} KiB of monitor memory)",
                    MUTED,
                )
            )
        return lines(rows, width)


def _tables(paging: PagingView) -> list[Content]:
    guest, shadow = paging.guest, paging.shadow
    assert guest is not None
    right = "shadow (what the CPU walks)" if shadow is not None else ""
    left = "guest's tables"
    rows = [Content.styled(f"{'':10}{left:<{COLUMN}}{right}", MUTED)]
    rows.append(_row("CR3", f"{guest.cr3:08x}", None if shadow is None else f"{shadow.cr3:08x}"))
    index = paging.linear >> 22
    rows.append(
        _row(
            f"PDE [{index:03x}]",
            _entry(guest.pde),
            None if shadow is None else _entry(shadow.pde),
        )
    )
    if guest.pte is not None or (shadow is not None and shadow.pte is not None):
        index = (paging.linear >> 12) & 0x3FF
        rows.append(
            _row(
                f"PTE [{index:03x}]",
                _entry(guest.pte) if guest.pte is not None else _large(guest),
                None if shadow is None else _entry(shadow.pte) if shadow.pte else _large(shadow),
            )
        )
    return rows


def _large(tables: TablesView) -> str:
    return "(4 MiB page: no table)" if tables.pde.present else "—"


def _entry(entry: Entry | None) -> str:
    if entry is None:
        return "—"
    return f"{entry.value:08x} {entry.flags()}  @{entry.address:08x}"


def _row(name: str, guest: str, shadow: str | None) -> Content:
    row = Content.assemble((f"{name:<10}", MUTED), f"{guest:<{COLUMN}}")
    return row if shadow is None else row + Content.styled(shadow, DIFFERS_STYLE)


def _walk(paging: PagingView) -> list[Content]:
    def hop(value: int | None) -> str:
        return "—" if value is None else f"{value:08x}"

    rows = [
        Content.assemble(
            ("walk      ", MUTED),
            f"linear {paging.linear:08x} → guest-physical {hop(paging.guest_physical)}"
            f" → host-physical {hop(paging.host_physical)}",
        )
    ]
    if paging.note:
        rows.append(Content.styled(f"{'':10}{paging.note}", "$text-warning"))
    return rows
