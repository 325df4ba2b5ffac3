"""The C sample kernels (sample_guests/course/): fresh, equal in every mode where they do not
page, and equal to QEMU booting the same file with `-kernel` (the independent reference)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hypervisor.events import Hypercall
from hypervisor.guest.image import kernel_names, load_guest
from hypervisor.guest.kernels import KERNELS, compiler_version
from hypervisor.guest.samples import SAMPLES_DIR, kernels_compiler, stale_kernels
from hypervisor.platform.board import VGA_TEXT
from hypervisor.session import run_guest
from hypervisor.vmm.vm import Vm
from tests.test_platform import qemu_screen
from tui.listing import Listing

RAM = 32 << 20
QEMU = shutil.which("qemu-system-i386")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")


def test_the_committed_kernels_are_fresh():
    if shutil.which("gcc") is None or shutil.which("nasm") is None:
        pytest.skip("gcc or nasm is not installed (CI installs them)")
    if compiler_version() != kernels_compiler():
        pytest.skip(f"built with {kernels_compiler()}, this machine has {compiler_version()}")
    assert stale_kernels() == [], "rebuild with: uv run python -m hypervisor.guest.samples"


def test_every_kernel_build_is_a_sample():
    ported = {k.name for k in KERNELS if k.name.endswith(".pv")}
    assert kernel_names() == sorted(k.name for k in KERNELS if k.name not in ported)
    assert ported <= {f"{name}.pv" for name in kernel_names()}  # a port of a sample
    assert {"course.pv", "course_hh.pv"} <= ported  # the paging kernels: direct paging
    assert (SAMPLES_DIR / "course" / "kernel.c").is_file()


def _module(tmp_path: Path) -> str:
    path = tmp_path / "motd.txt"
    path.write_text("a module's first line\nand its second\n")
    return str(path)


@pytest.mark.parametrize("mode", ["trap", "bt"])
def test_without_paging_the_kernel_prints_under_a_monitor_what_it_prints_on_bare_metal(
    mode, tmp_path
):
    image = load_guest("course", cmdline="nopaging exit", modules=(_module(tmp_path),))
    native = run_guest(image, "native", ram_size=RAM)
    monitored = run_guest(image, mode, ram_size=RAM)
    assert native.console == monitored.console
    assert (native.exit.reason, native.exit.status) == ("debug_exit", 0)
    assert (monitored.exit.reason, monitored.exit.status) == ("debug_exit", 0)
    for line in ("modules: 1", "'a module's first line'", "timer: 3 ticks", "cpl 3", "> exit"):
        assert line in native.console


@pytest.mark.parametrize("mode", ["trap", "bt", "pv"])
@pytest.mark.parametrize("name", ["course", "course_hh"])
def test_with_paging_a_monitor_prints_what_bare_metal_prints(name, mode):
    """Trap-and-emulate and binary translation run the paging kernels on shadow page
    tables (course_hh runs its kernel in the higher half: translated code by virtual
    address); so does pv run the unported build (unported = trap)."""
    native = run_guest(load_guest(name, cmdline="exit"), "native", ram_size=RAM)
    monitored = run_guest(load_guest(name, cmdline="exit"), mode, ram_size=RAM)
    assert monitored.console == native.console and monitored.exit == native.exit
    assert "page fault at 0xa0000000" in native.console  # a true fault, reflected


@pytest.mark.parametrize("name", ["course", "course_hh"])
def test_the_ported_kernels_page_directly_under_pv_and_print_what_bare_metal_prints(name):
    """The -DPARAVIRT builds change their page tables and CR3 by hypercalls (direct
    paging): the same output, every page fault the guest's own, none refused."""
    native = run_guest(load_guest(name, cmdline="exit"), "native", ram_size=RAM)
    ported = load_guest(name, paravirtual=True, cmdline="exit")
    assert ported.name == f"{name}.pv" and ported.paravirtual
    pv = run_guest(ported, "pv", ram_size=RAM, keep_events=True)
    assert pv.console == native.console and pv.exit == native.exit
    assert pv.hypercalls["new_baseptr"] >= 1 and pv.hypercalls["mmu_update"] >= 2
    assert pv.traps["#PF true"] == 1  # the demand-paged store: no hidden faults, no shadow
    assert not [e for e in pv.events if isinstance(e, Hypercall) and e.error]


