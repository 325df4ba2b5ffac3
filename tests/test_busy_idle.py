"""A guest that idles in a busy loop (`sti; jmp $`, a tutorial kernel's `while (1);`) still
gets its interrupts: a key typed at a step is taken before the next instruction, in every
mode, and the STI byte before the spinning EIP does not hold interrupts off for ever.

A key typed "when the guest next waits" goes in when it spins so.

`tests/guests/busyidle` prints each key's make code from its keyboard handler on COM1 and
ends through the debug exit after three keys (QEMU, given the same keys with `sendkey`,
prints the same line).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.guest.nasm import assemble
from hypervisor.session import run_guest
from hypervisor.vmm.inputs import InputDevice, parse_input
from tests.conftest import needs_nasm
from tests.test_platform import build

GUESTS = Path(__file__).parent / "guests"


def test_prebuilt_busyidle_is_fresh() -> None:
    if shutil.which("nasm") is None:
        pytest.skip("nasm is not installed")
    data, _ = assemble(GUESTS / "busyidle.asm")
    assert data == (GUESTS / "busyidle.bin").read_bytes(), "rebuild tests/guests/busyidle.bin"


@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_keys_reach_a_guest_spinning_after_sti(mode: str) -> None:
    keys = parse_input(InputDevice.KEYBOARD, "@20000:abc")
    report = run_guest(
        load_guest(str(GUESTS / "busyidle.bin")), mode, max_insns=1_000_000, inputs=(keys,)
    )
    assert report.console == "keys> 1e 30 2e \n"
    assert report.exit.reason == "debug_exit" and report.exit.status == 0
    # each key's interrupt comes within a few instructions of its step, not at a slice's end
    assert report.instructions["total"] < 20_300


@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_keys_typed_when_the_guest_waits_reach_a_spinning_guest(mode: str) -> None:
    """`--keys TEXT` without a step: a guest spinning on `jmp $` with interrupts on waits for
    input as surely as one that halts or polls, so the text goes in there."""
    keys = parse_input(InputDevice.KEYBOARD, "abc")
    report = run_guest(
        load_guest(str(GUESTS / "busyidle.bin")), mode, max_insns=1_000_000, inputs=(keys,)
    )
    assert report.console == "keys> 1e 30 2e \n"
    assert report.exit.reason == "debug_exit" and report.exit.status == 0


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_keys_typed_when_the_guest_waits_reach_a_guest_spinning_between_ticks(
    tmp_path: Path, mode: str
) -> None:
    """The same with the PIT firing 100 times a second (`tests/guests/tickidle`): each time
    slice ends at a tick, and one that ends there has entered the timer handler, so the spin
    must be looked for before the tick (native never saw it: the keys never went in).
    QEMU, given a, b, c with `sendkey`, prints the same line."""
    keys = parse_input(InputDevice.KEYBOARD, "abc")
    image = load_guest(str(build(tmp_path, "tickidle")))
    report = run_guest(image, mode, max_insns=1_000_000, inputs=(keys,))
    assert report.console == "keys> 1e 30 2e \n"
    assert report.exit.reason == "debug_exit" and report.exit.status == 0
