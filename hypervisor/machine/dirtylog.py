"""Dirty logging by write protection: which guest RAM pages were written since last asked.

Live migration copies a VM's RAM while the VM keeps running, so it must learn which pages
the guest wrote after they were copied. Real monitors do it as this does: write-protect
every page (DESIGN.md fact 7); the first store into a page faults, the page is marked dirty
and made writable again, and the store is retried; each round of the copy takes the dirty
set and protects those pages again. Stores the monitor itself makes into guest RAM (an
interrupt frame, an emulated instruction's store) are logged by `Machine.write`, and pages
that binary translation aliases writable elsewhere are counted dirty every round.
"""

from __future__ import annotations

from collections.abc import Iterable

from unicorn import UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ, Uc

from hypervisor.machine.hostram import PAGE

_READ_ONLY = UC_PROT_READ | UC_PROT_EXEC


class DirtyLog:
    def __init__(self, uc: Uc, ram_size: int, keep_protected: set[int]) -> None:
        """`keep_protected`: pages protected for another reason (the owner's traced code
        pages), which must stay read-only when the log lets go of them."""
        self.uc = uc
        self.keep_protected = keep_protected
        self.watched = set(range(0, ram_size, PAGE))
        self.dirty: set[int] = set()
        uc.mem_protect(0, ram_size, _READ_ONLY)

    def store_hit(self, page: int) -> bool:
        """A guest store faulted on `page`. True if the log protected it: it is dirty now,
        and writable again unless protected for the owner too."""
        if page not in self.watched:
            return False
        self.watched.discard(page)
        self.dirty.add(page)
        if page not in self.keep_protected:
            self.uc.mem_protect(page, PAGE, UC_PROT_ALL)
        return True

    def written(self, address: int, size: int) -> None:
        """The monitor wrote guest RAM directly (no fault sees that)."""
        last = (address + max(size, 1) - 1) & ~(PAGE - 1)
        self.dirty.update(range(address & ~(PAGE - 1), last + 1, PAGE))

    def take(self, also: Iterable[int] = ()) -> list[int]:
        """The pages written since the last take (with `also`: pages written behind the log's
        back), each protected again for the next round."""
        dirty = sorted(self.dirty.union(also))
        self.dirty = set()
        for first, last in _runs(p for p in dirty if p not in self.watched):
            self.uc.mem_protect(first, last + PAGE - first, _READ_ONLY)
        self.watched.update(dirty)
        return dirty

    def stop(self) -> None:
        """Let go of every page: writable again, but for those protected for the owner."""
        free = sorted(self.watched - self.keep_protected)
        for first, last in _runs(free):
            self.uc.mem_protect(first, last + PAGE - first, UC_PROT_ALL)
        self.watched.clear()


def _runs(pages: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted pages joined into (first, last) runs of consecutive pages."""
    runs: list[list[int]] = []
    for page in pages:
        if runs and runs[-1][1] + PAGE == page:
            runs[-1][1] = page
        else:
            runs.append([page, page])
    return [(first, last) for first, last in runs]
