"""Register state of the physical CPU, as plain data.

`CpuState` is what a world switch saves and restores; `SystemState` the control registers
and descriptor-table registers that only bare metal hands to the guest (under a monitor the
real ones belong to the monitor).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter

from unicorn import x86_const as x

GPR_NAMES = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
SEGMENT_NAMES = ("cs", "ss", "ds", "es", "fs", "gs")

UC_REG = {
    "eax": x.UC_X86_REG_EAX,
    "ecx": x.UC_X86_REG_ECX,
    "edx": x.UC_X86_REG_EDX,
    "ebx": x.UC_X86_REG_EBX,
    "esp": x.UC_X86_REG_ESP,
    "ebp": x.UC_X86_REG_EBP,
    "esi": x.UC_X86_REG_ESI,
    "edi": x.UC_X86_REG_EDI,
    "eip": x.UC_X86_REG_EIP,
    "eflags": x.UC_X86_REG_EFLAGS,
    "cs": x.UC_X86_REG_CS,
    "ss": x.UC_X86_REG_SS,
    "ds": x.UC_X86_REG_DS,
    "es": x.UC_X86_REG_ES,
    "fs": x.UC_X86_REG_FS,
    "gs": x.UC_X86_REG_GS,
}

EFLAGS_CF = 1 << 0
EFLAGS_RESERVED = 1 << 1
EFLAGS_TF = 1 << 8
EFLAGS_IF = 1 << 9
EFLAGS_IOPL = 3 << 12
EFLAGS_NT = 1 << 14
EFLAGS_RF = 1 << 16
EFLAGS_VM = 1 << 17

CR0_PE = 1 << 0
CR0_MP = 1 << 1  # WAIT/FWAIT obey TS
CR0_EM = 1 << 2  # no FPU: its instructions raise #NM
CR0_TS = 1 << 3  # task switched: the next FPU instruction raises #NM (lazy FPU switching)
CR0_ET = 1 << 4
CR0_WP = 1 << 16  # supervisor writes obey read-only pages
CR0_PG = 1 << 31
CR4_TSD = 1 << 2  # RDTSC faults outside ring 0
CR4_PSE = 1 << 4  # 4 MiB pages
CR4_OSFXSR = 1 << 9  # the OS saves SSE state with FXSAVE: SSE instructions run (else #UD)
CR4_OSXMMEXCPT = 1 << 10  # unmasked SIMD floating-point exceptions raise #XM (else #UD)
# The guest's CR4 bits the real CPU must hold too under a monitor: they decide what the
# guest's own unprivileged instructions do (RDTSC outside ring 0, SSE).
CR4_MIRRORED = CR4_TSD | CR4_OSFXSR | CR4_OSXMMEXCPT


@dataclass(slots=True)
class CpuState:
    """General registers, EIP, EFLAGS and segment selectors."""

    eax: int = 0
    ecx: int = 0
    edx: int = 0
    ebx: int = 0
    esp: int = 0
    ebp: int = 0
    esi: int = 0
    edi: int = 0
    eip: int = 0
    eflags: int = EFLAGS_RESERVED
    cs: int = 0
    ss: int = 0
    ds: int = 0
    es: int = 0
    fs: int = 0
    gs: int = 0

    def copy(self) -> CpuState:
        return CpuState(*_ALL_FIELDS(self))  # (on every world switch)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


STATE_FIELDS = tuple(f.name for f in fields(CpuState))
_ALL_FIELDS = attrgetter(*STATE_FIELDS)
STATE_REG_IDS = tuple(UC_REG[name] for name in STATE_FIELDS)


@dataclass(slots=True)
class SystemState:
    """Control and descriptor-table registers (bare metal only)."""

    cr0: int
    cr3: int
    cr4: int
    gdtr: tuple[int, int]  # (base, limit)
    idtr: tuple[int, int]
    ldtr: tuple[int, int, int, int]  # (selector, base, limit, flags) as unicorn reports it
    tr: tuple[int, int, int, int]
    cr2: int = 0  # the last page fault's linear address
