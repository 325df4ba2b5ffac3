"""Encapsulation: suspend/resume time, live migration's rounds and downtime, clones' RAM.

    uv run python benchmarks/bench_encap.py [--repeat N]

1. Suspend (capture + atomic write of the .vmlab) and resume (read + restore) of a 4 MiB and a
   64 MiB VM whose RAM is half full of incompressible data (the worst case for zlib).
2. Live migration by pre-copy of the same VMs, in one process (the destination a Receiver:
   what is measured is the algorithm, not TCP), while the VM keeps running: between two
   chunks of 256 pages sent, it runs a slice and writes 13 pages (5% of a chunk; the
   stores reach the dirty log as the guest's would). Printed: rounds, pages and bytes per
   round, total time, downtime (wall clock from the VM's stop to the destination's go) and
   the guest instructions that time is worth at the VM's rate. Target downtime: ≤ 50 ms.
3. Host RAM taken by 8 clones of a booted whoami, against 8 full copies.
A benchmark, not a test: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from hypervisor.encap import vmfile
from hypervisor.encap.clones import clone
from hypervisor.encap.migration import Receiver, migrate
from hypervisor.encap.state import capture, restore
from hypervisor.guest.image import load_guest
from hypervisor.machine.hostram import PAGE
from hypervisor.vmm.vm import Vm

MIB = 1 << 20


def filled_vm(ram_size: int) -> Vm:
    """hog, with half its RAM above 2 MiB full of random bytes."""
    vm = Vm(load_guest("hog"), "native", ram_size=ram_size)
    vm.run(10_000)
    rng = random.Random(1)
    for page in range(2 * MIB, ram_size - 64 * PAGE, 2 * PAGE):
        vm.machine.write(page, rng.randbytes(PAGE))
    return vm


def suspend_resume(ram_size: int, repeat: int) -> None:
    vm = filled_vm(ram_size)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vm.vmlab"
        suspends, resumes = [], []
        for _ in range(repeat):
            began = time.perf_counter()
            vmfile.write(path, capture(vm))
            suspends.append(time.perf_counter() - began)
            began = time.perf_counter()
            resumed = restore(vmfile.read(path))
            resumes.append(time.perf_counter() - began)
            resumed.machine.release()
        size = os.path.getsize(path)
    print(
        f"  {ram_size // MIB:>3} MiB VM: suspend {statistics.median(suspends) * 1000:7.1f} ms, "
        f"resume {statistics.median(resumes) * 1000:7.1f} ms, file {size / MIB:6.2f} MiB"
    )


def live_migration(ram_size: int) -> None:
    vm = filled_vm(ram_size)
    rng = random.Random(2)
    pages = ram_size // PAGE

    def run(steps: int) -> None:
        vm.run(steps)
        for _ in range(13):  # 5% of a 256-page chunk, anywhere in RAM
            vm.machine.write(rng.randrange(pages) * PAGE, rng.randbytes(64))

    receiver = Receiver(ram_size)
    report = migrate(vm, receiver, run)
    rounds = ", ".join(f"{r.pages}p/{r.bytes // 1024}K" for r in report.rounds)
    print(
        f"  {ram_size // MIB:>3} MiB VM: {len(report.rounds)} rounds ({rounds}), total "
        f"{report.total_seconds * 1000:.0f} ms, downtime {report.downtime_seconds * 1000:.1f} ms "
        f"(~{report.downtime_instructions:,} guest instructions)"
        + ("" if report.migrated else f" FAILED: {report.failure}")
    )
    if receiver.vm is not None:
        receiver.vm.machine.release()
    vm.machine.release()


def clones() -> None:
    booted = Vm(load_guest("whoami"), "native")
    booted.run(1_049_975)
    began = time.perf_counter()
    group = clone(capture(booted), 8)
    made = time.perf_counter() - began
    for vm in group.vms:
        vm.run(2_000_000)
    memory = group.memory()
    group.close()
    full = memory.ram_size * len(memory.clones)
    print(
        f"  8 clones of {memory.ram_size // MIB} MiB (made in {made * 1000:.0f} ms, run to "
        f"their end): {memory.host_bytes / MIB:.2f} MiB of host RAM against {full / MIB:.0f} MiB "
        f"as copies — {memory.saved_bytes / MIB:.2f} MiB saved ({memory.saved_bytes / full:.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print("suspend / resume (median):")
    for size in (4 * MIB, 64 * MIB):
        suspend_resume(size, args.repeat)
    print("live migration (pre-copy, the VM writing 5% of each chunk's pages meanwhile):")
    for size in (4 * MIB, 64 * MIB):
        live_migration(size)
    print("clones:")
    clones()


if __name__ == "__main__":
    main()
