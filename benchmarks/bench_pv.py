"""Paravirtualization speed: `kernel_loop` ported (pv) against trap-and-emulate and raw unicorn.

    uv run python benchmarks/bench_pv.py

The same critical-section loop three ways: raw unicorn runs the unmodified hot loop at CPL 0
with no monitor; trap runs the unmodified kernel (each CLI, STI, POPF-idiom is a #GP round
trip, and POPF is a hole); pv runs the -DPARAVIRT build (each is a hypercall, no hole).
Printed: guest instructions per second, the ratio to raw unicorn, and the monitor's
wall-clock cost per trap and per hypercall - from the same run; a benchmark, not a test.
"""

from __future__ import annotations

import argparse

from bench_bt import raw_unicorn, vmlab

from hypervisor.guest.image import load_guest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=300_000, help="instructions per mode")
    args = parser.parse_args()
    unmodified = load_guest("kernel_loop")
    raw = max(raw_unicorn(unmodified, 200_000) for _ in range(3))
    print(f"{'kernel_loop':<14} {'instructions/s':>16} {'vs raw unicorn':>15} {'µs per event':>14}")
    print(f"{'raw unicorn':<14} {raw / 1e6:>12.1f} M/s {1:>14.0%}")
    for mode, image in (("trap", unmodified), ("pv", load_guest("kernel_loop", paravirtual=True))):
        speed, vm = vmlab(image, mode, args.budget)
        events = sum(vm.stats.traps.values()) + sum(vm.stats.hypercalls.values())
        per_event = vm.stats.total / speed / max(events, 1) * 1e6
        print(f"{mode:<14} {speed / 1e6:>12.2f} M/s {speed / raw:>14.2%} {per_event:>14.0f}")


if __name__ == "__main__":
    main()
