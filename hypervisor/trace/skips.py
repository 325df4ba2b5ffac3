"""Fast-forwarded stretches of a recording: steps the VM ran untraced, at full speed.

A teaching kernel reaches its prompt after hundreds of millions of instructions; traced, that
is an hour. So a recording may fast-forward: the head VM runs untraced, where the monitor
still sees everything it sees in any run (traps, callouts, hypercalls, interrupts, I/O, the
console), so those events are recorded exactly, and its counters give the instructions by
class over the stretch. What a stretch lacks is the per-instruction columns (class, registers,
memory writes); a seek into one is exact all the same (checkpoints and re-execution).

The columns hold the traced steps only, so a step and its column differ by the steps
skipped before it; `Skips` maps one to the other.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Skip:
    """Steps [start, end) ran untraced."""

    start: int
    end: int
    column: int  # traced steps (columns) before it
    offset: int  # register values recorded before it
    counts: tuple[tuple[str, int], ...]  # instructions by class over the stretch
    after: tuple[int, ...]  # the registers at `end`, where tracing resumed

    @property
    def length(self) -> int:
        return self.end - self.start


class Skips:
    """A recording's fast-forwarded stretches, in step order."""

    def __init__(self, items: tuple[Skip, ...] | list[Skip] = ()) -> None:
        self.items: list[Skip] = []
        self._starts: list[int] = []
        self._columns: list[int] = []
        self._ends: list[int] = []
        self._skipped: list[int] = []  # steps skipped up to and including each stretch
        for skip in items:
            self.add(skip)

    def add(self, skip: Skip) -> None:
        if self.items and skip.start < self.items[-1].end:
            raise ValueError("fast-forwarded stretches must come in step order")
        self.items.append(skip)
        self._starts.append(skip.start)
        self._columns.append(skip.column)
        self._ends.append(skip.end)
        self._skipped.append(self.skipped + skip.length)

    def drop_last(self) -> None:
        for column in (self.items, self._starts, self._columns, self._ends, self._skipped):
            column.pop()

    @property
    def skipped(self) -> int:
        """Steps fast-forwarded in all."""
        return self._skipped[-1] if self._skipped else 0

    def __len__(self) -> int:
        return len(self.items)

    def containing(self, step: int) -> Skip | None:
        """The stretch whose steps include `step` (it ran untraced), if any."""
        index = bisect_right(self._starts, step) - 1
        if index >= 0 and step < self.items[index].end:
            return self.items[index]
        return None

    def column(self, step: int) -> int | None:
        """The column of `step`, or None if it ran untraced."""
        index = bisect_right(self._starts, step) - 1
        if index < 0:
            return step
        if step < self.items[index].end:
            return None
        return step - self._skipped[index]

    def column_from(self, step: int) -> int:
        """The first column at or after `step` (past a stretch that holds it)."""
        skip = self.containing(step)
        if skip is not None:
            return skip.column
        column = self.column(step)
        assert column is not None
        return column

    def step(self, column: int) -> int:
        """The step a column records."""
        index = bisect_right(self._columns, column) - 1
        return column + (self._skipped[index] if index >= 0 else 0)

    def before(self, step: int) -> Skip | None:
        """The last stretch that ended by `step` (its registers are where a walk to it may
        start)."""
        index = bisect_right(self._ends, step) - 1
        return self.items[index] if index >= 0 else None

    def between(self, start: int, stop: int) -> list[Skip]:
        """The stretches wholly inside steps [start, stop)."""
        first = bisect_left(self._starts, start)
        last = bisect_right(self._ends, stop)
        return self.items[first:last]

    def merge_from(self, start: int) -> None:
        """The stretches from step `start` on (pieces of one fast-forward, end to end) as one."""
        first = bisect_left(self._starts, start)
        pieces = self.items[first:]
        if len(pieces) < 2:
            return
        counts: dict[str, int] = {}
        for piece in pieces:
            for name, count in piece.counts:
                counts[name] = counts.get(name, 0) + count
        head, tail = pieces[0], pieces[-1]
        while len(self.items) > first:
            self.drop_last()
        self.add(replace(head, end=tail.end, counts=tuple(counts.items()), after=tail.after))
