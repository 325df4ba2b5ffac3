"""The block clock against the reference (unicorn's count=N): same counts, interrupts, console,
registers and events, on every sample and on random guests (I/O, faults, self-modifying
stores), stopped at random deadlines."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hypervisor.guest.image import GuestImage, load_guest, sample_names
from hypervisor.machine import clock, clockbuild
from hypervisor.machine.clockbuild import ClockKind, ClockUnavailable
from hypervisor.session import run_guest
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm
from tests.test_paging import FRAME_THROUGH_PAGES
from vmlab.cli import main

try:
    clockbuild.library()
    from hypervisor.machine.clockcheck import self_test

    self_test()
    HAVE_BLOCK = True
except ClockUnavailable:
    HAVE_BLOCK = False
needs_block = pytest.mark.skipif(not HAVE_BLOCK, reason="no C compiler: block clock unavailable")
# each clock in turn (the block clock where it builds): `_under(clock_env, kind)` selects it
each_clock = pytest.mark.parametrize("kind", ["count", pytest.param("block", marks=needs_block)])


def _under(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setenv(clock.ENV, kind)
    clock.choice.cache_clear()


@needs_block
@pytest.mark.parametrize("mode", ["native", "trap", "pv"])
@pytest.mark.parametrize("guest", sample_names())
def test_samples_run_the_same_under_both_clocks(
    guest: str, mode: str, clock_env: pytest.MonkeyPatch
) -> None:
    reports = []
    for kind in ("count", "block"):
        _under(clock_env, kind)
        report = run_guest(guest, mode, keep_events=True, max_insns=400_000)
        reports.append((report.as_json(), report.events))
    (count_json, count_events), (block_json, block_events) = reports
    assert block_json == count_json
    assert block_events == count_events  # interrupts, I/O, console: at the same steps


def test_the_choice_says_which_clock_and_why(clock_env: pytest.MonkeyPatch) -> None:
    _under(clock_env, "count")
    assert clock.choice().kind is ClockKind.COUNT
    assert "VMLAB_CLOCK=count" in clock.choice().reason
    _under(clock_env, "sundial")
    with pytest.raises(ClockUnavailable, match="expected count, block or auto"):
        clock.choice()


def test_no_compiler_falls_back_to_counting(
    clock_env: pytest.MonkeyPatch, tmp_path: object
) -> None:
    clock_env.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing built there yet
    clock_env.setenv("PATH", "")
    clock_env.delenv("CC", raising=False)
    clockbuild.library.cache_clear()
    import hypervisor.machine.clockcheck as check

    check.self_test.cache_clear()
    _under(clock_env, "auto")
    try:
        choice = clock.choice()
        assert choice.kind is ClockKind.COUNT
        assert "no C compiler" in choice.reason
    finally:
        clockbuild.library.cache_clear()
        check.self_test.cache_clear()


# ---------------------------------------------------------------- random guests
# Pieces of straight-line code (machine code): ALU, port I/O (a PIT write stops the slice),
# a store into the code page ahead (self-modifying), a short loop, INT3 (a fault the guest
# has no handler for ends the run: a crash at an exact count).
_PIECES = [
    b"\x40",  # inc eax
    b"\x01\xc3",  # add ebx, eax
    b"\x31\xd9",  # xor ecx, ebx
    b"\xe6\x80",  # out 0x80, al (an unassigned port: ignored)
    b"\xb0\x34\xe6\x43",  # mov al, 0x34; out 0x43, al (PIT control: stops the slice)
    b"\xb0\x10\xe6\x40\xe6\x40",  # PIT channel 0 count 0x1010
    b"\xe4\x40",  # in al, 0x40 (reads the PIT: needs the exact count)
    b"\xb9\x05\x00\x00\x00\x40\x49\x75\xfc",  # mov ecx, 5; l: inc eax; dec ecx; jnz l
    b"\xc6\x05\x00\x00\x00\x00\x90\xeb\x00",  # mov byte [after the jmp], 0x90; jmp $+2
    b"\xa1\x00\x00\xd0\x00",  # mov eax, [0xd00000] (open bus: all ones, an event)
    b"\x89\x1d\x10\x00\xd0\x00\x40",  # mov [0xd00010], ebx (open bus: dropped); inc eax
]
_SMC = 8


def _assemble(pieces: list[int]) -> bytes:
    code = bytearray()
    for index in pieces:
        piece = bytearray(_PIECES[index])
        if index == _SMC:  # store a NOP over the byte after the jmp: the next block changes
            # (a store into the running block itself makes QEMU restart it at the store, where
            # the count clock loses the lazy flags: selfmod's case (d) covers that one)
            target = 0x100000 + len(code) + 9
            piece[2:6] = target.to_bytes(4, "little")
        code += piece
    return bytes(code + b"\xcc")  # int3: no IDT, the guest crashes here


def _run_pieces(image: GuestImage, mode: str, slices: list[int], kind: str) -> list[object]:
    saved = os.environ.get(clock.ENV)
    os.environ[clock.ENV] = kind
    clock.choice.cache_clear()
    try:
        vm = Vm(image, mode)
        stops: list[object] = []
        for count in [*slices, 10_000]:
            vm.run(count)
            ram = hashlib.sha256(vm.machine.snapshot().ram).hexdigest()  # the checkpoint's
            stops.append((vm.stats.total, vm.ticks, vm.machine.state(), vm.exit, vm.console, ram))
        return stops
    finally:
        if saved is None:
            del os.environ[clock.ENV]
        else:
            os.environ[clock.ENV] = saved
        clock.choice.cache_clear()


@needs_block
@settings(max_examples=25, deadline=None)
# a deadline right after an open-bus read (the clock's step hook on it) and an open-bus read
# right after a port write (its check hook): the flags of the `add` before it (docs/clock.md)
@example(pieces=[1, 9], slices=[2], mode="native")
@example(pieces=[1, 3, 9], slices=[100], mode="trap")
@given(
    pieces=st.lists(st.integers(0, len(_PIECES) - 1), min_size=1, max_size=30),
    slices=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    mode=st.sampled_from(["native", "trap"]),
)
def test_random_guests_agree_at_every_stop(pieces: list[int], slices: list[int], mode: str) -> None:
    image = GuestImage("random", _assemble(pieces))
    count = _run_pieces(image, mode, slices, "count")
    assert _run_pieces(image, mode, slices, "block") == count


_ARITHMETIC = 0x8D5  # OF SF ZF AF PF CF
_GUESTS = Path(__file__).parent / "guests"


def _flags_left(vm: Vm) -> int:
    """The arithmetic flags the guest saw right after its MMIO access (flags_at_hole.asm)."""
    exit_info = vm.exit
    assert exit_info is not None and (exit_info.reason, exit_info.status) == ("debug_exit", 0)
    return vm.machine.state().esi & _ARITHMETIC


@needs_nasm
@each_clock
@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
@pytest.mark.parametrize(
    ("guest", "slices"),
    [
        ("flags_at_hole", [3]),  # a deadline right after the access: the step hook on it
        ("flags_at_hole", [1, 2]),
        ("flags_after_io", []),  # the check hook after a port write is on the access
        ("flags_after_io", [1]),
    ],
)
def test_flags_set_before_an_mmio_access_are_kept(
    kind: str, mode: str, guest: str, slices: list[int], clock_env: pytest.MonkeyPatch
) -> None:
    _under(clock_env, kind)
    vm = Vm(load_guest(str(_GUESTS / f"{guest}.asm")), mode)
    for count in [*slices, 10_000]:
        vm.run(count)
    assert _flags_left(vm) == 0x845  # CF PF ZF OF, as the ADD left them


@needs_nasm
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            "count",
            marks=pytest.mark.xfail(
                strict=True, reason="unicorn's count hook: a fault restores stale lazy flags"
            ),
        ),
        pytest.param("block", marks=needs_block),
    ],
)
def test_the_flags_pushed_by_a_page_fault_are_those_the_guest_had(
    kind: str, clock_env: pytest.MonkeyPatch
) -> None:
    """The count clock's hook is on every instruction: at a #PF right after an ALU
    instruction the frame gets 0x55 for 0x845 (found here, not fixed: docs/clock.md)."""
    _under(clock_env, kind)
    vm = Vm(load_guest(str(_GUESTS / "flags_at_fault.asm")), "native")
    vm.run(100_000)
    assert _flags_left(vm) == 0x845


@needs_nasm
@each_clock
def test_a_traced_run_keeps_the_flags_at_an_mmio_access(
    kind: str, clock_env: pytest.MonkeyPatch
) -> None:
    """The tracer's hook is on every instruction, the one making the access too."""
    _under(clock_env, kind)
    machine = TimeMachine(load_guest(str(_GUESTS / "flags_at_hole.asm")), "native")
    machine.extend(100)
    assert machine.exhausted
    assert _flags_left(machine.home) == 0x845


