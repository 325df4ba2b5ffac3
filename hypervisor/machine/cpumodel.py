"""The CPU as a guest probes it: a fixed CPUID model and a time stamp counter on the
instruction clock.

Left alone, unicorn answers CPUID with QEMU's own CPU model (features vmlab does not stand
behind) and RDTSC with the host's counter, so a guest could tell the host's speed and two
runs of one guest could differ. vmlab answers both itself, in every mode (neither
instruction is privileged, so a guest kernel executes them directly under every monitor):

- CPUID describes "GenuineIntel", family 6 model 1 stepping 9 (a Pentium Pro-class part,
  so kernels take their P6 paths), with only the features vmlab provides and tests: FPU
  (x87), PSE (4 MiB pages, in every mode: docs/paging.md), TSC, MSR (RDMSR/WRMSR,
  `msr.py`), CX8 (CMPXCHG8B), APIC (the local APIC, `devices/lapic.py`), CMOV, PGE
  (CR4.PGE and global pages: TLBs, shadow or real, drop them on INVLPG and on a CR4 paging
  change; tests/guests/pge.asm), PAT (the PAT MSR, `msr.py`, tests/guests/msr_probes.asm;
  memory types change nothing here), and the SIMD set QEMU's `qemu32` offers: MMX, FXSR,
  SSE, SSE2 and (ECX) SSE3 (the guest's FPU state is kept across world switches,
  `fpucarry.py`; a monitor mirrors CR4.OSFXSR; tests/guests/simd.asm). Not advertised,
  because vmlab does not model or check them: VME, DE, PAE, MCE, SEP, MTRR, MCA
  (docs/platform.md says why for each).
  Maximum basic leaf 1, maximum extended leaf 0x80000000; as on Intel parts, a leaf above
  the maximum answers as the highest basic leaf does.
- RDTSC reads the machine's instruction clock, the PIT's input clock: one tick per retired
  guest instruction. Time travel and replays see exact values. RDTSCP, which the model
  does not offer, raises #UD (executors stop before it: `Machine.stop_before`); the hook
  here answers it (TSC_AUX 0) only where nothing can stop before it (VMLAB_CLOCK=count).
  With CR4.TSD set outside ring 0 the hook leaves the instruction to unicorn, which raises
  the #GP (a monitor mirrors its guest's CR4.TSD into the real CR4 for this).
"""

from __future__ import annotations

from collections.abc import Callable

from unicorn import UC_HOOK_INSN, Uc
from unicorn import x86_const as x
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_CPUID_CFUNC
from unicorn.unicorn_py3.unicorn import uccallback

from hypervisor.machine.cpu import CR4_TSD

VENDOR = b"GenuineIntel"
FAMILY, MODEL, STEPPING = 6, 1, 9
MAX_BASIC, MAX_EXTENDED = 1, 0x80000000
FEATURE_FPU, FEATURE_PSE, FEATURE_TSC, FEATURE_MSR = 1 << 0, 1 << 3, 1 << 4, 1 << 5
FEATURE_CX8, FEATURE_APIC, FEATURE_PGE, FEATURE_CMOV = 1 << 8, 1 << 9, 1 << 13, 1 << 15
FEATURE_PAT = 1 << 16
FEATURE_MMX, FEATURE_FXSR, FEATURE_SSE, FEATURE_SSE2 = 1 << 23, 1 << 24, 1 << 25, 1 << 26
FEATURES_EDX = FEATURE_FPU | FEATURE_PSE | FEATURE_TSC | FEATURE_MSR
FEATURES_EDX |= FEATURE_CX8 | FEATURE_APIC | FEATURE_PGE | FEATURE_CMOV | FEATURE_PAT
FEATURES_EDX |= FEATURE_MMX | FEATURE_FXSR | FEATURE_SSE | FEATURE_SSE2
FEATURE_SSE3 = 1 << 0
FEATURES_ECX = FEATURE_SSE3


def cpuid(leaf: int) -> tuple[int, int, int, int]:
    """EAX, EBX, ECX, EDX for CPUID leaf `leaf` (no leaf of this model has sub-leaves)."""
    if leaf == 0:
        ebx, edx, ecx = (int.from_bytes(VENDOR[i : i + 4], "little") for i in (0, 4, 8))
        return MAX_BASIC, ebx, ecx, edx
    if leaf == MAX_EXTENDED:
        return MAX_EXTENDED, 0, 0, 0
    # leaf 1, and any leaf above a maximum: the highest basic leaf (Intel SDM, CPUID)
    return FAMILY << 8 | MODEL << 4 | STEPPING, 0, FEATURES_ECX, FEATURES_EDX


def install(uc: Uc, time_stamp: Callable[[], int]) -> None:
    """Answer CPUID, RDTSC and RDTSCP on `uc` from this model and `time_stamp()`."""

    def on_cpuid(uc: Uc, _: object) -> int:
        values = cpuid(uc.reg_read(x.UC_X86_REG_EAX))
        for reg, value in zip(_CPUID_REGS, values, strict=True):
            uc.reg_write(reg, value)
        return 1  # skip unicorn's own CPUID

    uc.hook_add(UC_HOOK_INSN, on_cpuid, None, 1, 0, x.UC_X86_INS_CPUID)
    # The Python binding lists no RDTSC hook, but unicorn's C side has one with CPUID's
    # signature (return 1: the hook did the instruction's work).
    for insn, aux in ((x.UC_X86_INS_RDTSC, False), (x.UC_X86_INS_RDTSCP, True)):
        callback = uccallback(uc, HOOK_INSN_CPUID_CFUNC)(_rdtsc(time_stamp, aux))
        uc._Uc__do_hook_add(UC_HOOK_INSN, callback, 1, 0, insn)  # type: ignore[attr-defined]  # noqa: SLF001


_CPUID_REGS = (x.UC_X86_REG_EAX, x.UC_X86_REG_EBX, x.UC_X86_REG_ECX, x.UC_X86_REG_EDX)


def _rdtsc(time_stamp: Callable[[], int], aux: bool) -> Callable[[Uc, int], int]:
    def on_rdtsc(uc: Uc, _: int) -> int:
        if uc.reg_read(x.UC_X86_REG_CR4) & CR4_TSD and uc.reg_read(x.UC_X86_REG_CS) & 3:
            return 0  # unicorn's RDTSC raises #GP: CR4.TSD outside ring 0
        tsc = time_stamp()
        uc.reg_write(x.UC_X86_REG_EAX, tsc & 0xFFFFFFFF)
        uc.reg_write(x.UC_X86_REG_EDX, (tsc >> 32) & 0xFFFFFFFF)
        if aux:
            uc.reg_write(x.UC_X86_REG_ECX, 0)  # IA32_TSC_AUX: processor 0
        return 1

    return on_rdtsc
