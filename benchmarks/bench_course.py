"""The course kernel's boot to its prompt: instructions and time in every mode, and QEMU's.

    uv run python benchmarks/bench_course.py [--cmdline TEXT]

The kernel (sample_guests/course/) boots, sets its machine up, runs its ring-3 task and ends
at the prompt (`exit` in its command line). Each mode's run is timed from the VM's creation
(loading included) to the end; the ratio is against bare metal in the same run. Where
qemu-system-i386 is installed its wall time for the same kernel is printed beside (a whole
process: start-up, firmware and boot). A benchmark, not a test: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time

from hypervisor.guest.image import load_guest
from hypervisor.guest.samples import SAMPLES_DIR
from hypervisor.session import run_guest
from hypervisor.vmm.contract import Mode

RAM = 32 << 20


def vmlab_boot(cmdline: str, mode: Mode) -> tuple[float, int, str]:
    began = time.perf_counter()
    report = run_guest(load_guest("course", cmdline=cmdline), mode, ram_size=RAM)
    return time.perf_counter() - began, report.instructions["total"], report.exit.reason


def qemu_boot(cmdline: str) -> float | None:
    qemu = shutil.which("qemu-system-i386")
    if qemu is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        command = [qemu, "-kernel", str(SAMPLES_DIR / "course.elf"), "-append", cmdline]
        command += ["-m", "32", "-display", "none", "-no-reboot", "-serial", f"file:{tmp}/s"]
        command += ["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
        began = time.perf_counter()
        subprocess.run(command, capture_output=True, timeout=60, check=False)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cmdline", default="nopaging exit")
    args = parser.parse_args()
    print(f"course kernel, command line {args.cmdline!r}, boot to the prompt:")
    native = None
    for mode in (Mode.NATIVE, Mode.TRAP, Mode.BT):
        seconds, instructions, reason = vmlab_boot(args.cmdline, mode)
        native = native or seconds
        print(
            f"  {mode:<7} {seconds * 1000:8.1f} ms  {instructions:>9,} instructions  "
            f"{seconds / native:5.2f}x native  ({reason})"
        )
    qemu = qemu_boot(args.cmdline)
    if qemu is not None:
        print(f"  qemu    {qemu * 1000:8.1f} ms  (the whole process)  {qemu / native:5.2f}x native")
    else:
        print("  qemu    (qemu-system-i386 is not installed)")


if __name__ == "__main__":
    main()