# Paging turned on in mid-run, with a page table on open bus: the walk reads all ones (while
# the block clock leaves the holes unmapped, a walk there would read zeros: mmio.py)
_PAGING = bytes.fromhex(
    "c7050000200083000000"  # mov dword [0x200000], 0x83 (PDE 0: a 4 MiB page over RAM)
    "c705080020000300d000"  # mov dword [0x200008], 0xd00003 (PDE 2: a table at 0xd00000)
    "0f20e083c8100f22e0"  # mov eax, cr4; or eax, 0x10 (PSE); mov cr4, eax
    "b8000020000f22d8"  # mov eax, 0x200000; mov cr3, eax
    "0f20c00d000000800f22c0"  # mov eax, cr0; or eax, 0x80000000; mov cr0, eax
    "8b1d00008000408b0d04008000cc"  # mov ebx, [0x800000]; inc eax; mov ecx, [0x800004]; int3
)


@needs_block
@pytest.mark.parametrize("slices", [[1000], [3, 7, 1, 1, 1]])
def test_a_page_walk_on_open_bus_is_the_same_under_both_clocks(slices: list[int]) -> None:
    image = GuestImage("paging", _PAGING)
    count = _run_pieces(image, "native", slices, "count")
    last = count[-1]
    assert isinstance(last, tuple)
    assert last[2].ebx == 0xFFFFFFFF  # through a page table of all ones
    assert _run_pieces(image, "native", slices, "block") == count


