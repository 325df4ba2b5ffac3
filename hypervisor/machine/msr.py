"""The model-specific registers of vmlab's one CPU: one table, the same in every mode.

Unicorn 2.1.4 cannot hook RDMSR or WRMSR and answers them with QEMU's TCG helpers, which
read 0 for an MSR they do not know and hold no time stamp counter (docs/unicorn-facts.md,
fact 16). So vmlab answers them itself: a monitor emulates the instructions its guest
kernel faults on (`vmm/emulate.py`), and bare metal stops before each RDMSR/WRMSR it runs
(`vmm/native.py`). Both ask this table, which answers as QEMU's one-CPU PC does (values
read from `qemu-system-i386 -kernel`), except that an MSR the table does not list raises
#GP as hardware does (QEMU's TCG reads 0 there):

- IA32_TIME_STAMP_COUNTER: the instruction clock plus an offset; a write sets the offset,
  so RDTSC and RDMSR then count on from the value written;
- IA32_APIC_BASE: the local APIC's own register (`devices/lapic.py`: 0xFEE00900, the
  xAPIC at 0xFEE00000, enabled, the bootstrap processor; clearing bit 11 turns it off);
- SYSENTER_CS/ESP/EIP, IA32_MISC_ENABLE (fast strings), the MTRRs and PAT: stored, with
  QEMU's reset values; MTRRcap reads 0 as on QEMU's `qemu32` CPU (no MTRR feature), and
  IA32_PLATFORM_ID 0 and IA32_BIOS_SIGN_ID (microcode revision 1) read as QEMU's.

A writable MSR keeps what is written, except bits the hardware reserves: a write that sets
one raises #GP, as does any write to a read-only MSR. Values live in a plain dict of
(index -> value), the virtual CPU's for a monitor and bare metal's own, so a checkpoint
keeps them; IA32_TSC is kept there as its offset from the instruction clock.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from hypervisor.machine.cpu import CpuState

MASK64 = (1 << 64) - 1


class Msr(IntEnum):
    TSC = 0x10
    PLATFORM_ID = 0x17
    APIC_BASE = 0x1B
    BIOS_SIGN_ID = 0x8B
    MTRRCAP = 0xFE
    SYSENTER_CS = 0x174
    SYSENTER_ESP = 0x175
    SYSENTER_EIP = 0x176
    MISC_ENABLE = 0x1A0
    PAT = 0x277
    MTRR_DEF_TYPE = 0x2FF


class ApicBase(Protocol):
    """The local APIC's IA32_APIC_BASE, which lives in the device (`devices/lapic.py`)."""

    apic_base: int


class MsrFault(Exception):
    """RDMSR or WRMSR the CPU refuses with #GP(0)."""


@dataclass(frozen=True, slots=True)
class MsrSpec:
    name: str
    reset: int = 0
    writable: int = MASK64  # bits a write may set (a write setting another raises #GP)
    read_only: bool = False
    kept: int = MASK64  # bits a write keeps (the rest are dropped, as QEMU's CPU does)


APIC_BASE_RESET = 0xFEE00900  # base 0xFEE00000, bit 11 enabled, bit 8 bootstrap processor
_APIC_BSP = 1 << 8
_PAT_RESET = 0x0007040600070406  # WB, WT, UC-, UC in each half
_PAT_TYPES = frozenset({0, 1, 4, 5, 6, 7})  # UC, WC, WT, WP, WB, UC-: 2, 3 and >7 reserved
_PHYSICAL = (1 << 36) - 1  # a 36-bit physical address: QEMU's qemu32 CPU


def _mtrrs() -> dict[int, MsrSpec]:
    """The variable-range pairs (8, as a P6 has), the fixed ranges and the default type."""
    base, mask = _PHYSICAL & ~0xF00, _PHYSICAL & ~0x7FF  # a type in base, "valid" in mask
    variable = {
        0x200 + i: MsrSpec(
            f"IA32_MTRR_PHYS{'MASK' if i & 1 else 'BASE'}{i // 2}", writable=mask if i & 1 else base
        )
        for i in range(16)
    }
    fixed = (0x250, 0x258, 0x259, *range(0x268, 0x270))
    return variable | {i: MsrSpec(f"IA32_MTRR_FIX_{i:#x}") for i in fixed}


