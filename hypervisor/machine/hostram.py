"""Host RAM: one buffer from which every machine's guest RAM is carved
(docs/unicorn-facts.md, fact 8).

Each VM's RAM is a slice of this buffer mapped into its own unicorn instance with
`mem_map_ptr`, so the host memory map a lesson shows is the real one. The buffer is an
anonymous memory mapping: the system gives its pages when first touched, so a kernel given
128 MiB that uses a few costs a few (a ctypes array would be written whole at creation).
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from dataclasses import dataclass
from typing import Protocol

PAGE = 0x1000


@dataclass(frozen=True, slots=True)
class RamSlice:
    """A host-physical range owned by one user (a VM, the monitor)."""

    start: int
    size: int
    owner: str

    @property
    def end(self) -> int:
        return self.start + self.size


class OutOfHostMemory(MemoryError):
    pass


class RamPool(Protocol):
    """Where a machine's RAM comes from: a slice of host RAM, or a clone's copy-on-write
    mapping (cowram.py)."""

    def allocate(self, size: int, owner: str) -> RamSlice: ...

    def pointer(self, piece: RamSlice) -> int: ...

    def free(self, piece: RamSlice) -> None: ...


class HostRam:
    """A page-aligned host buffer with a first-fit allocator of slices."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE:
            raise ValueError("host RAM size must be a positive multiple of 4 KiB")
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        self._buffer = (ctypes.c_ubyte * size).from_buffer(self._map)
        self._slices: list[RamSlice] = []

    @property
    def base_address(self) -> int:
        return ctypes.addressof(self._buffer)

    @property
    def slices(self) -> list[RamSlice]:
        return sorted(self._slices, key=lambda s: s.start)

    def allocate(self, size: int, owner: str) -> RamSlice:
        size = (size + PAGE - 1) & ~(PAGE - 1)
        cursor = 0
        for used in self.slices:
            if used.start - cursor >= size:
                break
            cursor = used.end
        if cursor + size > self.size:
            raise OutOfHostMemory(f"no {size // 1024} KiB free in host RAM for {owner}")
        piece = RamSlice(cursor, size, owner)
        self._slices.append(piece)
        if sys.platform == "linux":  # zero again as the system gives pages: none touched now
            # (a private mapping: a shared one would keep its contents through MADV_DONTNEED)
            self._map.madvise(mmap.MADV_DONTNEED, cursor, size)
        else:
            ctypes.memset(self.base_address + cursor, 0, size)
        return piece

    def free(self, piece: RamSlice) -> None:
        self._slices.remove(piece)

    def pointer(self, piece: RamSlice) -> int:
        return self.base_address + piece.start
