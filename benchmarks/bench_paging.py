"""Paging on bare metal costs nothing per access: the same kernel loop with paging on and off.

    uv run python benchmarks/bench_paging.py [--iterations N]

Unicorn's own MMU walks the guest's page tables (on a TLB miss) while the guest runs; Python
runs only at faults and interrupt delivery, never per access. The loop loads and stores across
16 pages. Prints instructions per second for both and their ratio (target: paging on at
>= 90% of paging off); a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hypervisor.guest.image import GuestImage
from hypervisor.guest.nasm import assemble
from hypervisor.vmm.vm import Vm

HERE = Path(__file__).parent


def build(paging: bool, iterations: int) -> GuestImage:
    defines = (f"ITERATIONS={iterations}",) + (("PAGING",) if paging else ())
    data, _ = assemble(HERE / "pagingloop.asm", defines)
    return GuestImage(f"pagingloop-{'on' if paging else 'off'}", data)


def speed(image: GuestImage) -> float:
    vm = Vm(image, "native")
    began = time.perf_counter()
    exit_info = vm.run(10**12)
    elapsed = time.perf_counter() - began
    assert exit_info.reason == "debug_exit", exit_info
    return vm.stats.total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N, alternating")
    args = parser.parse_args()
    images = {paging: build(paging, args.iterations) for paging in (False, True)}
    best = {False: 0.0, True: 0.0}
    for _ in range(args.repeat):  # alternate, so both see the same machine load
        for paging, image in images.items():
            best[paging] = max(best[paging], speed(image))
    off, on = best[False], best[True]
    print(f"{'paging':<8} {'native':>12}")
    print(f"{'off':<8} {off / 1e6:>8.1f} M/s")
    print(f"{'on':<8} {on / 1e6:>8.1f} M/s")
    print(f"\npaging on / off: {on / off:.0%}  (target: >= 90%)")


if __name__ == "__main__":
    main()
