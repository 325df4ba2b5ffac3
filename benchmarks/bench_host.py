"""Many VMs on one host: aggregate speed of 8 VMs against one alone, and the world-switch cost.

    uv run python benchmarks/bench_host.py [--budget N] [--quantum N]

Two hello-class workloads per mode: `hello` itself (console I/O: every character an IN and an
OUT, trapped under a monitor) run to its end, and `hog` (a two-instruction loop that never
traps) run for `--budget` instructions. For each: one VM alone, then 8 of them on one host
round-robin. The world-switch cost is what a switch adds: the same 8 VMs with a quantum so
large that each runs in one turn, against the given quantum, divided by the extra switches.
Raw unicorn (the hog's loop on a bare Uc, no hooks, no count) is the reference for speed.
Creating the VMs is not timed. A benchmark, not a test: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import time

from unicorn import UC_ARCH_X86, UC_MODE_32, UC_PROT_ALL, Uc

from hypervisor.guest.image import GuestImage, load_guest
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.host import Host

VMS = 8
HOG_LOOP = b"\x40\xeb\xfd"  # inc eax; jmp back to it


def raw_unicorn(instructions: int) -> float:
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 1 << 20, UC_PROT_ALL)
    uc.mem_write(0x1000, HOG_LOOP)
    began = time.perf_counter()
    uc.emu_start(0x1000, 0xFFFF, count=instructions)
    return instructions / (time.perf_counter() - began)


def host_run(
    image: GuestImage, mode: str, vms: int, budget: int, quantum: int, watch_reads: bool = True
):
    """(guest instructions, seconds, world switches) of `vms` copies on one host."""
    host = Host(quantum=quantum, watch_reads=watch_reads)
    for _ in range(vms):
        host.create(image, mode, budget=budget)
    began = time.perf_counter()
    host.run()
    elapsed = time.perf_counter() - began
    total = sum(h.account.instructions for h in host.vms.values())
    return total, elapsed, host.scheduler.world_switches


def best(runs: list[tuple[int, float, int]]) -> tuple[int, float, int]:
    return min(runs, key=lambda r: r[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=1_000_000, help="hog instructions per VM")
    parser.add_argument("--quantum", type=int, default=2_000, help="(hello: ~7,500 in all)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    args = parser.parse_args()
    raw = max(raw_unicorn(args.budget) for _ in range(args.repeat))
    print(f"raw unicorn, the hog's loop: {raw / 1e6:.1f} M instr/s\n")
    print(
        f"{'guest':<6} {'mode':<7} {'1 VM alone':>12} {f'{VMS} VMs':>12} {'8 VMs/1':>8} "
        f"{'8 VMs/raw':>10} {'switches':>9} {'switch cost':>12}"
    )
    for guest in ("hello", "hog"):
        image = load_guest(guest)
        budget = args.budget if guest == "hog" else 10**9
        for mode in list(Mode):
            n1, t1, _ = best(
                [host_run(image, mode, 1, budget, args.quantum) for _ in range(args.repeat)]
            )
            alone = n1 / t1
            runs = [host_run(image, mode, VMS, budget, args.quantum) for _ in range(args.repeat)]
            n8, t8, switches = best(runs)
            whole = [host_run(image, mode, VMS, budget, 10**12) for _ in range(args.repeat)]
            _, t_whole, switches_whole = best(whole)
            extra = switches - switches_whole
            # Too few switches (hello: 4 turns each) drown in the noise of a shared machine.
            cost = f"{(t8 - t_whole) / extra * 1e6:>9.1f} µs" if extra >= 100 else "—"
            print(
                f"{guest:<6} {mode:<7} {alone / 1e6:>8.2f} M/s {n8 / t8 / 1e6:>8.2f} M/s "
                f"{n8 / t8 / alone:>8.0%} {n8 / t8 / raw:>10.1%} {switches:>9} "
                f"{cost:>12}"
            )
    print(
        f"\nquantum {args.quantum:,} guest instructions; switch cost = extra time of the "
        "round-robin run over one turn per VM, per extra world switch"
    )
    print("\nthe read hook that reports guest reads of monitor memory (on by default), 1 VM:")
    for guest in ("timer", "kernel_loop"):
        image = load_guest(guest)
        for mode in (m for m in list(Mode) if m != "native"):
            if (guest, mode) == ("kernel_loop", "trap"):
                continue  # 400,000 traps: a minute, and the hook is not what it measures
            watched, unwatched = (
                best(
                    [host_run(image, mode, 1, 10**12, args.quantum, w) for _ in range(args.repeat)]
                )
                for w in (True, False)
            )
            on, off = watched[0] / watched[1], unwatched[0] / unwatched[1]
            print(
                f"   {guest:<12} {mode:<5} watched {on / 1e6:6.2f} M/s, "
                f"unwatched {off / 1e6:6.2f} M/s: {on / off:.0%}"
            )


if __name__ == "__main__":
    main()