def test_a_ported_kernel_is_refused_outside_pv():
    report = run_guest(load_guest("course", paravirtual=True), "trap", ram_size=RAM)
    assert report.exit.reason == "unsupported" and "paravirtual" in report.exit.detail


def _qemu(kernel: Path, cmdline: str, module: str, out: Path, monitor: Path | None = None):
    command = [QEMU or "qemu-system-i386", "-kernel", str(kernel), "-append", cmdline]
    command += ["-initrd", module, "-m", "32", "-display", "none", "-no-reboot"]
    command += ["-serial", f"file:{out}", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    if monitor is not None:
        command += ["-monitor", f"unix:{monitor},server,nowait"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _vmlab_console(name: str, cmdline: str, module: str) -> str:
    image = load_guest(str(SAMPLES_DIR / f"{name}.elf"), cmdline=cmdline, modules=(module,))
    return run_guest(image, "native", ram_size=RAM).console


def _compare_with_qemu(name: str, cmdline: str, tmp_path: Path) -> None:
    module, out = _module(tmp_path), tmp_path / "serial.txt"
    qemu = _qemu(SAMPLES_DIR / f"{name}.elf", cmdline, module, out)
    assert qemu.wait(timeout=30) == 1, qemu.stderr.read() if qemu.stderr else ""  # (0 << 1) | 1
    assert _vmlab_console(name, cmdline, module) == out.read_text()


@needs_qemu
def test_the_kernel_without_paging_prints_what_it_prints_under_qemu(tmp_path):
    _compare_with_qemu("course", "nopaging exit", tmp_path)


@needs_qemu
@pytest.mark.parametrize("name", ["course", "course_hh"])
def test_the_paging_kernels_print_what_they_print_under_qemu(name, tmp_path):
    _compare_with_qemu(name, "exit", tmp_path)


@needs_qemu
def test_the_final_screen_is_the_one_qemu_shows(tmp_path):
    """At its prompt (no `exit`: it waits for keys) the VGA text buffer holds what QEMU's
    does; vmlab's is guest RAM, QEMU's is read through its monitor."""
    module, out = _module(tmp_path), tmp_path / "serial.txt"
    monitor, dump = tmp_path / "monitor.sock", tmp_path / "screen.bin"
    kernel = SAMPLES_DIR / "course.elf"
    qemu = _qemu(kernel, "nopaging", module, out, monitor)
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text().endswith("> ")):
            assert time.monotonic() < deadline, "QEMU never reached the prompt"
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(monitor))
            qemu_screen(sock, dump, deadline)
            sock.sendall(b"quit\n")
    finally:
        if qemu.poll() is None:
            time.sleep(0.5)  # the quit on its way
            qemu.kill()
        qemu.wait(timeout=30)
    vm = Vm(load_guest(str(kernel), cmdline="nopaging", modules=(module,)), ram_size=RAM)
    vm.run(200_000)
    assert vm.console.decode().endswith("> ") and vm.exit is not None
    screen = vm.machine.read(VGA_TEXT[0], 4000)
    assert screen[::2] == dump.read_bytes()[::2]  # the characters
    assert screen == dump.read_bytes()  # and their attributes


def test_the_code_pane_shows_the_kernel_as_loaded_not_its_file():
    vm = Vm(load_guest("course"))
    entry = vm.machine.state().eip
    rows = Listing(vm.image).window(entry, vm.machine.read, 0, 1)
    instruction, _, symbol = rows[0].text.partition(";")
    assert (rows[0].address, instruction.strip(), symbol.strip()) == (entry, "cli", "_start+0x0")


def test_keys_typed_at_the_prompt_are_echoed():
    run = ["run", "course", "--cmdline", "nopaging", "--keys", "hi", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "vmlab.cli", *run],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "--keys" in done.stderr:
        pytest.skip("no keyboard input in this vmlab yet (the 8042 comes with issue 13.4)")
    assert json.loads(done.stdout)["vms"][0]["console"].endswith("> hi")
