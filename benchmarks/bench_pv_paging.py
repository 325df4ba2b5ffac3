"""Direct paging against shadow paging, under pv: the same kernel ported and unported.

    uv run python benchmarks/bench_pv_paging.py [--iterations N] [--repeat N]

A ported kernel's page tables are the CPU's (unicorn walks them), so its hot loop should lose
to paging what bare metal's loses, no more; the unported kernel under pv runs on the
monitor's shadows, as under trap. Prints, measured in this run: the loop's speed with paging
off and on for both, and on bare metal for reference (`pagingloop.asm`, built with and
without -DPARAVIRT), then what one MMU operation costs, in wall-clock and in the cost
model's cycles (`mmuops.asm`: N operations against one): a true page fault, a page-table
entry written (a ptemod on shadows, an `mmu_update` + `invlpg` ported) and an address-space
switch (MOV CR3 on shadows, a `new_baseptr` of a pinned directory ported). The machine may
be shared: compare the rows of one run, not runs. A benchmark, not a test.
"""

from __future__ import annotations

import argparse

from bench_paging import HERE, OPERATIONS, operation_cost, timed

from hypervisor.guest.image import GuestImage
from hypervisor.guest.nasm import assemble

BUILDS = {"ported (direct)": ("PARAVIRT",), "unported (shadows)": ()}


def loop(port: tuple[str, ...], paging: bool, iterations: int) -> GuestImage:
    defines = (*port, f"ITERATIONS={iterations}", *(("PAGING",) if paging else ()))
    data, _ = assemble(HERE / "pagingloop.asm", defines)
    return GuestImage("pagingloop", data)


def speed(image: GuestImage, mode: str, repeat: int) -> float:
    elapsed, vm = min((timed(image, mode) for _ in range(repeat)), key=lambda r: r[0])
    return vm.stats.total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    args = parser.parse_args()
    print(f"{'kernel':<26} {'paging off':>12} {'paging on':>12} {'on/off':>8}")
    rows = [("bare metal (for reference)", (), "native")]
    rows += [(f"pv, {name}", port, "pv") for name, port in BUILDS.items()]
    for name, port, mode in rows:
        off = speed(loop(port, False, args.iterations), mode, args.repeat)
        on = speed(loop(port, True, args.iterations), mode, args.repeat)
        print(f"{name:<26} {off / 1e6:>8.1f} M/s {on / 1e6:>8.1f} M/s {on / off:>8.0%}")
    print(f"\n{'one operation':<14}" + "".join(f"{name:>34}" for name in BUILDS))
    for name, define in OPERATIONS.items():
        row = [operation_cost(define, "pv", 500, args.repeat, port) for port in BUILDS.values()]
        print(f"{name:<14}" + "".join(f"{t * 1e6:>17.1f} µs {c:>10.0f} cyc" for t, c in row))


if __name__ == "__main__":
    main()
