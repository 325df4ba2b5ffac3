"""The vCPU area: monitor memory the translated code reads and writes at CPL 1.

Translated kernel code cannot keep the guest's virtual IF, its virtual CS or its descriptor
table registers in the real CPU (that is the point of deprivileging), so it keeps them here,
at absolute addresses an instruction can name: CLI becomes `mov dword [vIF], 0`, PUSHF
merges [vIF] and [vIOPL] into the real flags, `mov eax, cs` reads [vCS]. The monitor writes
the fields before it enters the translation cache and reads them back when it leaves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

FIELDS = (
    "vif",  # 0 or 0x200: the guest's virtual EFLAGS.IF, as the bit itself
    "viopl",  # the guest's virtual IOPL, as EFLAGS bits 12-13
    "exit",  # which exit stub or callout sent the CPU to the door
    "icount",  # guest kernel instructions executed from the translation cache
    "budget",  # guest instructions the TC may still run before it must call the monitor
    "pending",  # 1 while an interrupt waits at the PIC: STI/POPF then leave for the monitor
    "resume_geip",  # the guest EIP to deliver it at (after the STI/POPF)
    "target",  # guest EIP of an indirect branch, for the lookup
    "vcs",  # the guest's CS and SS as it believes them to be (RPL 0)
    "vss",
    "vcr0",
    "vtr",
    "vldtr",
    "gdtr_limit",
    "gdtr_base",
    "idtr_limit",
    "idtr_base",
    "save_a",  # scratch for inline sequences that need a register
    "save_b",
)


@dataclass(frozen=True)
class VcpuArea:
    base: int

    def __getattr__(self, name: str) -> int:
        if name not in FIELDS:  # before touching `base`: copy and pickle probe a bare instance
            raise AttributeError(name)
        return self.base + 4 * FIELDS.index(name)

    @staticmethod
    def size() -> int:
        return 4 * len(FIELDS)

    @staticmethod
    def pack(values: dict[str, int]) -> bytes:
        return struct.pack(f"<{len(FIELDS)}I", *(values.get(f, 0) & 0xFFFFFFFF for f in FIELDS))

    @staticmethod
    def unpack(raw: bytes) -> dict[str, int]:
        return dict(
            zip(FIELDS, struct.unpack(f"<{len(FIELDS)}I", raw[: 4 * len(FIELDS)]), strict=True)
        )
