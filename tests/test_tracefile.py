"""Trace files from others: any file either loads into a trace that replays, or is refused with
one line naming the problem — never a traceback, never gigabytes, never a raw control code."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypervisor.guest.image import load_guest
from hypervisor.trace import tracefile
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.trace.tracefile import MAGIC, VERSION, TraceFileError
from tests.conftest import examples
from vmlab.cli import main

_PREAMBLE = struct.Struct("<8sHIQ")


@cache
def real_file(guest: str, mode: str, steps: int) -> bytes:
    """A real trace file's bytes (recorded once)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.vmtrace"
        tracefile.save(path, tracefile.record(load_guest(guest), mode, steps))
        return path.read_bytes()


def payload_of(data: bytes) -> bytes:
    return zlib.decompress(data[_PREAMBLE.size :])


def wrap(payload: bytes) -> bytes:
    """A file around `payload`, with a right length and checksum (so the damage is inside)."""
    body = zlib.compress(payload, 1)
    return _PREAMBLE.pack(MAGIC, VERSION, zlib.crc32(body), len(body)) + body


def header_of(data: bytes) -> dict:
    payload = payload_of(data)
    (size,) = struct.unpack_from("<I", payload)
    return json.loads(payload[4 : 4 + size])


def with_header(data: bytes, header: dict) -> bytes:
    payload = payload_of(data)
    (size,) = struct.unpack_from("<I", payload)
    encoded = json.dumps(header).encode()
    return wrap(struct.pack("<I", len(encoded)) + encoded + payload[4 + size :])


