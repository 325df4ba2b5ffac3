"""The terminal UI's responsiveness, headless (Textual's Pilot) on the demo session.

    uv run python benchmarks/bench_ui.py [--steps N]

Prints the step latency (a key press to its result applied to the panes, and to the next
repaint: median and p95, target p95 ≤ 16 ms), how many screen updates per second run mode
makes (target ≥ 20), and the cold start of a new process to the first frame. Prints; a
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import subprocess
import sys
import time

from hypervisor.guest.image import load_guest
from tui.app import VmlabApp
from tui.engine import Session

SIZE = (160, 50)
CADENCES = (
    (1 / 30, "30 a second (a held key's auto-repeat)"),
    (0.0, "back to back (each as soon as the last is painted)"),
)
COLD_START = """
import asyncio, sys, time
began = float(sys.argv[1])
from hypervisor.guest.image import load_guest
from tui.app import VmlabApp
from tui.engine import Session
async def main():
    flags = load_guest("flags")
    app = VmlabApp(Session(vms=[(flags, "trap"), (flags, "bt")]))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await pilot.pause()
        print(time.time() - began)
asyncio.run(main())
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def count_paints(app: VmlabApp) -> list[tuple[int, float]]:
    """Record when the app hands a screen update to the terminal driver (a repaint; the
    headless driver then drops it), with the number of snapshots applied by then."""
    paints: list[tuple[int, float]] = []
    display = app._display  # noqa: SLF001 (Textual's paint hook: no public one exists)

    def counted(screen: object, renderable: object) -> None:
        if renderable is not None:
            paints.append((app.frames, time.perf_counter()))
        display(screen, renderable)

    app._display = counted  # type: ignore[method-assign]  # noqa: SLF001
    return paints


async def step_latency(
    modes: tuple[str, ...], steps: int, cadence: float
) -> tuple[list[float], list[float]]:
    """From a key event reaching the app (as the terminal driver delivers it) to the
    snapshot of its result applied to every pane, and to the next repaint of the screen.
    Keys come `cadence` seconds apart (or as soon as the last one is painted, if later).
    Textual paints at most 60 times a second: a key that comes sooner than 16.7 ms after
    the last paint waits for the next one. Pilot's own `press` waits for the whole process
    to idle (~100 ms), so it is not used here."""
    from textual import events  # after `tui`, which sets Textual's frame rate as `vmlab` does

    flags = load_guest("flags")
    app = VmlabApp(Session(vms=[(flags, mode) for mode in modes]))
    applied, repainted = [], []
    async with app.run_test(size=SIZE):
        paints = count_paints(app)
        await app.settle()
        for key in ["s"] * steps + ["b"] * steps:
            frames = app.frames
            began = time.perf_counter()
            app.post_message(events.Key(key, key))
            while app.frames == frames:
                await asyncio.sleep(0.0005)
            applied.append((time.perf_counter() - began) * 1000)
            while not paints or paints[-1][0] <= frames:
                await asyncio.sleep(0.0005)
            painted = next(t for applied_frames, t in paints if applied_frames > frames)
            repainted.append((painted - began) * 1000)
            await asyncio.sleep(max(0.0, began + cadence - time.perf_counter()))
    return applied, repainted


async def run_mode_rate(modes: tuple[str, ...], seconds: float) -> tuple[float, int]:
    flags = load_guest("flags")
    app = VmlabApp(Session(vms=[(flags, mode) for mode in modes]))
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        await pilot.press("plus", "plus", "plus")  # the fastest speed
        await app.settle()
        await pilot.press("space")
        frames, step, began = app.frames, app.snapshot.vm.step, time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - began
        rate = (app.frames - frames) / elapsed
        done = (app.snapshot.vm.step - step) * seconds / elapsed
        await pilot.press("space")
    return rate, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    for modes, (cadence, how) in itertools.product((("trap",), ("trap", "bt")), CADENCES):
        applied, repainted = asyncio.run(step_latency(modes, args.steps, cadence))
        print(f"step latency, flags under {' + '.join(modes)}, {len(applied)} s/b presses {how}:")
        for what, times in (("applied", applied), ("repainted", repainted)):
            print(
                f"  key to {what:9}: median {statistics.median(times):5.1f} ms, "
                f"p95 {percentile(times, 0.95):5.1f} ms (target p95 ≤ 16 ms)"
            )
    for modes in (("trap",), ("trap", "bt")):
        rate, done = asyncio.run(run_mode_rate(modes, 3.0))
        print(
            f"run mode, flags under {' + '.join(modes)}: {rate:.0f} screen updates/s "
            f"(target ≥ 20), {done / 3:,.0f} steps/s"
        )
    cold = subprocess.run(
        [sys.executable, "-c", COLD_START, repr(time.time())],
        capture_output=True,
        text=True,
        check=True,
    )
    print(f"cold start to the first frame (a new process, headless): {float(cold.stdout):.2f} s")


if __name__ == "__main__":
    main()
