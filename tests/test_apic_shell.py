"""The APIC shell kernel (sample_guests/apicsh/): the 8259 masked, the local APIC's timer
periodic, the keyboard and COM1 through the I/O APIC, a ring-3 shell. It prints the same
and leaves the same screen under every mode, and under QEMU (the independent reference)."""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import time

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.guest.samples import SAMPLES_DIR
from hypervisor.session import run_guest
from hypervisor.vmm.inputs import Input, InputDevice, InputScript
from hypervisor.vmm.vm import Vm
from tests.test_platform import qemu_screen

QEMU = shutil.which("qemu-system-i386")
KERNEL = SAMPLES_DIR / "apicsh.elf"
SESSION = (  # what is typed at each prompt, and on what
    (InputDevice.KEYBOARD, "ticks\n"),
    (InputDevice.SERIAL, "help\n"),
    (InputDevice.KEYBOARD, "foo\n"),
)
EXIT = (InputDevice.SERIAL, "exit\n")


def _inputs(*typed: tuple[InputDevice, str]) -> tuple[Input, ...]:
    return tuple(Input(device, text) for device, text in typed)


def _ticks_masked(console: str) -> str:
    """The one timing-dependent number: how many timer interrupts came before `ticks`."""
    return re.sub(r"ticks: \d+", "ticks: N", console)


@pytest.fixture(scope="module")
def native():
    return run_guest("apicsh", "native", inputs=_inputs(*SESSION, EXIT))


def test_the_shell_runs_on_the_apics_with_the_8259_masked(native):
    console = native.console
    for line in ("8259: masked", "timer periodic at 100 Hz", "irq 1) and com1 (irq 4) routed"):
        assert line in console
    assert "timer: 3 ticks from the local apic" in console
    assert "$ help\ncommands: help, ticks, exit\n" in console  # typed on COM1
    assert "$ foo\nunknown command: foo\n" in console  # typed on the keyboard
    assert re.search(r"\$ ticks\nticks: \d+\n", console)
    assert (native.exit.reason, native.exit.status) == ("debug_exit", 0)


@pytest.mark.parametrize("mode", ["trap", "bt", "pv"])
def test_every_mode_prints_and_shows_what_bare_metal_does(native, mode):
    monitored = run_guest("apicsh", mode, inputs=_inputs(*SESSION, EXIT))
    assert monitored.console == native.console
    assert monitored.screen == native.screen
    assert monitored.exit == native.exit


@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")
def test_qemu_prints_and_shows_the_same(tmp_path):
    """The same lines typed on COM1 (QEMU's serial on a pipe) at each prompt; at the last
    prompt QEMU's screen is saved through its monitor, then `exit` ends it."""
    monitor, dump = tmp_path / "monitor.sock", tmp_path / "screen.bin"
    command = [str(QEMU), "-kernel", str(KERNEL), "-m", "32", "-display", "none", "-no-reboot"]
    command += ["-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    command += ["-monitor", f"unix:{monitor},server,nowait"]
    qemu = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert qemu.stdin is not None and qemu.stdout is not None
    out = b""
    deadline = time.monotonic() + 30

    def prompt(number: int) -> None:
        nonlocal out
        while out.count(b"$ ") < number:
            assert time.monotonic() < deadline, f"QEMU never reached prompt {number}: {out!r}"
            if select.select([qemu.stdout], [], [], 0.1)[0]:
                out += os.read(qemu.stdout.fileno(), 4096)

    try:
        for number, (_, text) in enumerate(SESSION, 1):
            prompt(number)
            qemu.stdin.write(text.encode())
            qemu.stdin.flush()
        prompt(len(SESSION) + 1)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(monitor))
            qemu_screen(sock, dump, deadline)
        qemu.stdin.write(EXIT[1].encode())
        qemu.stdin.flush()
        assert qemu.wait(timeout=30) == 1  # isa-debug-exit: (0 << 1) | 1
        out += qemu.stdout.read()
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait(timeout=30)
    serial = tuple(Input(InputDevice.SERIAL, text) for _, text in (*SESSION, EXIT))
    assert _ticks_masked(run_guest("apicsh", "native", inputs=serial).console) == _ticks_masked(
        out.decode()
    )
    assert _screen_masked(_at_last_prompt(serial[:-1])) == _screen_masked(_lines(dump.read_bytes()))


def _at_last_prompt(inputs: tuple[Input, ...]) -> list[str]:
    """The screen once the shell has run `inputs` and prompts again (an idle shell sleeps
    between timer ticks: a fixed budget would take thousands of wake-ups to use up)."""
    vm = Vm(load_guest("apicsh"), inputs=InputScript(inputs))
    while vm.console.count(b"$ ") <= len(inputs):
        vm.run(5_000)
    return vm.screen().lines()


def _lines(buffer: bytes) -> list[str]:
    text = buffer[::2].decode("cp437")
    return [text[row * 80 : row * 80 + 80].rstrip() for row in range(25)]


def _screen_masked(lines: list[str]) -> list[str]:
    return [_ticks_masked(line.rstrip()) for line in lines]


def test_the_committed_kernel_is_a_sample():
    assert KERNEL.is_file() and (SAMPLES_DIR / "apicsh" / "kernel.c").is_file()
