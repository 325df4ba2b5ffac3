"""Paging costs nothing per access: the same kernel loop with paging on and off, per mode.

    uv run python benchmarks/bench_paging.py [--iterations N]

Unicorn's own MMU walks the guest's page tables (on a TLB miss) while the guest runs; Python
runs only at faults and interrupt delivery, never per access. The loop loads and stores across
16 pages. Under trap the CPU runs on the monitor's shadow tables: a few hidden faults fill
them, then the loop runs as on bare metal; under bt its translation runs on the same shadows
(chained to itself within its page). Prints instructions per second and the ratio of paging
on to off (targets: >= 90% on bare metal, >= 80% under bt) and the wall-clock cost of one
hidden page fault (a guest touching 1024 pages once, with paging on against off). What each
MMU operation costs per mode, in wall-clock and in the cost model: `bench_mmu.py` (with
`operation_cost` from here). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hypervisor.guest.image import GuestImage
from hypervisor.guest.nasm import assemble
from hypervisor.vmm.vm import Vm

HERE = Path(__file__).parent


MODES = ("native", "trap", "bt")


def build(paging: bool, iterations: int, touch: bool = False) -> GuestImage:
    defines = (f"ITERATIONS={iterations}",) + (("PAGING",) if paging else ())
    data, _ = assemble(HERE / "pagingloop.asm", defines + (("TOUCH",) if touch else ()))
    return GuestImage(f"pagingloop-{'on' if paging else 'off'}", data)


def timed(image: GuestImage, mode: str) -> tuple[float, Vm]:
    vm = Vm(image, mode)
    began = time.perf_counter()
    exit_info = vm.run(10**12)
    elapsed = time.perf_counter() - began
    assert exit_info.reason == "debug_exit", exit_info
    return elapsed, vm


def speed(image: GuestImage, mode: str) -> float:
    elapsed, vm = timed(image, mode)
    return vm.stats.total / elapsed


def hidden_fault_cost(mode: str, repeat: int) -> tuple[float, float, int]:
    """(seconds, cost-model cycles) per hidden fault, and how many: touching 1024 pages with
    paging on, less with it off."""
    on, off = build(True, 0, touch=True), build(False, 0, touch=True)
    extra = min(timed(on, mode)[0] - timed(off, mode)[0] for _ in range(repeat))
    with_paging, without = timed(on, mode)[1], timed(off, mode)[1]
    faults = with_paging.stats.traps["#PF hidden"]
    cycles = with_paging.cycles().virtual - without.cycles().virtual
    return extra / max(faults, 1), cycles / max(faults, 1), faults


OPERATIONS = {"true fault": "TRUE_FAULT", "ptemod": "PTEMOD", "CR3 switch": "CR3_SWITCH"}


def operation_cost(
    define: str, mode: str, count: int, repeat: int, port: tuple[str, ...] = ()
) -> tuple[float, float]:
    """(seconds, cost-model cycles) of one operation: `count` of them against none; `port`:
    ("PARAVIRT",) for the build ported to pv (bench_pv_paging.py)."""

    def run(n: int) -> tuple[float, float]:
        data, _ = assemble(HERE / "mmuops.asm", (*port, define, f"COUNT={n}"))
        elapsed, vm = min(
            (timed(GuestImage("mmuops", data), mode) for _ in range(repeat)), key=lambda r: r[0]
        )
        return elapsed, vm.cycles().virtual

    (t1, c1), (t0, c0) = run(count), run(1)
    return (t1 - t0) / (count - 1), (c1 - c0) / (count - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N, alternating")
    args = parser.parse_args()
    images = {paging: build(paging, args.iterations) for paging in (False, True)}
    print(f"{'mode':<8} {'paging off':>12} {'paging on':>12} {'on/off':>8}")
    for mode in MODES:
        best = {False: 0.0, True: 0.0}
        for _ in range(args.repeat):  # alternate, so both see the same machine load
            for paging, image in images.items():
                best[paging] = max(best[paging], speed(image, mode))
        off, on = best[False], best[True]
        print(f"{mode:<8} {off / 1e6:>8.1f} M/s {on / 1e6:>8.1f} M/s {on / off:>8.0%}")
    print("\ntargets: native paging on >= 90% of paging off; bt (on the shadows) >= 80%")
    for mode in MODES[1:]:
        cost, _, faults = hidden_fault_cost(mode, args.repeat)
        print(
            f"{mode}: one hidden page fault costs {cost * 1e6:.0f} µs ({faults} in the touch run)"
        )


if __name__ == "__main__":
    main()