def refused(tmp_path: Path, data: bytes, name: str = "bad.vmtrace") -> str:
    """The one line a file is refused with (the test fails if it loads)."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(TraceFileError) as caught:
        tracefile.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.isprintable(), message
    return message


HELLO = ("hello", "trap", 3000)


def changed(**fields) -> bytes:
    data = real_file(*HELLO)
    header = header_of(data)
    for dotted, value in fields.items():
        *parents, last = dotted.split("__")
        target = header
        for key in parents:
            target = target[key]
        target[last] = value
    return with_header(data, header)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (lambda: wrap(b"\x01\x02"), "ends"),  # a body shorter than its header's length
        (lambda: wrap(struct.pack("<I", 40_000) + b"[" * 40_000), "nests too deeply"),
        (lambda: changed(config__mode="warp"), "config.mode"),
        (lambda: changed(config__ram_size=2**31), "config.ram_size"),
        (lambda: changed(config__ram_size=(4 << 20) + 3), "multiple"),
        (lambda: changed(config__ram_size="4M"), "config.ram_size"),
        (lambda: changed(config__limit=0), "config.limit"),
        (lambda: changed(steps=10**12), "steps"),
        (lambda: changed(guest__name="x" * 100_000), "guest.name"),
        (lambda: changed(events=[{"type": "Exploit"}]), "events[0]"),
        (lambda: changed(exit={"reason": "bored", "status": None, "detail": ""}), "exit.reason"),
        (lambda: changed(annotations={"-1": "x"}), "annotations"),
        (lambda: changed(keyframes=[]), "keyframes"),
        (lambda: changed(extra=1), "unknown extra"),
    ],
)
def test_a_crafted_file_is_refused_with_one_line_naming_the_problem(tmp_path, data, problem):
    assert problem in refused(tmp_path, data())


def test_a_zlib_bomb_is_refused_before_it_is_inflated(tmp_path):
    bomb = zlib.compressobj(9)
    header = b'{"format": 1}'
    parts = [bomb.compress(struct.pack("<I", len(header)) + header)]
    zeros = bytes(1 << 20)
    parts += [bomb.compress(zeros) for _ in range(512)]  # 512 MiB of zeros, ~0.5 MB on disk
    body = b"".join([*parts, bomb.flush()])
    data = _PREAMBLE.pack(MAGIC, VERSION, zlib.crc32(body), len(body)) + body
    tracemalloc.start()
    try:
        message = refused(tmp_path, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "header" in message
    assert peak < 8 * len(data)  # the file and a little: not the 512 MiB it inflates to


def test_control_characters_from_a_file_never_reach_the_terminal(tmp_path):
    message = refused(tmp_path, b"", name="\x1b]0;owned\x07.vmtrace")
    assert "\x1b" not in message and "␛]0;owned␇.vmtrace" in message


MUTATIONS = ["truncate", "flip", "flip inside", "splice", "inflate"]


def mutate(data: bytes, other: bytes, how: str, at: float, byte: int) -> bytes:
    payload = payload_of(data)
    if how == "truncate":
        return data[: int(len(data) * at)]
    if how == "flip":
        index = int((len(data) - 1) * at)
        return data[:index] + bytes([data[index] ^ byte]) + data[index + 1 :]
    if how == "flip inside":  # past the checksum: the header and the columns themselves
        index = int((len(payload) - 1) * at)
        return wrap(payload[:index] + bytes([payload[index] ^ byte]) + payload[index + 1 :])
    if how == "splice":  # the start of one file, the rest of another
        theirs = payload_of(other)
        cut = int(min(len(payload), len(theirs)) * at)
        return wrap(payload[:cut] + theirs[cut:])
    index = int(len(payload) * at)  # inflate: zeros pushed in
    return wrap(payload[:index] + bytes(byte * 64) + payload[index:])


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    how=st.sampled_from(MUTATIONS),
    at=st.floats(0, 1),
    byte=st.integers(1, 255),
)
def test_any_damaged_real_file_replays_or_is_refused_with_one_line(tmp_path_factory, how, at, byte):
    data, other = real_file(*HELLO), real_file("syscalls", "trap", 3000)
    path = tmp_path_factory.mktemp("damaged") / "t.vmtrace"
    path.write_bytes(mutate(data, other, how, at, byte))
    try:
        trace = tracefile.load(path)
    except TraceFileError as err:
        assert "\n" not in str(err) and str(err).isprintable()
        return
    replay = TimeMachine(trace.image, trace.mode, recording=trace.recording, limit=trace.limit)
    problems = replay.verify()  # a file that loads replays (or says, line by line, where not)
    assert all("\n" not in p for p in problems)
    replay.seek(len(trace.recording))
    assert replay.position == len(trace.recording) or replay.exhausted


@pytest.mark.parametrize("target", ["missing/t.vmtrace", "."])
def test_record_into_a_missing_folder_or_onto_a_folder_says_so_before_running(
    tmp_path, capsys, target
):
    assert main(["record", "hello", "-o", str(tmp_path / target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("no such directory" in err or "is a directory" in err)
    assert list(tmp_path.iterdir()) == []


def test_a_save_that_fails_leaves_the_old_file_whole_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.vmtrace"
    path.write_bytes(real_file(*HELLO))
    trace = tracefile.load(path)

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(TraceFileError, match="No space left"):
        tracefile.save(path, trace)
    assert path.read_bytes() == real_file(*HELLO)
    assert [p.name for p in tmp_path.iterdir()] == ["t.vmtrace"]


def test_a_multiboot_kernel_recorded_with_its_boot_options_replays_from_the_file_alone(
    tmp_path, capsys
):
    """The command line, the modules (their content: the file may be gone) and the RAM
    size are in the trace file: a replay boots the kernel exactly as it was recorded."""
    module = tmp_path / "motd.txt"
    module.write_text("a module's first line\n")
    path = tmp_path / "course.vmtrace"
    run = ["record", "course", "--mode", "native", "--cmdline", "nopaging exit"]
    run += ["--module", f"{module}=motd", "--ram", "32M", "-o", str(path)]
    assert main(run) == 0
    module.unlink()
    trace = tracefile.load(path)
    assert trace.image.cmdline == "course nopaging exit"  # the kernel first, as QEMU gives it
    assert [(m.string, m.data) for m in trace.image.modules] == [
        ("motd", b"a module's first line\n")
    ]
    assert trace.recording.ram_size == 32 << 20
    assert trace.recording.exit is not None and trace.recording.exit.reason == "debug_exit"
    assert main(["replay", str(path), "--check"]) == 0
    assert "replays exactly" in capsys.readouterr().out


def test_a_module_that_does_not_match_its_hash_is_refused(tmp_path):
    module = tmp_path / "m.bin"
    module.write_bytes(b"module")
    image = load_guest("course", cmdline="nopaging exit", modules=(str(module),))
    path = tmp_path / "t.vmtrace"
    tracefile.save(path, tracefile.record(image, "native", 2_000, ram_size=32 << 20))
    header = header_of(path.read_bytes())
    header["guest"]["modules"][0][1] = "0" * 64
    assert "modules[0]: does not match its hash" in refused(
        tmp_path, with_header(path.read_bytes(), header)
    )


def test_record_refuses_more_ram_than_a_trace_file_holds(tmp_path, capsys):
    assert main(["record", "hello", "--ram", "512M", "-o", str(tmp_path / "t.vmtrace")]) == 2
    assert "at most 256 MiB" in capsys.readouterr().err
