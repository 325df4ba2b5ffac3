"""The PC's text screen and input devices, through real guests: VGA, 8042 keyboard, UART.

`tests/guests/pcdevices` checks each register as documented and prints ok/FAIL per check;
`tests/guests/keyecho` reads a line from COM1 by polling, then keys by interrupt, echoing
them on COM1 and the VGA screen. Both are also multiboot images that QEMU boots.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from hypervisor.events import InputDelivered
from hypervisor.guest.image import GuestImage, load_guest
from hypervisor.guest.nasm import assemble
from hypervisor.session import run_guest
from hypervisor.trace import tracefile
from hypervisor.trace.recording import registers_of
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.inputs import Input, InputDevice, InputScript, parse_input
from tests.test_platform import QEMU, qemu_serial
from vmlab.cli import main

GUESTS = Path(__file__).parent / "guests"
CHECKS = 46  # the checks pcdevices makes
KEYBOARD, SERIAL = InputDevice.KEYBOARD, InputDevice.SERIAL


def _image(name: str) -> GuestImage:
    return load_guest(str(GUESTS / f"{name}.bin"))


@pytest.mark.parametrize("name", ["pcdevices", "keyecho"])
def test_prebuilt_test_guests_are_fresh(name: str) -> None:
    if shutil.which("nasm") is None:
        pytest.skip("nasm is not installed")
    data, _ = assemble(GUESTS / f"{name}.asm")
    assert data == (GUESTS / f"{name}.bin").read_bytes(), f"rebuild tests/guests/{name}.bin"


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_device_registers_behave_as_documented(mode: str) -> None:
    report = run_guest(_image("pcdevices"), mode)
    assert "FAIL" not in report.console
    assert report.console.count("ok ") == CHECKS
    assert report.exit.reason == "debug_exit" and report.exit.status == 0


@pytest.mark.skipif(QEMU is None, reason="qemu-system-i386 is not installed")
def test_device_guest_reads_the_same_under_qemu(tmp_path: Path) -> None:
    serial = qemu_serial(GUESTS / "pcdevices.bin", serial=tmp_path / "serial.txt")
    assert serial == run_guest(_image("pcdevices"), "native").console


def test_keys_typed_reach_the_guest_as_under_qemu(tmp_path: Path) -> None:
    """The same keys through QEMU's monitor (`sendkey`) and `--keys`: the same echo on COM1
    and the same cells (characters and colours) on the VGA screen."""
    qemu = shutil.which("qemu-system-i386")
    if qemu is None:
        pytest.skip("qemu-system-i386 is not installed (Debian: qemu-system-x86)")
    monitor, serial, screen = tmp_path / "mon", tmp_path / "ser", tmp_path / "screen"
    command = [qemu, "-kernel", str(GUESTS / "keyecho.bin"), "-m", "32", "-display", "none"]
    command += ["-no-reboot", "-monitor", f"unix:{monitor},server,nowait"]
    command += ["-chardev", f"socket,id=s0,path={serial},server=on,wait=off"]
    command += ["-serial", "chardev:s0"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        com1, mon = _connect(serial), _connect(monitor)
        echoed = _read_until(com1, b"serial> ")
        com1.sendall(b"ab\r")
        echoed = _read_until(com1, b"keys> ", echoed)
        for key in ("h", "i", "spc", "o", "k"):
            mon.sendall(f"sendkey {key}\n".encode())
        echoed = _read_until(com1, b"keys> hi ok", echoed)
        mon.sendall(f'pmemsave 0xb8000 22 "{screen}"\n'.encode())  # quoted: not 22 / …
        deadline = time.monotonic() + 10
        while (not screen.exists() or screen.stat().st_size < 22) and time.monotonic() < deadline:
            time.sleep(0.05)
        cells = screen.read_bytes()
    finally:
        process.kill()
        process.wait()
    keys = [parse_input(SERIAL, "ab\\r"), parse_input(KEYBOARD, "hi ok")]
    machine = TimeMachine(_image("keyecho"), "native", inputs=InputScript(tuple(keys)))
    machine.seek(10**6)
    assert echoed.decode() == bytes(machine.vm.console).decode()
    assert cells == machine.vm.machine.read(0xB8000, 22)


def _connect(path: Path) -> socket.socket:
    for _ in range(200):
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(path))
            sock.settimeout(10)
            return sock
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"QEMU did not open {path}")


def _read_until(sock: socket.socket, text: bytes, data: bytes = b"") -> bytes:
    """`data`, and what `sock` sends after it, until it all ends with `text`."""
    while not data.endswith(text):
        chunk = sock.recv(100)
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_keys_and_serial_input_reach_a_guest_when_it_waits(capsys, mode: str) -> None:
    args = ["run", str(GUESTS / "keyecho.bin"), "--mode", mode, "--screen"]
    code = main([*args, "--serial-input", "abc\\n", "--keys", "hello world."])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("serial> abc\nkeys> hello world\n")
    assert "debug_exit (status 0)" in out
    assert out.splitlines()[-25] == "keys> hello world"  # the screen's first line


def test_inputs_at_a_step_arrive_at_that_step() -> None:
    inputs = (
        parse_input(SERIAL, "@50:x\\n"),
        parse_input(KEYBOARD, "@2000:ab"),
        parse_input(KEYBOARD, "@3000:c."),
    )
    report = run_guest(_image("keyecho"), "native", inputs=inputs, keep_events=True)
    delivered = [(e.step, e.device, e.text) for e in report.events if isinstance(e, InputDelivered)]
    assert delivered[0] == (50, "serial", "x\n")  # the guest polls COM1 at step 50: exact
    # Then it sleeps (HLT) with no timer: a sleep takes no steps, so each later input comes
    # when the guest sleeps, if that is before its step.
    assert [d[1:] for d in delivered[1:]] == [("keyboard", "ab"), ("keyboard", "c.")]
    assert delivered[1][0] <= 2000 and delivered[1][0] < delivered[2][0] <= 3000
    assert report.console == "serial> x\nkeys> abc\n"


def test_the_screen_has_the_guests_text_colours_and_cursor() -> None:
    report = run_guest(_image("keyecho"), "native", inputs=(Input(SERIAL, "\n"),))
    assert report.exit.reason == "halted"  # it sleeps: no key ever comes
    inputs = (Input(SERIAL, "\n"), Input(KEYBOARD, "hi\nyo."))
    script = InputScript(inputs)
    machine = TimeMachine(_image("keyecho"), "native", inputs=script)
    machine.seek(10**6)
    screen = machine.vm.screen()
    assert screen.text[0].startswith("keys> hi ") and screen.text[1].startswith("yo ")
    assert screen.attributes[0][:8] == b"\x1e" * 8  # yellow on blue
    assert screen.attributes[0][8] == 0x07  # the blank screen the BIOS left
    assert screen.cursor == (1, 2) and screen.blink


def test_json_gives_the_final_screen(capsys) -> None:
    main(["run", str(GUESTS / "pcdevices.bin"), "--json"])
    screen = json.loads(capsys.readouterr().out)["vms"][0]["screen"]
    assert len(screen) == 25 and screen[24] == " " * 79 + "!"


@pytest.mark.parametrize(
    "args",
    [["--keys", "é"], ["--keys", "@x:a"], ["--serial-input", "\\x"], ["--keys", "@5"]],
)
def test_bad_input_gets_one_line(capsys, args: list[str]) -> None:
    assert main(["run", str(GUESTS / "keyecho.bin"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vmlab: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("reboot", "through"),
    [
        ("mov al, 0xFE\nout 0x64, al", "keyboard controller"),  # pulse the reset line
        ("in al, 0x92\nor al, 1\nout 0x92, al", "port 0x92"),  # system control A: fast reset
    ],
)
def test_a_reset_request_ends_the_vm(tmp_path: Path, reboot: str, through: str) -> None:
    if shutil.which("nasm") is None:
        pytest.skip("nasm is not installed")
    source = tmp_path / "reboot.asm"
    source.write_text(f"bits 32\norg 0x100000\n{reboot}\njmp $\n")
    report = run_guest(load_guest(str(source)), "native")
    assert report.exit.reason == "reset" and through in report.exit.detail


@pytest.mark.parametrize("mode", ["native", "trap"])
def test_a_recorded_run_with_keys_replays_exactly(tmp_path: Path, mode: str) -> None:
    """Same screen and registers at every step: going back, and from the trace file. (Not
    under bt: there a re-execution from a checkpoint may take an interrupt a few steps away
    from where the recording took it, with or without input — `timer` shows it too.)"""
    image = _image("keyecho")
    script = InputScript((Input(SERIAL, "abc\n"), Input(KEYBOARD, "hello there.")))
    machine = TimeMachine(image, mode, inputs=script)
    machine.extend(10**6)
    end = machine.frontier
    assert machine.recording.exit is not None and machine.recording.exit.status == 0
    assert machine.recording.aligned  # one instruction entry a step, though keys interrupt
    steps = range(0, end + 1)
    seen = {}
    for step in steps:
        machine.seek(step)
        seen[step] = (machine.vm.screen(), registers_of(machine.vm))
    assert seen[end][0].text[0].startswith("keys> hello there ")
    for step in reversed(range(0, end + 1, 7)):
        machine.seek(step)
        assert (machine.vm.screen(), registers_of(machine.vm)) == seen[step], step
    path = tmp_path / "keys.vmtrace"
    tracefile.save(path, tracefile.Trace(image, mode, 10**6, machine.recording))
    trace = tracefile.load(path)
    replay = TimeMachine(trace.image, trace.mode, recording=trace.recording)
    for step in steps:
        replay.seek(step)
        assert (replay.vm.screen(), registers_of(replay.vm)) == seen[step], step
    assert replay.verify() == []


def test_input_typed_while_recording_wakes_a_sleeping_guest_at_the_frontier() -> None:
    script = InputScript((Input(SERIAL, "\n"),), interactive=True)
    machine = TimeMachine(_image("keyecho"), "native", inputs=script)
    machine.seek(10**6)
    asleep = machine.frontier  # an interactive run pauses there, waiting for input
    assert machine.recording.exit is None and machine.vm.exit is not None
    assert "sleeps until input" in machine.vm.exit.detail
    assert machine.send(KEYBOARD, "ok.")
    machine.extend(10**6)
    assert machine.recording.exit is not None and machine.recording.exit.status == 0
    events = [e for e in machine.recording.events if isinstance(e, InputDelivered)]
    assert [e.step for e in events if e.device == "keyboard"] == [asleep]
    machine.seek(0)
    machine.seek(machine.frontier)
    assert machine.vm.screen().text[0].startswith("keys> ok ")


def test_a_trace_file_recorded_with_input_keeps_it_and_replays_exactly(capsys, tmp_path) -> None:
    path = tmp_path / "keys.vmtrace"
    args = ["record", str(GUESTS / "keyecho.bin"), "--mode", "trap", "-o", str(path)]
    assert main([*args, "--serial-input", "ab\\n", "--keys", "yes."]) == 0
    assert "(debug_exit)" in capsys.readouterr().out
    events = tracefile.load(path).recording.events
    assert [(e.device, e.text) for e in events if isinstance(e, InputDelivered)] == [
        ("serial", "ab\n"),
        ("keyboard", "yes."),
    ]
    assert main(["replay", "--check", str(path)]) == 0
    assert "replays exactly" in capsys.readouterr().out
