"""The block clock against unicorn's count=N and raw unicorn, measured in the same run.

Three loops at CPL 0 (plain ALU code, a load/store loop, many small blocks), each run in exact
slices of 10,000 instructions (the PIT's pace) by both clocks, and once unhooked to an end
address for raw unicorn's speed. Prints M instr/s and ratios. Times are CPU seconds (of this
process; of QEMU's for QEMU): on a machine shared with other work they move far less than
wall-clock time.
    uv run python benchmarks/bench_clock.py
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from unicorn import UC_ARCH_X86, UC_MODE_32, UC_PROT_ALL, Uc
from unicorn.x86_const import UC_X86_REG_EIP, UC_X86_REG_ESI

from hypervisor.machine.blockclock import BlockClock

CODE, RAM = 0x1000, 0x20000
SLICE = 10_000
ROUNDS = 400_000
WHOLE = 40_000_000  # instructions of a whole `vmlab run` of a loop
# loop bodies; each loop is: body; dec esi; jnz CODE (esi = ROUNDS), then the end address
BODIES = {
    "alu": b"\x40\x01\xc3\x31\xd9\xc1\xc2\x03" * 2,  # inc; add; xor; rol (x2)
    "load/store": b"\xa1\x00\x80\x00\x00\x40\xa3\x00\x80\x00\x00\x89\x1d\x04\x80\x00\x00",
    "small blocks": b"\x40\xeb\x00" * 200,  # inc eax; jmp next: 200 two-instruction blocks
}


def _program(body: bytes) -> tuple[bytes, int]:
    back = CODE - (CODE + len(body) + 1 + 6)
    code = body + b"\x4e" + b"\x0f\x85" + back.to_bytes(4, "little", signed=True)
    per_round = len(body) and _count(body) + 2
    return code, per_round


def _count(body: bytes) -> int:
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    return sum(1 for _ in md.disasm_lite(body, CODE))


def _cpu(code: bytes, rounds: int = ROUNDS) -> tuple[Uc, ctypes.Array]:
    ram = ctypes.create_string_buffer(RAM)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map_ptr(0, RAM, UC_PROT_ALL, ctypes.addressof(ram))
    ctypes.memmove(ctypes.addressof(ram) + CODE, code, len(code))
    uc.reg_write(UC_X86_REG_ESI, rounds)
    return uc, ram


def raw_rate(body: bytes, rounds: int) -> float:
    """M instr/s of unicorn running the loop once to its end: no hook, no count."""
    code, per_round = _program(body)
    uc, _ram = _cpu(code, rounds)
    start = time.process_time()
    uc.emu_start(CODE, CODE + len(code))
    return rounds * per_round / (time.process_time() - start) / 1e6


def _sliced(uc: Uc, end: int, run_slice: object) -> float:
    start = time.process_time()
    done = 0
    while uc.reg_read(UC_X86_REG_EIP) != end:
        run_slice(uc.reg_read(UC_X86_REG_EIP))  # type: ignore[operator]
        done += SLICE
    return time.process_time() - start


def measure(body: bytes) -> dict[str, float]:
    code, per_round = _program(body)
    end = CODE + len(code)
    total = ROUNDS * per_round / 1e6
    uc, _ram = _cpu(code)
    start = time.process_time()
    uc.emu_start(CODE, end)
    raw = total / (time.process_time() - start)
    uc, _ram = _cpu(code)
    uc.reg_write(UC_X86_REG_EIP, CODE)
    count = total / _sliced(uc, end, lambda eip: uc.emu_start(eip, end, count=SLICE))
    uc2, ram2 = _cpu(code)
    uc2.reg_write(UC_X86_REG_EIP, CODE)
    base = ctypes.addressof(ram2)
    clock = BlockClock(uc2, lambda a, n: ctypes.string_at(base + a, n), base, RAM)
    block = total / _sliced(uc2, end, lambda eip: clock.run(eip, end, SLICE))
    return {"raw": raw, "count": count, "block": block}


def _multiboot(body: bytes, rounds: int) -> bytes:
    """A multiboot kernel (a.out kludge, loaded at 1 MiB) running the loop, then writing
    isa-debug-exit."""
    load = 0x100000
    loop = b"\xbe" + rounds.to_bytes(4, "little") + body
    back = -(len(body) + 1 + 6)
    loop += b"\x4e\x0f\x85" + back.to_bytes(4, "little", signed=True)
    loop += b"\x31\xc0\xe6\xf4\xf4"  # xor eax, eax; out 0xf4, al; hlt
    flags = 1 << 16
    image_end = load + 32 + len(loop)
    header = [0x1BADB002, flags, (-(0x1BADB002 + flags)) & 0xFFFFFFFF]
    header += [load, load, image_end, image_end, load + 32]
    return b"".join(v.to_bytes(4, "little") for v in header) + loop


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (QEMU's threads included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def qemu_rate(body: bytes) -> float | None:
    """M instr/s of qemu-system-i386 -icount on the same loop (startup subtracted)."""
    if shutil.which("qemu-system-i386") is None:
        return None
    per_round = _count(body) + 2
    times = []
    with tempfile.TemporaryDirectory() as folder:
        for rounds in (1, 1, 1, ROUNDS * 50, ROUNDS * 50, ROUNDS * 50):
            kernel = Path(folder) / "loop.bin"
            kernel.write_bytes(_multiboot(body, rounds))
            command = ["qemu-system-i386", "-kernel", str(kernel), "-m", "4", "-display", "none"]
            command += ["-no-reboot", "-icount", "shift=0,sleep=off"]
            command += ["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
            start = _children_cpu()
            subprocess.run(command, capture_output=True, timeout=120)
            times.append(_children_cpu() - start)
    run = min(times[3:]) - min(times[:3])  # best of three, less the start-up
    return ROUNDS * 50 * per_round / max(run, 1e-3) / 1e6


def vmlab_rate(body: bytes, rounds: int) -> float:
    """M instr/s of `vmlab run` (native) of the loop as a multiboot kernel, with the
    deadlines the run really has (none but the budget: the loop programs no timer), the
    start-up (a run of one round) subtracted; best of three."""
    from hypervisor.session import run_guest

    per_round = _count(body) + 2
    times = []
    with tempfile.TemporaryDirectory() as folder:
        for n in (1, 1, 1, rounds, rounds, rounds):
            kernel = Path(folder) / "loop.bin"
            kernel.write_bytes(_multiboot(body, n))
            start = time.process_time()
            report = run_guest(str(kernel), "native", max_insns=1 << 40)
            times.append(time.process_time() - start)
            assert report.instructions["total"] == n * per_round + 3  # mov esi; xor; out
    run = min(times[3:]) - min(times[:3])
    return rounds * per_round / max(run, 1e-4) / 1e6


def whole_runs() -> None:
    """What the issue means: the same code run by `vmlab run` as a guest, slices as long as
    its real deadlines allow, against raw unicorn running it unhooked, in the same run."""
    from hypervisor.machine import clock

    print(f"vmlab run of each loop as a kernel ({WHOLE:,} instructions) against raw unicorn")
    for name, body in BODIES.items():
        rounds = WHOLE // (_count(body) + 2)
        raw = max(raw_rate(body, rounds) for _ in range(3))
        rates = {}
        for kind in ("count", "block"):
            os.environ[clock.ENV] = kind
            clock.choice.cache_clear()
            rates[kind] = vmlab_rate(body, rounds)
        print(
            f"  {name:13s} raw={raw:7.1f}  vmlab run: count={rates['count']:6.1f} "
            f"({rates['count'] / raw:4.0%} of raw)  block={rates['block']:6.1f} "
            f"({rates['block'] / raw:4.0%} of raw)"
        )
    del os.environ[clock.ENV]
    clock.choice.cache_clear()


def guest_runs() -> None:
    """`vmlab run` of samples under native and pv, best of three, by each clock."""
    from hypervisor.machine import clock
    from hypervisor.session import run_guest

    print("vmlab runs (CPU seconds, best of 3; the same retired count under both clocks)")
    for guest, mode in (("kernel_loop", "native"), ("hog", "native"), ("timer", "pv")):
        seconds = {}
        for kind in ("count", "block"):
            os.environ[clock.ENV] = kind
            clock.choice.cache_clear()
            best = float("inf")
            for _ in range(3):
                start = time.process_time()
                report = run_guest(guest, mode, max_insns=3_000_000)
                best = min(best, time.process_time() - start)
            seconds[kind] = (best, report.instructions["total"])
        (count, total), (block, total2) = seconds["count"], seconds["block"]
        assert total == total2
        print(
            f"  {guest:12s} {mode:6s} {total:>9,} instructions: count {count:6.3f}  "
            f"block {block:6.3f}  ({count / block:4.1f}x)"
        )
    del os.environ[clock.ENV]
    clock.choice.cache_clear()


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    print(f"exact slices of {SLICE:,} instructions, best of 3 (M guest instructions/s)")
    for name, body in BODIES.items():
        runs = [measure(body) for _ in range(3)]
        r = {key: max(run[key] for run in runs) for key in runs[0]}
        print(
            f"  {name:13s} raw={r['raw']:7.1f}  count={r['count']:6.1f} "
            f"({r['count'] / r['raw']:4.0%} of raw)  block={r['block']:6.1f} "
            f"({r['block'] / r['raw']:4.0%} of raw, {r['block'] / r['count']:4.1f}x count)"
        )
        qemu = qemu_rate(body)
        if qemu is not None:
            print(f"  {'':13s} qemu-system-i386 -icount shift=0: {qemu:7.1f}")
    whole_runs()
    guest_runs()


if __name__ == "__main__":
    main()