@needs_block
@pytest.mark.parametrize("mode", ["native", "trap"])
def test_code_run_at_a_second_linear_address_counts_the_same_under_both_clocks(
    asm: Callable[[str], GuestImage], mode: str, clock_env: pytest.MonkeyPatch
) -> None:
    """A block's address is linear: its instructions are counted from the bytes the CPU
    fetches there, not from RAM at that address (beyond RAM: open bus)."""
    image = asm(FRAME_THROUGH_PAGES)
    reports = []
    for kind in ("count", "block"):
        _under(clock_env, kind)
        reports.append(run_guest(image, mode, keep_events=True))
    assert reports[1].as_json() == reports[0].as_json()
    assert reports[1].events == reports[0].events


@needs_block
@pytest.mark.parametrize(("guest", "mode"), [("flags", "trap"), ("timer", "native")])
def test_recordings_are_the_same_under_both_clocks(
    guest: str, mode: str, clock_env: pytest.MonkeyPatch
) -> None:
    """A traced run stopped at deadlines inside blocks: no instruction recorded twice."""
    recordings = []
    for kind in ("count", "block"):
        _under(clock_env, kind)
        machine = TimeMachine(load_guest(guest), mode)
        for _ in range(5):
            machine.extend(997)  # deadlines that fall inside blocks
        recording = machine.recording
        recordings.append([recording.record(i) for i in range(len(recording))])
    assert recordings[0] == recordings[1]


def test_doctor_says_which_clock(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    kind = clock.choice().kind
    assert f"clock: {kind} (" in capsys.readouterr().out


def test_a_bad_clock_name_is_one_line(
    clock_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _under(clock_env, "sundial")
    assert main(["run", "hello"]) == 2
    assert capsys.readouterr().err.strip() == (
        "vmlab: VMLAB_CLOCK='sundial': expected count, block or auto"
    )
