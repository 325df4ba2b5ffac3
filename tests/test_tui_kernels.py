"""The UI on kernels as users bring them: the course kernel built with a student's own flags
(`tests/ckernels.py`) — a stripped ELF works by address and says why a name does not — and a
kernel that cannot start at all (too big for the RAM asked for), which ends the UI with its
reason rather than leaving every pane "starting…" for ever."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.guest.symbols import symbols_of
from hypervisor.trace import tracefile
from tests.ckernels import build_course
from tests.elfimages import HLT_LOOP, Seg, elf
from tests.test_fastforward_ui import prompt
from tests.test_tui import synchronously
from tui.app import VmlabApp
from tui.engine import Session


def _opened(app: VmlabApp) -> list[str]:
    """The notices `app` shows, as they come."""
    shown: list[str] = []
    notify = app.notify

    def noted(message: str, **options: Any) -> None:
        shown.append(message)
        notify(message, **options)

    app.notify = noted  # type: ignore[method-assign]
    return shown


@synchronously
async def test_a_stripped_kernel_breaks_by_address_and_says_it_has_no_names(tmp_path: Path):
    built = build_course(tmp_path / "build", "-O2", "-g")
    kmain = symbols_of(load_guest(str(built))).address_of("kmain")
    assert kmain is not None
    stripped = tmp_path / "stripped.elf"
    subprocess.run(["strip", "-o", str(stripped), str(built)], check=True)
    image = load_guest(str(stripped))
    app = VmlabApp(Session(vms=[(image, "trap")], breakpoints=("kmain",)))
    shown = _opened(app)
    async with app.run_test(size=(160, 50)):
        await app.settle()
        assert app.snapshot.vm.step == 0
    assert shown == [
        "--break: this guest has no symbols (a flat image, or a stripped ELF): use 0x…"
    ]
    app = VmlabApp(Session(vms=[(image, "trap")], breakpoints=(hex(kmain),)))
    async with app.run_test(size=(160, 50)):
        await app.settle()
        assert app.snapshot.vm.registers.guest.state.eip == kmain


@synchronously
async def test_a_kernel_that_cannot_start_ends_the_ui_with_the_reason(tmp_path: Path):
    path = tmp_path / "big.elf"  # its one segment at 5 MiB: outside the default 4 MiB of RAM
    path.write_bytes(elf([Seg(0x500000, 0x500000, HLT_LOOP)], entry=0x50000C))
    app = VmlabApp(Session(vms=[(load_guest(str(path)), "trap")]))
    async with app.run_test(size=(160, 50)) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if app.failure:
                break
    segment = "kernel segment 0 (0x500000-0x500010) lies outside RAM (4 MiB)"
    assert app.failure == f"cannot start: {path}: {segment}: give the VM more with --ram"
    assert app.return_code == 2


@pytest.mark.parametrize("mode", ["trap", "bt", "pv"])
@synchronously
async def test_the_code_pane_reads_a_paging_kernels_code_through_the_guests_tables(mode):
    """After the course kernel turns paging on, the code pane still lists its code: under a
    monitor the CPU's own tables are the monitor's (bt runs translated code and never fetches
    the guest's page), so the guest's code is read through the guest's tables."""
    course = load_guest("course")
    enter_user = symbols_of(course).address_of("enter_user")  # called with paging on
    app = VmlabApp(Session(vms=[(course, mode)], breakpoints=("enter_user",)))
    async with app.run_test(size=(160, 50)):
        await app.settle()
        view = app.snapshot.vm
        assert view.registers.guest.state.eip == enter_user
        (row,) = [r for r in view.code if r.current]
        assert row.address == enter_user and row.text.endswith("; enter_user+0x0")
        assert row.insn == "push ebp"


@synchronously
async def test_a_replay_goes_to_a_function_or_event_found_in_its_recording():
    """`g kmain` and `F interrupt` in a replay (`vmlab replay FILE`): nothing is recorded
    ahead, the whole run is in the file already, so the place is looked up there."""
    course = load_guest("course")
    trace = tracefile.record(course, "trap", 40_000)  # past the first timer tick
    kmain = symbols_of(course).address_of("kmain")
    first = trace.recording.next_execution(kmain, 0)
    interrupt = trace.recording.next_step("interrupt", first)
    app = VmlabApp(Session(replay=trace))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await prompt(pilot, "g", "kmain")
        assert app.snapshot.vm.step == first
        assert app.snapshot.vm.registers.guest.state.eip == kmain
        await prompt(pilot, "F", "interrupt")
        assert app.snapshot.vm.step == interrupt


@synchronously
async def test_a_function_the_compiler_inlined_is_a_place_to_break():
    """At -O2 gcc inlines `static` functions called once (the course kernel's paging_start,
    show_boot, gdt_install): no symbol names them, but DWARF lists each inlined copy, and
    gdb breaks there. `--break paging_start` stops where its inlined body begins."""
    course = load_guest("course")
    assert symbols_of(course).address_of("paging_start") is None  # no symbol of its own
    body = range(181, 200)  # kernel.c: paging_start's lines
    app = VmlabApp(Session(vms=[(course, "native")], breakpoints=("paging_start",)))
    async with app.run_test(size=(160, 50)):
        await app.settle()
        (row,) = [r for r in app.snapshot.vm.code if r.current]
        assert row.line in body and "kmain+0x" in row.text
        assert app.snapshot.vm.console.endswith("timer: 3 ticks\n")  # called right after


@pytest.mark.parametrize(
    "cflags",
    [("-O0", "-gdwarf-4"), ("-O2", "-gdwarf-5", "-fno-omit-frame-pointer"), ("-O3", "-g")],
)
@synchronously
async def test_a_students_build_breaks_at_kmain_with_its_source_line(cflags, tmp_path: Path):
    """Other optimisation and DWARF versions than the committed build's: kmain's row names
    its first line (read from the build folder DWARF records), and a step back is exact."""
    built = build_course(tmp_path / "build", *cflags)
    kmain = symbols_of(load_guest(str(built))).address_of("kmain")
    app = VmlabApp(Session(vms=[(load_guest(str(built)), "trap")], breakpoints=("kmain",)))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        (row,) = [r for r in app.snapshot.vm.code if r.current]
        assert row.address == kmain
        assert "; void kmain(uint32_t magic, uint32_t mbi_address) {  · kmain+0x0" in row.text
        await pilot.press("s", "s", "b", "b")
        await app.settle()
        assert app.snapshot.vm.registers.guest.state.eip == kmain
