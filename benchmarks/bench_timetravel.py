"""Time travel: how compact a recording is, how long a seek takes, what checkpoints cost.

    uv run python benchmarks/bench_timetravel.py [--seeks N] [RUN ...]

A RUN is GUEST:MODE:STEPS (default: the ones below; syscalls is the trap-heavy one). Each is
recorded traced (the rate is printed, checkpoints included), saved to a trace file, then
sought to random steps: each seek restores the nearest checkpoint at or before its target
and re-executes from there. Targets: seek p95 ≤ 100 ms, checkpoints ≤ 64 MiB per VM. A
replay of the trace file starts with no checkpoint but the initial state: its first seek to
the end re-executes the whole run (checkpointing on the way), later seeks are as fast.
Prints; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from hypervisor.guest.image import load_guest
from hypervisor.trace import tracefile
from hypervisor.trace.timetravel import TimeMachine

RUNS = (
    "kernel_loop:native:1000000",
    "flags:trap:500000",
    "syscalls:trap:30000",
    "syscalls:bt:30000",
)
SEEK_TARGET_MS = 100
BUDGET_MIB = 64


def bench(spec: str, seeks: int) -> None:
    name, mode, steps = spec.split(":")
    image = load_guest(name)
    machine = TimeMachine(image, mode, limit=int(steps))
    began = time.perf_counter()
    machine.extend(int(steps))
    recorded = time.perf_counter() - began
    recording = machine.recording
    count = len(recording)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.vmtrace"
        tracefile.save(path, tracefile.Trace(image, mode, machine.limit, recording))
        file_size = path.stat().st_size
    print(
        f"{name} under {mode}: {count:,} steps recorded in {recorded:.1f} s "
        f"({count / recorded:,.0f} instructions/s traced)"
    )
    print(
        f"  recording: {recording.nbytes() / count:.1f} bytes/instruction in memory "
        f"(+ {len(recording.events):,} events); trace file {file_size / count:.2f} bytes/step"
    )
    store = machine.checkpoints
    print(
        f"  checkpoints: {len(store)}, {store.nbytes() / (1 << 20):.1f} MiB for this VM "
        f"(target ≤ {BUDGET_MIB} MiB)"
    )
    report("seek to a random step", seek_times(machine, count, seeks))
    replay = TimeMachine(image, mode, recording=recording)
    began = time.perf_counter()
    replay.seek(count - 1)
    first = (time.perf_counter() - began) * 1000
    print(f"  replay: first seek to the end {first:.0f} ms ({len(replay.checkpoints)} checkpoints)")
    report("  then a random step", seek_times(replay, count, seeks))


def seek_times(machine: TimeMachine, count: int, seeks: int) -> list[float]:
    rng = random.Random(4)
    times = []
    for target in (rng.randrange(count + 1) for _ in range(seeks)):
        began = time.perf_counter()
        machine.seek(target)
        times.append((time.perf_counter() - began) * 1000)
    return sorted(times)


def report(what: str, times: list[float]) -> None:
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    verdict = "met" if p95 <= SEEK_TARGET_MS else "MISSED"
    print(
        f"  {what}: median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, "
        f"max {times[-1]:.1f} ms  (target p95 ≤ {SEEK_TARGET_MS} ms: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=RUNS, metavar="GUEST:MODE:STEPS")
    parser.add_argument("--seeks", type=int, default=30)
    args = parser.parse_args()
    for spec in args.runs:
        bench(spec, args.seeks)


if __name__ == "__main__":
    main()
