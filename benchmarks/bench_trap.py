"""Trap-and-emulate speed: a user-mode loop under native and trap, against raw unicorn.

    uv run python benchmarks/bench_trap.py [--iterations N]

Raw unicorn runs the very same loop bytes with no hooks at all (`emu_start(count=0)`), the
fastest that this machine's CPU can go. vmlab runs the whole guest (kernel set-up, IRETD to
ring 3, the loop, a system call to exit) and always counts retired instructions, because its
timer ticks on them: that count is the main cost, and the two loop kinds show how much it
weighs (TCG runs ALU instructions far faster than loads and stores, the per-instruction count
costs the same for both). Then the trap path itself: kernel_loop, whose every round traps
twice, under trap against native, in CPU seconds and µs per trap (VMLAB_CLOCK=count|block
picks the clock). Last, what one trap costs on the samples that trap most (`syscalls`: a
system call every dozen instructions, each an INT 0x80 reflected through the guest's IDT and
an IRETD emulated; `kernel_loop`, `timer`): CPU time per trap, untraced, and each run's rate
against the same run on bare metal. Prints instructions per second and ratios; a benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unicorn import UC_ARCH_X86, UC_MODE_32, UC_PROT_ALL, Uc
from unicorn.x86_const import UC_X86_REG_ECX, UC_X86_REG_ESI

from hypervisor.guest.image import GuestImage, load_guest
from hypervisor.guest.nasm import assemble, parse_listing
from hypervisor.isa import decode_block
from hypervisor.machine.clock import choice as clock_choice
from hypervisor.vmm.vm import Vm

HERE = Path(__file__).parent


def build(kind: str, iterations: int) -> tuple[GuestImage, bytes, int]:
    defines = (f"ITERATIONS={iterations}",) + (("ALU",) if kind == "alu" else ())
    data, listing = assemble(HERE / "userloop.asm", defines)
    lines = parse_listing(listing)
    labels = {line.text.strip().rstrip(":"): line.address for line in lines}
    start = next(
        a for t, a in labels.items() if t.startswith(("mov ebx, [buffer]", "add eax, ebx"))
    )
    end = next(line.address for line in lines if line.text.strip() == "int 0x80")
    return GuestImage(f"userloop-{kind}", data), data[start - 0x100000 : end - 0x100000], start


def raw_unicorn(loop: bytes, iterations: int) -> float:
    """Instructions per second of the loop alone on a bare Uc, no hooks, no count."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 4 << 20, UC_PROT_ALL)
    uc.mem_write(0x100000, loop)
    uc.reg_write(UC_X86_REG_ECX, iterations)
    uc.reg_write(UC_X86_REG_ESI, 0x200000)
    began = time.perf_counter()
    uc.emu_start(0x100000, 0x100000 + len(loop), count=0)
    elapsed = time.perf_counter() - began
    per_iteration = len(decode_block(loop, 0x100000, 16))
    return per_iteration * iterations / elapsed


def vmlab_speed(image: GuestImage, mode: str) -> tuple[float, int]:
    vm = Vm(image, mode)
    began = time.perf_counter()
    exit_info = vm.run(10**12)
    elapsed = time.perf_counter() - began
    assert exit_info.reason == "debug_exit", exit_info
    return vm.stats.total / elapsed, sum(vm.stats.traps.values())


def trap_heavy(mode: str, steps: int) -> tuple[float, int]:
    """kernel_loop's first `steps` instructions (CPU seconds, traps): under trap every round
    of its loop faults twice (CLI, STI) into the monitor and back."""
    vm = Vm(load_guest("kernel_loop"), mode)
    began = time.process_time()
    vm.run(steps)
    return time.process_time() - began, sum(vm.stats.traps.values())


PER_TRAP = (("syscalls", 10**9), ("kernel_loop", 300_000), ("timer", 10**9))
SYSCALLS_TARGET = 400_000  # instructions/s of syscalls under trap, untraced (≤ ~25 µs a trap)


def run_seconds(name: str, mode: str, steps: int) -> tuple[float, Vm]:
    """CPU seconds of one untraced run of a sample (the VM made before the clock starts)."""
    vm = Vm(load_guest(name), mode)
    began = time.process_time()
    vm.run(steps)
    return time.process_time() - began, vm


def per_trap(repeat: int) -> None:
    """What a trap costs, from the CPU stopping to it running the guest again."""
    print(f"\nper trap ({clock_choice().kind} clock, CPU time, best of {repeat}, untraced):")
    for name, steps in PER_TRAP:
        native = min(run_seconds(name, "native", steps)[0] for _ in range(repeat))
        trap, vm = min((run_seconds(name, "trap", steps) for _ in range(repeat)), key=_first)
        traps, total = sum(vm.stats.traps.values()), vm.stats.total
        verdict = ""
        if name == "syscalls":
            met = "met" if total / trap >= SYSCALLS_TARGET else "MISSED"
            verdict = f"; target ≥ {SYSCALLS_TARGET:,}/s: {met}"
        print(
            f"  {name:<12} {total:>9,} instructions, {traps:>6,} traps (one every "
            f"{total / traps:5.1f}): trap {total / trap:>11,.0f}/s, native "
            f"{total / native:>11,.0f}/s, trap takes {trap / native:6.2f}x native's time, "
            f"{trap / traps * 1e6:5.1f} µs per trap{verdict}"
        )


def _first(pair: tuple[float, Vm]) -> float:
    return pair[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    parser.add_argument("--trap-steps", type=int, default=300_000, help="of kernel_loop")
    parser.add_argument("--per-trap", action="store_true", help="only the per-trap costs")
    args = parser.parse_args()
    if args.per_trap:
        per_trap(args.repeat)
        return
    print(
        f"{'loop':<6} {'raw unicorn':>14} {'native':>14} {'trap':>14} "
        f"{'native/raw':>11} {'trap/raw':>9} {'traps':>6}"
    )
    for kind in ("memory", "alu"):
        image, loop, _ = build(kind, args.iterations)
        raw = max(raw_unicorn(loop, args.iterations) for _ in range(args.repeat))
        native = max(vmlab_speed(image, "native")[0] for _ in range(args.repeat))
        trap_runs = [vmlab_speed(image, "trap") for _ in range(args.repeat)]
        trap, traps = max(trap_runs)
        print(
            f"{kind:<6} {raw / 1e6:>10.1f} M/s {native / 1e6:>10.1f} M/s "
            f"{trap / 1e6:>10.1f} M/s {native / raw:>10.0%} {trap / raw:>9.0%} {traps:>6}"
        )
    print("\ntarget: trap ≥ 50% of raw unicorn on a guest that rarely traps (memory loop)")
    steps = args.trap_steps
    native = min(trap_heavy("native", steps)[0] for _ in range(args.repeat))
    trap, traps = min(trap_heavy("trap", steps) for _ in range(args.repeat))
    print(
        f"\ntrap-heavy: kernel_loop's first {steps:,} instructions ({traps:,} traps, "
        f"{clock_choice().kind} clock, CPU time): native {native:.2f} s, trap {trap:.2f} s "
        f"= {trap / native:.0f}x native, {(trap - native) / traps * 1e6:.1f} µs per trap"
    )
    per_trap(args.repeat)


if __name__ == "__main__":
    main()
