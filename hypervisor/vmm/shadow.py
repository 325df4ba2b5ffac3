"""Shadow descriptor tables: the tables the real CPU uses while a guest runs deprivileged.

Ring compression: the guest kernel runs at real CPL 1, so every DPL 0 code/data descriptor of
the guest's GDT is copied with DPL 1 — the kernel's own selectors keep working, and reading
them with LAR shows the difference (a hole the lesson points at).

Two views of the same table: while the guest kernel runs, the guest's DPL 3 code descriptors
are marked not present. An IRETD (or far RET) from the kernel to user mode would otherwise run
directly at CPL 1 — it is allowed to return to an outer ring — and silently leave the virtual
IF and CPL behind. With user code hidden it faults (#NP) and the monitor emulates the return.
While the guest's user code runs, the user view has them present.

The monitor's own descriptors sit at the top of the 64 KiB table, out of a guest's reach.
"""

from __future__ import annotations

from dataclasses import replace

from hypervisor.machine.descriptors import (
    ACCESS_ACCESSED,
    DESCRIPTOR_SIZE,
    SegmentDescriptor,
    flat_descriptor,
)

SHADOW_GDT_SIZE = 0x10000
MONITOR_CODE0 = 0xFFF0
MONITOR_DATA0 = 0xFFF8
MONITOR_CODE1 = 0xFFE0
MONITOR_DATA1 = 0xFFE8
MONITOR_CODE3 = 0xFFD0
MONITOR_DATA3 = 0xFFD8
MONITOR_TSS = 0xFFC8
FIRST_MONITOR_SELECTOR = MONITOR_TSS
GUEST_LIMIT = FIRST_MONITOR_SELECTOR - 1  # guest entries beyond this are not shadowed

_MONITOR_ENTRIES = {
    MONITOR_CODE0: flat_descriptor(0x9B),
    MONITOR_DATA0: flat_descriptor(0x93),
    MONITOR_CODE1: flat_descriptor(0xBB),
    MONITOR_DATA1: flat_descriptor(0xB3),
    MONITOR_CODE3: flat_descriptor(0xFB),
    MONITOR_DATA3: flat_descriptor(0xF3),
}


def monitor_entries(tss_base: int) -> dict[int, SegmentDescriptor]:
    tss = SegmentDescriptor(base=tss_base, limit=0x67, access=0x8B, flags=0x0)  # busy 32-bit TSS
    return {**_MONITOR_ENTRIES, MONITOR_TSS: tss}


def compress(descriptor: SegmentDescriptor) -> SegmentDescriptor:
    """Ring compression of one guest descriptor: DPL 0 code/data becomes DPL 1.

    Code/data entries are also marked accessed: the shadow table is read-only to the guest's
    CPU, so the CPU must never need to set that bit itself.
    """
    if not descriptor.is_code_or_data:
        return descriptor
    descriptor = replace(descriptor, access=descriptor.access | ACCESS_ACCESSED)
    return descriptor.with_dpl(1) if descriptor.dpl == 0 else descriptor


class ShadowGdt:
    """Builds the real GDT image from the guest's GDT bytes, in kernel or user view."""

    def __init__(self) -> None:
        self.guest_bytes = b""
        self._kernel = b""
        self._user = b""
        self.hidden_user_code: list[int] = []  # selectors hidden in the kernel view

    def update(self, guest_bytes: bytes) -> bool:
        """Rebuild from the guest's table; False when nothing changed."""
        guest_bytes = guest_bytes[: GUEST_LIMIT + 1]
        if guest_bytes == self.guest_bytes and self._kernel:
            return False
        self.guest_bytes = guest_bytes
        kernel, user = bytearray(), bytearray()
        self.hidden_user_code = []
        for offset in range(0, len(guest_bytes) - DESCRIPTOR_SIZE + 1, DESCRIPTOR_SIZE):
            raw = guest_bytes[offset : offset + DESCRIPTOR_SIZE]
            if offset == 0:
                kernel += raw
                user += raw
                continue
            shadow = compress(SegmentDescriptor.unpack(raw))
            user += shadow.pack()
            if shadow.is_code and shadow.dpl == 3 and shadow.present:
                self.hidden_user_code.append(offset)
                shadow = SegmentDescriptor(
                    shadow.base, shadow.limit, shadow.access & 0x7F, shadow.flags
                )
            kernel += shadow.pack()
        self._kernel, self._user = bytes(kernel), bytes(user)
        return True

    def image(self, user_view: bool) -> bytes:
        return self._user if user_view else self._kernel
