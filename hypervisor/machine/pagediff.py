"""Which pages of a guest's RAM changed since the last look, compared in place; and RAM
put back to pages kept, writing only those that differ.

The checkpoint store looks at every checkpoint (one per 50 ms of running). Copying a 32 MiB
guest's RAM into a new `bytes` to diff it costs tens of milliseconds — the copy is 8,192
fresh pages the operating system must fault in — and slicing it into pages to compare copies
it again. Here one copy is kept, updated page by page, and compared with the live RAM by
libc's `memcmp` over large chunks first (a guest writes few pages between two checkpoints):
a few milliseconds for 32 MiB, the changed pages' bytes the only new objects.
"""

from __future__ import annotations

import ctypes
import mmap

from hypervisor.machine.hostram import PAGE

_libc = ctypes.CDLL(None)  # the process's own symbols: libc's memcmp
_memcmp = _libc.memcmp
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_memcmp.restype = ctypes.c_int
CHUNK = 64 * PAGE  # compared whole first; only a chunk that differs is compared page by page
ZERO_PAGE = bytes(PAGE)


class PageDiff:
    """RAM of `size` bytes (any machine's of that size, at its host address) against the
    copy of what it held at the last `changed` call."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._copy: ctypes.Array[ctypes.c_char] | None = None

    def changed(self, ram: int) -> dict[int, bytes]:
        """The pages of the RAM at host address `ram` that differ from the copy (all of
        them the first time), by offset; the copy becomes the RAM as it is now. All-zero
        pages are the one shared `ZERO_PAGE`."""
        if self._copy is None:  # zeroed, and left untouched where RAM is zero: the system
            self._map = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE)  # gives those pages lazily
            self._copy = (ctypes.c_char * self.size).from_buffer(self._map)
            copy = ctypes.addressof(self._copy)
            pages = {o: _page(ram + o) for o in range(0, self.size, PAGE)}
            for offset, page in pages.items():
                if page is not ZERO_PAGE:
                    ctypes.memmove(copy + offset, page, PAGE)
            return pages
        copy = ctypes.addressof(self._copy)
        changed: dict[int, bytes] = {}
        for chunk in range(0, self.size, CHUNK):
            length = min(CHUNK, self.size - chunk)
            if not _memcmp(ram + chunk, copy + chunk, length):
                continue
            for offset in range(chunk, chunk + length, PAGE):
                if _memcmp(ram + offset, copy + offset, PAGE):
                    changed[offset] = _page(ram + offset)
                    ctypes.memmove(copy + offset, ram + offset, PAGE)
        return changed

    def nbytes(self) -> int:
        return self.size if self._copy is not None else 0


def write_changed(ram: int, pages: dict[int, bytes]) -> None:
    """Make the RAM at host address `ram` hold `pages` (by offset), writing only the pages
    that differ: a VM put back to a checkpoint is mostly where it was."""
    for offset, page in pages.items():
        if _memcmp(ram + offset, page, PAGE):
            ctypes.memmove(ram + offset, page, PAGE)


def _page(address: int) -> bytes:
    page = ctypes.string_at(address, PAGE)
    return ZERO_PAGE if page == ZERO_PAGE else page