TABLE: dict[int, MsrSpec] = {
    Msr.TSC: MsrSpec("IA32_TIME_STAMP_COUNTER"),
    Msr.PLATFORM_ID: MsrSpec("IA32_PLATFORM_ID", read_only=True),
    Msr.APIC_BASE: MsrSpec(
        "IA32_APIC_BASE", APIC_BASE_RESET, writable=0xFFFFF000 & _PHYSICAL | 1 << 11 | _APIC_BSP
    ),
    Msr.BIOS_SIGN_ID: MsrSpec("IA32_BIOS_SIGN_ID", 1 << 32),
    Msr.MTRRCAP: MsrSpec("IA32_MTRRCAP", read_only=True),
    Msr.SYSENTER_CS: MsrSpec("IA32_SYSENTER_CS", kept=0xFFFF),  # a selector
    Msr.SYSENTER_ESP: MsrSpec("IA32_SYSENTER_ESP", kept=0xFFFFFFFF),  # a 32-bit CPU's
    Msr.SYSENTER_EIP: MsrSpec("IA32_SYSENTER_EIP", kept=0xFFFFFFFF),
    Msr.MISC_ENABLE: MsrSpec("IA32_MISC_ENABLE", 1),  # fast string operations enabled
    Msr.PAT: MsrSpec("IA32_PAT", _PAT_RESET),
    Msr.MTRR_DEF_TYPE: MsrSpec("IA32_MTRR_DEF_TYPE", writable=0xCFF),
    **_mtrrs(),
}


def name(index: int) -> str:
    spec = TABLE.get(index)
    return spec.name if spec else f"MSR {index:#x}"


def time_stamp(clock: int, stored: Mapping[int, int]) -> int:
    """The TSC (RDTSC, RDMSR 0x10) at instruction-clock tick `clock`."""
    return (clock + stored.get(Msr.TSC, 0)) & MASK64


def read(index: int, stored: Mapping[int, int], clock: int, apic: ApicBase | None = None) -> int:
    """RDMSR `index`; MsrFault if this CPU has no such MSR."""
    spec = TABLE.get(index)
    if spec is None:
        raise MsrFault(f"RDMSR of {name(index)}: no such MSR on this CPU")
    if index == Msr.APIC_BASE and apic is not None:
        return apic.apic_base
    if index == Msr.TSC:
        return time_stamp(clock, stored)
    if index == Msr.BIOS_SIGN_ID:
        return spec.reset  # the microcode revision is the firmware's, not what was written
    return stored.get(index, spec.reset)


def write(
    index: int,
    value: int,
    stored: MutableMapping[int, int],
    clock: int,
    apic: ApicBase | None = None,
) -> None:
    """WRMSR `index` = `value`; MsrFault where the hardware raises #GP."""
    spec = TABLE.get(index)
    if spec is None:
        raise MsrFault(f"WRMSR of {name(index)}: no such MSR on this CPU")
    if spec.read_only or value & ~spec.writable & MASK64:
        raise MsrFault(f"WRMSR of {value:#x} to {spec.name}: refused (#GP)")
    if index == Msr.PAT and any((value >> (8 * i)) & 0xFF not in _PAT_TYPES for i in range(8)):
        raise MsrFault(f"WRMSR of {value:#x} to IA32_PAT: a reserved memory type (#GP)")
    if index == Msr.TSC:
        stored[index] = (value - clock) & MASK64
    elif index == Msr.APIC_BASE and apic is not None:
        apic.apic_base = value
    elif index == Msr.APIC_BASE:
        stored[index] = value & ~_APIC_BSP | _APIC_BSP  # the BSP flag is the hardware's
    elif index != Msr.BIOS_SIGN_ID:
        stored[index] = value & spec.kept


def execute(
    state: CpuState,
    wrmsr: bool,
    stored: MutableMapping[int, int],
    clock: int,
    apic: ApicBase | None = None,
) -> None:
    """RDMSR (or WRMSR) on `state`'s ECX and EDX:EAX (MsrFault: #GP): every mode's way in."""
    if wrmsr:
        write(state.ecx, state.edx << 32 | state.eax, stored, clock, apic)
    else:
        value = read(state.ecx, stored, clock, apic)
        state.eax, state.edx = value & 0xFFFFFFFF, value >> 32
