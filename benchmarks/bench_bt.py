"""Binary translation speed: `kernel_loop` under bt and trap, against raw unicorn.

    uv run python benchmarks/bench_bt.py

The hot loop of sample_guests/kernel_loop.asm (between `hot_loop` and `hot_loop_end`:
pushfd; cli; inc [counter]; popfd; sti, plus a little arithmetic) is run three ways:
* raw unicorn: the loop's bytes at CPL 0 with no monitor and no hooks at all;
* trap: the whole guest under trap-and-emulate (every CLI and STI is a #GP round trip);
* bt: the whole guest under binary translation, timed in the hot loop once the cache is warm
  (instructions 300,000 to 1,500,000: boot, the first translations and the self-checking
  probation of the loop's page are behind), and over the whole run.
Also printed: translation throughput (guest instructions translated per second). Figures are
instructions per second and ratios from the same run; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time

from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
from unicorn.x86_const import UC_X86_REG_ECX, UC_X86_REG_ESP

from hypervisor.guest.image import GuestImage, load_guest
from hypervisor.vmm.vm import Vm

LOAD = 0x100000
WARM_UP = 300_000  # instructions before bt is timed: the loop's page is traced again by then
ROUNDS = 5
TIMED = 1_200_000  # then this many, all in the hot loop (which ends near 1,800,000)


def loop_bounds(image: GuestImage) -> tuple[int, int]:
    start = next(line.address for line in image.lines if line.text.startswith("hot_loop:"))
    end = next(line.address for line in image.lines if line.text.startswith("hot_loop_end:"))
    return start, end


def raw_unicorn(image: GuestImage, rounds: int) -> float:
    start, end = loop_bounds(image)
    per_round = 9
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 4 << 20)
    uc.mem_write(LOAD, image.data)
    uc.reg_write(UC_X86_REG_ESP, 0x3FF000)
    uc.reg_write(UC_X86_REG_ECX, rounds)
    began = time.perf_counter()
    uc.emu_start(start, end, count=0)
    return per_round * rounds / (time.perf_counter() - began)


def vmlab(image: GuestImage, mode: str, budget: int, warm_up: int = 0) -> tuple[float, Vm]:
    """Instructions per second over `budget` instructions (or to the guest's end), after
    `warm_up` untimed ones."""
    vm = Vm(image, mode)
    if warm_up:
        vm.run(warm_up)
    began, done = time.perf_counter(), vm.stats.total
    vm.run(budget)
    return (vm.stats.total - done) / (time.perf_counter() - began), vm


def translation_rate(image: GuestImage) -> float:
    """Translate a block at every instruction start of the guest's line map, repeatedly."""
    vm = Vm(image, "bt")
    translator = vm.executor.translator
    starts = [line.address for line in image.lines]
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < 1.0:
        for address in starts:
            fragment = translator.translate(address)
            if fragment is None:  # the cache is full: start again with an empty one
                vm.executor.cache.flush()
                translator.pending_code.clear()
                continue
            done += len(fragment.insns) + (1 if fragment.callout else 0)
        translator.pending_code.clear()
    return done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trap-budget",
        type=int,
        default=300_000,
        help="instructions to time under trap (it is slow)",
    )
    args = parser.parse_args()
    image = load_guest("kernel_loop")
    raws, warms = [], []
    for _ in range(ROUNDS):  # interleaved, best of each: the machine may be busy
        raws.append(raw_unicorn(image, 200_000))
        warms.append(vmlab(image, "bt", TIMED, WARM_UP)[0])
    raw, bt = max(raws), max(warms)
    trap, _ = vmlab(image, "trap", args.trap_budget)
    whole, vm = vmlab(image, "bt", 10**9)
    assert vm.exit and vm.exit.status == 0, vm.exit
    print(f"{'kernel_loop':<14} {'instructions/s':>16} {'vs raw unicorn':>15}")
    print(f"{'raw unicorn':<14} {raw / 1e6:>12.1f} M/s {1:>14.0%}")
    print(f"{'trap':<14} {trap / 1e6:>12.2f} M/s {trap / raw:>14.1%}")
    print(f"{'bt, warm':<14} {bt / 1e6:>12.2f} M/s {bt / raw:>14.1%}")
    print(f"{'bt, whole run':<14} {whole / 1e6:>12.2f} M/s {whole / raw:>14.1%}")
    print(f"\nbt / trap: {bt / trap:.1f}× faster   (target ≥ 20×)")
    print(f"bt / raw unicorn: {bt / raw:.0%}   (target ≥ 25%)")
    tc = vm.executor.introspect()
    assert tc is not None
    t = tc.counters()
    print(
        f"translation cache: {t['fragments']} fragments, {t['chains']} chains, "
        f"{t['invalidations']} invalidations, {t['adaptive']} adaptive"
    )
    print(
        f"translation throughput: {translation_rate(load_guest('sensitive')) / 1e3:.0f} k "
        "guest instructions/s"
    )


if __name__ == "__main__":
    main()
