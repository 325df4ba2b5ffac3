"""Copy-on-write guest RAM: clones of one suspended VM share its pages in host memory.

The suspended VM's RAM is written once into an anonymous memory file (memfd); each clone
maps that file privately (MAP_PRIVATE) and hands the mapping to its unicorn instance with
`mem_map_ptr` (DESIGN.md fact 8). Until a clone writes a page, all clones read the one copy
of it in the host's page cache; the guest's first store to a page makes the host kernel give
that clone a private copy — the same mechanism as a real host's copy-on-write sharing of
cloned VMs' memory. Which pages are still shared is read back from /proc/self/pagemap (a
present page that is not a file page is private), so the numbers shown are the host's own.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

from hypervisor.machine.hostram import PAGE, RamSlice

_PRESENT = 1 << 63
_FILE_PAGE = 1 << 61  # file-backed or shared anonymous: still the template's page


class SharedRam:
    """The one host copy of a RAM image that clones share."""

    def __init__(self, image: bytes, name: str = "template") -> None:
        if not image or len(image) % PAGE:
            raise ValueError("shared RAM is a positive multiple of 4 KiB")
        self.size = len(image)
        self.name = name
        self.fd = os.memfd_create(f"vmlab-{name}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)  # reads as zeros, and takes no memory, until written
        zero = bytes(PAGE)
        for offset in range(0, self.size, PAGE):
            if image[offset : offset + PAGE] != zero:
                os.pwrite(self.fd, image[offset : offset + PAGE], offset)

    def clone(self, owner: str) -> CloneRam:
        return CloneRam(self, owner)

    def close(self) -> None:
        os.close(self.fd)


class CloneRam:
    """One clone's view of the shared RAM: the host-RAM interface a Machine allocates its
    RAM from (`allocate`, `pointer`, `free`), backed by a private mapping of the template."""

    def __init__(self, shared: SharedRam, owner: str) -> None:
        self.shared = shared
        self.size = shared.size
        self._map = mmap.mmap(
            shared.fd,
            shared.size,
            flags=mmap.MAP_PRIVATE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
        )
        self._anchor = ctypes.c_char.from_buffer(self._map)
        self.slice = RamSlice(0, shared.size, owner)
        self._given = False

    def allocate(self, size: int, owner: str) -> RamSlice:
        """The whole mapping, once, and not zeroed (that would write every page)."""
        if self._given or size != self.size:
            raise ValueError(f"a clone's RAM is one slice of {self.size} bytes")
        self._given = True
        self.slice = RamSlice(0, size, owner)
        return self.slice

    def pointer(self, piece: RamSlice) -> int:
        return ctypes.addressof(self._anchor)

    def free(self, piece: RamSlice) -> None:
        del self._anchor
        self._map.close()

    def private_pages(self) -> list[int]:
        """Guest page numbers this clone has its own copy of (it wrote them)."""
        first = ctypes.addressof(self._anchor) // PAGE
        count = self.size // PAGE
        with open("/proc/self/pagemap", "rb") as pagemap:
            pagemap.seek(first * 8)
            entries = struct.unpack(f"<{count}Q", pagemap.read(count * 8))
        return [i for i, e in enumerate(entries) if e & _PRESENT and not e & _FILE_PAGE]
