"""The table of execution modes: each mode and the executor that runs it, written out.

A VM looks its mode up here; the executors know nothing of this table (no registration on
import), so importing any one of them never drags in the others.
"""

from __future__ import annotations

from hypervisor.vmm.bt.executor import BinaryTranslation
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.executors import Executor
from hypervisor.vmm.native import BareMetal
from hypervisor.vmm.pv.executor import Paravirtual
from hypervisor.vmm.trap import TrapAndEmulate

MODES: dict[Mode, type[Executor]] = {
    Mode.NATIVE: BareMetal,
    Mode.TRAP: TrapAndEmulate,
    Mode.BT: BinaryTranslation,
    Mode.PV: Paravirtual,
}
