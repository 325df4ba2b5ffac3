"""The virtual CPU: the part of the guest's CPU state the monitor keeps, because the real CPU
is running the guest deprivileged and cannot hold it.

What lives here is exactly what a deprivileged guest must not be allowed to change on the real
CPU: the interrupt flag and I/O privilege level it believes it has, its privilege level, its
control, debug and descriptor-table registers, and its MSRs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypervisor.machine.cpu import CR0_ET, CR0_PE, EFLAGS_IF, EFLAGS_IOPL


@dataclass(slots=True)
class VirtualCpu:
    cpl: int = 0  # the guest's own privilege level: 0 kernel, 3 user
    interrupts_enabled: bool = False  # virtual EFLAGS.IF
    iopl: int = 0  # virtual EFLAGS.IOPL
    cr0: int = CR0_PE | CR0_ET
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    gdtr: tuple[int, int] = (0, 0)  # (base, limit) of the guest's own GDT
    idtr: tuple[int, int] = (0, 0)
    ldtr: int = 0
    tr: int = 0
    tss: tuple[int, int] | None = None  # (base, limit) of the guest TSS loaded by LTR
    dr: list[int] = field(default_factory=lambda: [0] * 8)
    msr: dict[int, int] = field(default_factory=dict)  # written MSRs (machine/msr.py)
    interrupt_shadow: bool = False  # one instruction after STI/MOV SS: no interrupt yet

    def virtual_eflags(self, real: int) -> int:
        """EFLAGS as the guest should see them: real arithmetic flags, virtual IF and IOPL."""
        flags = real & ~(EFLAGS_IF | EFLAGS_IOPL)
        if self.interrupts_enabled:
            flags |= EFLAGS_IF
        return flags | (self.iopl << 12)

    def load_eflags(self, value: int) -> None:
        """Take IF and IOPL from a value the guest kernel wrote (IRET, emulated POPF)."""
        self.interrupts_enabled = bool(value & EFLAGS_IF)
        self.iopl = (value >> 12) & 3
