"""The guest-visible CPU: what a guest could observe of its processor, whatever the mode.

Each mode keeps that state its own way — bare metal in the real registers, trap-and-emulate
and paravirtualization partly in the virtual CPU (IF, IOPL, CPL, control and descriptor-table
registers) and partly in real registers of a deprivileged CPU, binary translation also in the
vCPU area and at a translation-cache address. `Executor.guest_cpu()` reads it out into this
one value, `Executor.load_guest_cpu()` puts it back in any mode: that is what makes a
suspended VM resumable under another monitor, and what a file of it holds (never unicorn's
opaque context, which differs by mode and by build).

Not held: the hidden descriptor caches of the segment registers (unicorn exposes selectors
only). On resume every segment register is loaded from the guest's GDT again, which differs
from the suspended CPU only if the guest changed a descriptor without reloading its selector.
"""

from __future__ import annotations

from dataclasses import dataclass

from unicorn import Uc
from unicorn import x86_const as x

from hypervisor.machine.cpu import STATE_FIELDS, CpuState

_FP_REGS = tuple(getattr(x, f"UC_X86_REG_FP{i}") for i in range(8))
_XMM_REGS = tuple(getattr(x, f"UC_X86_REG_XMM{i}") for i in range(8))
DEBUG_REGS = tuple(getattr(x, f"UC_X86_REG_DR{i}") for i in range(8))


@dataclass(frozen=True, slots=True)
class FpuState:
    """x87 and SSE registers: the guest runs FPU instructions directly in every mode, so
    they are the real CPU's."""

    control: int = 0x37F
    status: int = 0
    tag: int = 0
    stack: tuple[tuple[int, int], ...] = ((0, 0),) * 8  # (64-bit mantissa, 16-bit exponent)
    mxcsr: int = 0x1F80
    xmm: tuple[int, ...] = (0,) * 8  # 128-bit values

    @classmethod
    def read(cls, uc: Uc) -> FpuState:
        return cls(
            control=uc.reg_read(x.UC_X86_REG_FPCW),
            status=uc.reg_read(x.UC_X86_REG_FPSW),
            tag=uc.reg_read(x.UC_X86_REG_FPTAG),
            stack=tuple(tuple(uc.reg_read(reg)) for reg in _FP_REGS),
            mxcsr=uc.reg_read(x.UC_X86_REG_MXCSR),
            xmm=tuple(uc.reg_read(reg) for reg in _XMM_REGS),
        )

    def write(self, uc: Uc) -> None:
        uc.reg_write(x.UC_X86_REG_FPCW, self.control)
        uc.reg_write(x.UC_X86_REG_FPSW, self.status)
        uc.reg_write(x.UC_X86_REG_FPTAG, self.tag)
        for reg, value in zip(_FP_REGS, self.stack, strict=True):
            uc.reg_write(reg, value)
        uc.reg_write(x.UC_X86_REG_MXCSR, self.mxcsr)
        for reg, wide in zip(_XMM_REGS, self.xmm, strict=True):
            uc.reg_write(reg, wide)


@dataclass(frozen=True, slots=True)
class GuestCpu:
    """The guest's processor as the guest sees it, between two instructions."""

    registers: tuple[int, ...]  # CpuState's fields in order: EFLAGS with the virtual IF/IOPL
    cpl: int  # the guest's own privilege level (0 kernel, 3 user)
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    gdtr: tuple[int, int]  # (base, limit)
    idtr: tuple[int, int]
    ldtr: int  # selectors; the TSS as LTR found it
    tr: int
    tss: tuple[int, int] | None
    dr: tuple[int, ...]
    msr: tuple[tuple[int, int], ...]  # (index, value), of the MSRs the monitor models
    interrupt_shadow: bool  # one instruction after STI: no interrupt yet
    halted: bool  # HLT with interrupts on: asleep until the next interrupt
    fpu: FpuState

    def state(self) -> CpuState:
        return CpuState(*self.registers)

    @staticmethod
    def registers_of(state: CpuState) -> tuple[int, ...]:
        return tuple(getattr(state, name) for name in STATE_FIELDS)


class ResumeRefused(ValueError):
    """The guest-visible state cannot be run under the mode asked for (the reason why)."""
