"""What virtualizing the MMU costs, per operation and per mode: wall-clock and the cost model.

    uv run python benchmarks/bench_mmu.py [--count N] [--repeat N]

Four operations, each measured in this run as N of them against one (`mmuops.asm`), or, for
the hidden fault, a kernel touching 1024 pages with paging on against off (`pagingloop.asm`):
a hidden page fault (the shadow fills in), a true one (reflected to the guest's handler), a
page-table write (ptemod) and a CR3 switch. For each mode: microseconds of this machine, and
the cycles the cost model charges (`hypervisor/vmm/costs.py`; everything the operation makes
the monitor do — a ptemod also refills the entry, a true fault also runs the guest's handler
and its IRETD). Beside them, the model's own row for the operation, and the Adams & Agesen
nanobenchmark it stands for (ASPLOS 2006, Figure 4: `pgfault`, `ptemod`, measured on a
Pentium 4 with VMware's software VMM). A mode that cannot run a paging kernel is printed as
such. mmuops is not ported: pv runs it as an unported kernel, on shadow page tables as trap
does; what pv's direct paging charges instead is printed below the table (its hypercall
rows; `bench_pv_paging.py` measures a ported kernel). A benchmark, not a test.
"""

from __future__ import annotations

import argparse

from bench_paging import HERE, OPERATIONS, hidden_fault_cost, operation_cost

from hypervisor.guest.image import GuestImage
from hypervisor.guest.nasm import assemble
from hypervisor.vmm.costs import PENTIUM4, PV_MMU_ROWS
from hypervisor.vmm.vm import Vm

MODES = ("native", "trap", "bt", "pv")
ROWS = {  # operation -> (the model's row, the paper's nanobenchmark)
    "hidden fault": ("page_fault_hidden", "pgfault (a fault the VMM absorbs)"),
    "true fault": ("page_fault_true", "pgfault (reflected to the guest)"),
    "ptemod": ("ptemod", "ptemod (+ the hidden fault that refills)"),
    "CR3 switch": ("cr3_switch", "— (mmuops: two MOV CR3 per operation)"),
}


def runs_paging(mode: str) -> str:
    """'' when `mode` runs a paging kernel, else why not."""
    data, _ = assemble(HERE / "mmuops.asm", ("CR3_SWITCH", "COUNT=2"))
    exit_info = Vm(GuestImage("mmuops", data), mode).run(10**7)
    return "" if exit_info.reason == "debug_exit" else f"{exit_info.reason}: {exit_info.detail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="operations per run")
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    args = parser.parse_args()
    modes = []
    for mode in MODES:
        why = runs_paging(mode)
        if why:
            print(f"{mode}: no paging kernel runs yet ({why})")
        else:
            modes.append(mode)
    print(f"\n{'operation':<13}" + "".join(f"{m + ' µs':>11}{m + ' cyc':>12}" for m in modes))
    for name, (row, paper) in ROWS.items():
        cells = []
        for mode in modes:
            if name == "hidden fault":
                seconds, cycles, faults = hidden_fault_cost(mode, args.repeat)
                cells.append((seconds, cycles) if faults else None)
            else:
                cells.append(operation_cost(OPERATIONS[name], mode, args.count, args.repeat))
        line = "".join(
            f"{'—':>11}{'—':>12}" if c is None else f"{c[0] * 1e6:>11.1f}{c[1]:>12,.0f}"
            for c in cells
        )
        print(f"{name:<13}{line}   model row {getattr(PENTIUM4, row):>6,.0f}  paper: {paper}")
    print(
        "\nµs: this machine's wall-clock per operation; cyc: what the cost model charges for"
        " it\n(native: the CPU's own work; its hidden fault is a TLB miss, no fault at all)."
        "\npv's direct paging (a ported kernel) instead: "
        + ", ".join(f"{call} {PENTIUM4.pv_mmu_price(call):,.0f}" for call in PV_MMU_ROWS)
        + " cycles a hypercall, and no hidden faults at all."
    )


if __name__ == "__main__":
    main()
