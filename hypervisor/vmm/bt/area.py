"""The vCPU area: monitor memory the translated code reads and writes at CPL 1.

Translated kernel code cannot keep the guest's virtual IF, its virtual CS or its descriptor
table registers in the real CPU (that is the point of deprivileging), so it keeps them here,
at absolute addresses an instruction can name: CLI becomes `mov dword [vIF], 0`, PUSHF
merges [vIF] and [vIOPL] into the real flags, `mov eax, cs` reads [vCS]. The monitor writes
the fields before it enters the translation cache and reads them back when it leaves.

Two pages. Translated code stores only into the first (TC_FIELDS); the second
(MONITOR_FIELDS) only the monitor writes, and it is read-only to the CPU, so no guest store
can change it. Unicorn does not enforce segment limits (docs/unicorn-facts.md, fact 6), so the guest
kernel - whose code runs in the same cache at the same privilege - can also store into the
first page: the monitor checks those fields each time the CPU leaves the cache.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypervisor.machine.hostram import PAGE

TC_FIELDS = (
    "vif",  # 0 or 0x200: the guest's virtual EFLAGS.IF, as the bit itself
    "viopl",  # the guest's virtual IOPL, as EFLAGS bits 12-13
    "budget",  # guest instructions the TC may still run before it must call the monitor;
    # what it spends is how the monitor counts the guest instructions the TC ran
    "exit",  # which exit stub or callout sent the CPU to the door
    "target",  # guest EIP of an indirect branch, for the lookup
    "resume_geip",  # the guest EIP to deliver a waiting interrupt at (after an STI/POPF)
    "save_a",  # scratch for inline sequences that need a register
    "save_b",
    "geip",  # the guest EIP of the last instruction that may touch memory, stored before it
    # runs: unicorn's EIP inside a memory callback is the start of the block (unicorn fact 13)
)
MONITOR_FIELDS = (
    "pending",  # 1 while an interrupt waits at the PIC: STI/POPF then leave for the monitor
    "vcs",  # the guest's CS and SS as it believes them to be (RPL 0)
    "vss",
    "vcr0",
    "vtr",
    "vldtr",
    "gdtr_limit",
    "gdtr_base",
    "idtr_limit",
    "idtr_base",
)


@dataclass(frozen=True)
class VcpuArea:
    base: int  # the first page (translated code stores here); the second follows it

    def __getattr__(self, name: str) -> int:
        if name in TC_FIELDS:
            return self.base + 4 * TC_FIELDS.index(name)
        if name in MONITOR_FIELDS:
            return self.monitor_page + 4 * MONITOR_FIELDS.index(name)
        raise AttributeError(name)

    @property
    def monitor_page(self) -> int:
        return self.base + PAGE

    @staticmethod
    def pack(fields: tuple[str, ...], values: dict[str, int]) -> bytes:
        return struct.pack(f"<{len(fields)}I", *(values.get(f, 0) & 0xFFFFFFFF for f in fields))

    @staticmethod
    def unpack(fields: tuple[str, ...], raw: bytes) -> dict[str, int]:
        return dict(zip(fields, struct.unpack(f"<{len(fields)}I", raw), strict=True))
