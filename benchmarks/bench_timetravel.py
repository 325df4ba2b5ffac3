"""Time travel: how compact a recording is, and how long a seek takes.

    uv run python benchmarks/bench_timetravel.py [--seeks N] [RUN ...]

A RUN is GUEST:MODE:STEPS (default: the three below). Each is recorded traced (the rate is
printed), saved to a trace file, then sought to random steps. Every seek to an earlier step
re-executes from a fresh VM, the only checkpoint: that is the number to hold against the
100 ms target. Prints; a benchmark, not a test.
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

RUNS = ("kernel_loop:native:1000000", "flags:trap:500000", "syscalls:trap:30000")


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
    rng = random.Random(4)
    times = []
    for target in (rng.randrange(count + 1) for _ in range(seeks)):
        began = time.perf_counter()
        machine.seek(target)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(
        f"  seek to a random step: median {statistics.median(times):.1f} ms, "
        f"p95 {p95:.1f} ms, max {times[-1]:.1f} ms  (target ≤ 100 ms)"
    )
    began = time.perf_counter()
    TimeMachine(image, mode, recording=recording).seek(count - 1)
    worst = (time.perf_counter() - began) * 1000
    print(f"  worst case, a fresh VM run to the last step but one: {worst:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=RUNS, metavar="GUEST:MODE:STEPS")
    parser.add_argument("--seeks", type=int, default=30)
    args = parser.parse_args()
    for spec in args.runs:
        bench(spec, args.seeks)


if __name__ == "__main__":
    main()
