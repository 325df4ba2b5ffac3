"""What crosses the monitor's boundary: the guest contract (docs/design.md, "The guest contract"),
the modes, the states of a VM and the reasons a run ends.

Closed sets are `StrEnum`s: they compare, print and serialise as the strings the CLI, the
JSON, the trace files and the lessons have always used, and a misspelt one fails at once.
Nothing here imports the rest of the monitor, so every module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# ---------------------------------------------------------------------- the guest contract
DEFAULT_RAM = 4 << 20
LOAD_ADDRESS = 0x00100000  # image loaded and entered here (`org 0x100000`)
LOADER_GDT = 0x800
LOADER_GDT_LIMIT = 0x2F
# null, 0x08 code DPL0, 0x10 data DPL0, 0x18 code DPL3, 0x20 data DPL3, 0x28 null (for a TSS)
LOADER_GDT_ENTRIES = (
    0,
    0x00CF9B000000FFFF,
    0x00CF93000000FFFF,
    0x00CFFB000000FFFF,
    0x00CFF3000000FFFF,
    0,
)
KERNEL_CS, KERNEL_DS = 0x08, 0x10


class Mode(StrEnum):
    """How a VM's guest kernel runs; bare metal first, the reference for equivalence."""

    NATIVE = "native"  # bare metal: no monitor
    TRAP = "trap"  # trap-and-emulate
    BT = "bt"  # binary translation
    PV = "pv"  # paravirtualization (a ported kernel calls the monitor)

    @classmethod
    def parse(cls, name: str) -> Mode:
        """The mode `name` names (ValueError listing the modes if none)."""
        try:
            return cls(name)
        except ValueError:
            modes = ", ".join(cls)
            raise ValueError(f"unknown mode {name!r} (modes: {modes})") from None


class ExitReason(StrEnum):
    """Why a run stopped."""

    DEBUG_EXIT = "debug_exit"  # the guest wrote its status to port 0x501
    HALTED = "halted"  # HLT or `jmp $` with interrupts off (or no interrupt can ever come)
    CRASHED = "crashed"  # triple fault, fetch outside RAM, monitor error
    BUDGET = "budget"  # the instruction budget is used up: the VM can go on
    UNSUPPORTED = "unsupported"  # a privileged operation this monitor does not model
    INTERRUPTED = "interrupted"  # stopped from outside (Ctrl-C): the VM can go on
    RESET = "reset"  # the guest reset the machine (8042 pulse of the reset line)


class VmState(StrEnum):
    """Where a VM is in its life (the `state` of `VmStateChanged`, the UI, the lessons)."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    EXITED = "exited"
    CRASHED = "crashed"
    UNSUPPORTED = "unsupported"
    RESET = "reset"
    DESTROYED = "destroyed"


_STATE_AFTER = {
    ExitReason.DEBUG_EXIT: VmState.EXITED,
    ExitReason.BUDGET: VmState.PAUSED,
    ExitReason.INTERRUPTED: VmState.PAUSED,
}


@dataclass(frozen=True, slots=True)
class ExitInfo:
    reason: ExitReason
    status: int | None = None  # the debug-exit byte
    detail: str = ""

    @property
    def final(self) -> bool:
        """The VM stopped for good (anything but a used-up budget or an interruption)."""
        return self.reason not in (ExitReason.BUDGET, ExitReason.INTERRUPTED)

    @property
    def state(self) -> VmState:
        """The VM's state after this exit."""
        return _STATE_AFTER.get(self.reason) or VmState(self.reason.value)
