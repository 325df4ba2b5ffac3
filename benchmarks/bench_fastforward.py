"""Fast-forward and traced recording (issue 13.7): three targets, measured in one run.

    uv run python benchmarks/bench_fastforward.py [--steps N] [--session N] [--seeks N]

1. Fast-forward (a time machine running its head untraced, checkpointing on the way) against
   a plain run of the same VM (what `vmlab run` does), same guest, same steps: target ≥ 50%.
2. Traced recording under trap (every instruction classified, registers and writes kept):
   target ≥ 250,000 instructions/s; beside it the same run with an empty Python hook on
   every instruction (the floor for a tracer in Python) and what tracing costs above it.
3. A seek to random steps of a session fast-forwarded to 100 M instructions: restore the
   nearest checkpoint, re-execute from there: target ≤ 200 ms (p95 and max printed).

Prints; a benchmark, not a test. Rates in 1 and 2 are per second of this process's CPU time
(on a shared machine, wall-clock rates say more about the neighbours); seeks are wall-clock,
what a user waits.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from hypervisor.guest.image import load_guest
from hypervisor.machine.codehook import CodeHook
from hypervisor.trace.timetravel import Goal, TimeMachine
from hypervisor.vmm.vm import Vm

FAST_RUNS = ("hog:native", "hog:trap", "kernel_loop:trap", "kernel_loop:bt")
# the three of the target, and a higher-half C kernel's boot to its prompt with paging on (the
# code fetched through the MMU, every store mapped back to its linear address), as a course's
TRACED_RUNS = ("flags:trap", "timer:trap", "syscalls:trap", "course_hh:trap")
SESSIONS = ("hog:native", "hog:trap")
FAST_TARGET, TRACED_TARGET, SEEK_TARGET_MS = 0.5, 250_000, 200


def plain(name: str, mode: str, steps: int) -> tuple[int, float]:
    vm = Vm(load_guest(name), mode)
    began = time.process_time()
    vm.run(steps)
    return vm.step, time.process_time() - began


def fast_forwarded(name: str, mode: str, steps: int) -> tuple[TimeMachine, float]:
    machine = TimeMachine(load_guest(name), mode)
    began = time.process_time()
    machine.fast_forward(Goal(steps))
    return machine, time.process_time() - began


def bench_fast(spec: str, steps: int) -> None:
    name, mode = spec.split(":")
    done, plain_seconds = plain(name, mode, steps)
    machine, ff_seconds = fast_forwarded(name, mode, done)
    ratio = plain_seconds / ff_seconds
    verdict = "met" if ratio >= FAST_TARGET else "MISSED"
    print(
        f"{spec:<18} {done:>12,} steps: run {done / plain_seconds / 1e6:6.1f} M/s, "
        f"fast-forward {machine.frontier / ff_seconds / 1e6:6.1f} M/s = {ratio:4.0%} "
        f"({len(machine.checkpoints)} checkpoints; target ≥ {FAST_TARGET:.0%}: {verdict})"
    )


def hooked(name: str, mode: str, steps: int) -> float:
    """Instructions per CPU second of the same run untraced, with a Python code hook that
    does nothing on every instruction: the floor of any tracer in Python."""
    vm = Vm(load_guest(name), mode)
    hook = CodeHook(vm.machine.uc, lambda address, size: None)  # (kept until removed)
    vm.machine.uc.ctl_flush_tb()  # (blocks compiled before the hook would not call it)
    began = time.process_time()
    vm.run(steps)
    rate = vm.step / (time.process_time() - began)
    hook.remove()
    return rate


def bench_traced(spec: str, steps: int) -> None:
    name, mode = spec.split(":")
    machine = TimeMachine(load_guest(name), mode, limit=steps)
    began = time.process_time()
    machine.extend(steps)
    rate = machine.frontier / (time.process_time() - began)
    floor = hooked(name, mode, machine.frontier)
    verdict = "met" if rate >= TRACED_TARGET else "MISSED"
    target = f"target ≥ {TRACED_TARGET:,}: {verdict}" if spec in TRACED_RUNS[:3] else "paging on"
    print(
        f"{spec:<18} {machine.frontier:>12,} steps traced: {rate:>9,.0f} instructions/s "
        f"({target}); an empty hook: {floor:>11,.0f}/s, "
        f"tracing costs {1e6 / rate - 1e6 / floor:.1f} µs an instruction above it"
    )


def bench_seek(spec: str, steps: int, seeks: int) -> None:
    name, mode = spec.split(":")
    machine, seconds = fast_forwarded(name, mode, steps)
    rng = random.Random(7)
    times = []
    for target in (rng.randrange(machine.frontier) for _ in range(seeks)):
        began = time.perf_counter()
        machine.seek(target)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    verdict = "met" if times[-1] <= SEEK_TARGET_MS else "MISSED"
    store = machine.checkpoints
    print(
        f"{spec:<18} session of {machine.frontier:,} steps (fast-forwarded in {seconds:.1f} s,"
        f" {len(store)} checkpoints, {store.nbytes() / (1 << 20):.1f} MiB): seek median "
        f"{statistics.median(times):.0f} ms, p95 {p95:.0f} ms, max {times[-1]:.0f} ms "
        f"(target ≤ {SEEK_TARGET_MS} ms: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000_000, help="fast-forward runs")
    parser.add_argument("--traced", type=int, default=300_000, help="traced recording runs")
    parser.add_argument("--session", type=int, default=100_000_000, help="seek sessions")
    parser.add_argument("--seeks", type=int, default=30)
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(load average {load} on {os.cpu_count()} CPUs: rates are this process's CPU time)")
    print("1. fast-forward against a plain run (vmlab run) of the same guest")
    for spec in FAST_RUNS:
        bench_fast(spec, args.steps)
    print("2. traced recording")
    for spec in TRACED_RUNS:
        bench_traced(spec, args.traced)
    print("3. seeks in a long session")
    for spec in SESSIONS:
        bench_seek(spec, args.session, args.seeks)


if __name__ == "__main__":
    main()
