"""Shared test helpers: small guests written inline in NASM, and the Hypothesis profiles.

Profiles: `ci` (chosen when CI=true) draws the same examples on every run, so a red CI run is
red again on rerun and a green one does not turn red by luck; `dev` (the default) draws new
random examples each run; `deep` (HYPOTHESIS_PROFILE=deep) draws many more of them, for a
local search before a change lands. A case that ever failed is pinned with @example.
"""

from __future__ import annotations

import gc
import os
import shutil
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from hypervisor.guest.image import GuestImage, load_guest
from hypervisor.machine import clock

DEEP = 8  # how many times more examples the deep profile draws

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.register_profile("deep")
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI", "").lower() == "true" else "dev"
)
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """A test's number of examples under the current profile (`n`, or DEEP times more)."""
    return n * DEEP if PROFILE == "deep" else n


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (pyproject's addopts) runs the suite on every core, but one test file named by
    hand in this process: two workers take ~2 s to start, as long as most files take
    (`-n 2` still spreads one slow file). None: pytest-xdist's own count, the cores."""
    files = {arg.split("::")[0] for arg in config.args}
    return 0 if len(files) == 1 and next(iter(files)).endswith(".py") else None


HAVE_NASM = shutil.which("nasm") is not None
needs_nasm = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed (CI installs it)")


@pytest.fixture
def asm(tmp_path: Path) -> Callable[[str], GuestImage]:
    """Assemble a snippet (contract header added) into a guest image."""
    if not HAVE_NASM:
        pytest.skip("nasm is not installed (CI installs it)")

    def build(body: str, name: str = "snippet") -> GuestImage:
        source = tmp_path / f"{name}.asm"
        source.write_text("bits 32\norg 0x100000\n" + textwrap.dedent(body))
        return load_guest(str(source))

    return build


COLLECT_EVERY = 1.0  # seconds of tests between two full collections


@pytest.fixture(autouse=True)
def _memory_back():
    """VMs die in reference cycles (unicorn's callbacks hold their machine), MiBs each,
    which only a full collection frees, and the collector's own schedule runs one rarely in
    a process this full of long-lived objects: collect after a test when a second of tests
    has passed since the last time, so the suite holds about a second's worth of dead VMs,
    not all of them (issue 11.5), for a collection or two a second."""
    yield
    if time.perf_counter() - _last_collect[0] >= COLLECT_EVERY:
        gc.collect()
        _last_collect[0] = time.perf_counter()


_last_collect = [0.0]


@pytest.fixture
def clock_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A test that sets VMLAB_CLOCK: the choice made under it is forgotten afterwards."""
    yield monkeypatch
    monkeypatch.undo()
    clock.choice.cache_clear()
