"""Broken .vmlab files: whatever happened to a real file (cut short, a flipped bit, two
files spliced, bytes inserted) or whatever a hostile writer put in one with valid checksums,
reading it gives one VmFileError line naming the problem — never another exception."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from functools import cache

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hypervisor.encap import vmfile
from hypervisor.encap.state import capture
from hypervisor.encap.vmfile import HEADER, RUN, SECTION, VmFileError
from hypervisor.guest.image import load_guest
from hypervisor.vmm.vm import Vm


@cache
def real_file(sample: str, mode: str, steps: int) -> bytes:
    vm = Vm(load_guest(sample), mode)
    vm.run(steps)
    return vmfile.to_bytes(capture(vm))


FILES = [("timer", "bt", 20_000), ("syscalls", "trap", 9_000)]
ONE_OF_THEM = st.sampled_from(FILES).map(lambda spec: real_file(*spec))


def refused(data: bytes) -> str:
    with pytest.raises(VmFileError) as caught:
        vmfile.from_bytes(data, "vm.vmlab")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("vm.vmlab: ")
    return message


def test_the_real_files_read_back() -> None:
    for spec in FILES:
        assert vmfile.from_bytes(real_file(*spec)).step == spec[2]


MUTATION = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@MUTATION
@given(ONE_OF_THEM, st.data())
def test_a_truncated_file(data: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(0, len(data) - 1))
    assert "truncated" in refused(data[:cut]) or cut < HEADER.size


@MUTATION
@given(ONE_OF_THEM, st.data())
def test_a_flipped_bit(data: bytes, draw: st.DataObject) -> None:
    at = draw.draw(st.integers(0, len(data) - 1))
    bit = draw.draw(st.integers(0, 7))
    flipped = bytearray(data)
    flipped[at] ^= 1 << bit
    refused(bytes(flipped))


@MUTATION
@given(st.data())
def test_two_files_spliced(draw: st.DataObject) -> None:
    a, b = real_file(*FILES[0]), real_file(*FILES[1])
    cut_a = draw.draw(st.integers(0, len(a)))
    cut_b = draw.draw(st.integers(0, len(b)))
    spliced = a[:cut_a] + b[cut_b:]
    assume(spliced not in (a, b))
    refused(spliced)


@MUTATION
@given(ONE_OF_THEM, st.data())
def test_bytes_inserted(data: bytes, draw: st.DataObject) -> None:
    at = draw.draw(st.integers(0, len(data)))
    extra = draw.draw(st.binary(min_size=1, max_size=64))
    refused(data[:at] + extra + data[at:])


def test_trailing_data_is_named() -> None:
    assert "trailing data" in refused(real_file(*FILES[0]) + b"\0")


def test_a_text_file_is_not_taken_for_one() -> None:
    assert "not a vmlab" in refused(b"hello world, this is not a suspended VM at all\n")


# ---------------------------------------------------------------------- hostile writers
def sections(data: bytes) -> list[tuple[bytes, bytes]]:
    out, at = [], HEADER.size
    for _ in range(len(vmfile.TAGS)):
        tag, length, _ = SECTION.unpack_from(data, at)
        at += SECTION.size
        out.append((tag, data[at : at + length]))
        at += length
    return out


def rebuilt(parts: list[tuple[bytes, bytes]]) -> bytes:
    """A file with these sections and every checksum right: only validation can refuse it."""
    body = HEADER.pack(vmfile.MAGIC, vmfile.VERSION, len(parts), 0)
    for tag, payload in parts:
        body += SECTION.pack(tag, len(payload), hashlib.sha256(payload).digest()) + payload
    return body + vmfile.END + hashlib.sha256(body).digest()


def with_meta(change: dict) -> bytes:
    parts = sections(real_file(*FILES[0]))
    meta = json.loads(parts[0][1])
    for path, value in change.items():
        *where, last = path.split(".")
        target = meta
        for key in where:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    parts[0] = (b"META", json.dumps(meta).encode())
    return rebuilt(parts)


def test_a_rebuilt_file_with_nothing_changed_reads() -> None:
    assert vmfile.from_bytes(rebuilt(sections(real_file(*FILES[0])))).step == FILES[0][2]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"cpu.registers.eax": -1}, "cpu.registers.eax: -1 is outside"),
        ({"cpu.registers.cs": 0x10000}, "cpu.registers.cs"),
        ({"cpu.cpl": 4}, "cpu.cpl"),
        ({"mode": "vmx"}, "mode: 'vmx' is not one of"),
        ({"devices.pit.0.reload": None}, "devices.pit[0].reload: expected an integer"),
        ({"devices.pic.1.poll": 1}, "devices.pic[1].poll: expected true or false"),
        ({"cpu.msr": [[1, 2]] * 100}, "cpu.msr: expected a list of 0..64"),
        ({"history.traced": KeyError}, "history: missing traced"),
        ({"surprise": 1}, "unknown surprise"),
        ({"guest.sha256": "0" * 64}, "does not match its identity"),
        ({"ram_size": 4096}, "ram_size does not hold the guest image"),
        ({"console_size": 5}, "section CONS inflates to another size"),
    ],
)
def test_metadata_that_breaks_the_schema_is_named(change: dict, named: str) -> None:
    assert named in refused(with_meta(change))


def test_json_tricks_are_refused() -> None:
    parts = sections(real_file(*FILES[0]))
    for text in (b'{"a": NaN}', b'{"a": 1, "a": 2}', b"[" * 100_000, b"\xff\xfe"):
        parts[0] = (b"META", text)
        assert "not valid JSON" in refused(rebuilt(parts))


def ram_with(runs: list[tuple[int, int, bytes]]) -> bytes:
    parts = sections(real_file(*FILES[0]))
    payload = b"".join(RUN.pack(first, pages, len(data)) + data for first, pages, data in runs)
    parts[3] = (b"RAM ", payload)
    return rebuilt(parts)


def test_a_decompression_bomb_in_ram_is_stopped_at_its_declared_size() -> None:
    bomb = zlib.compress(bytes(64 << 20))  # 64 MiB of zeros claiming to be one page
    assert "inflates to another size" in refused(ram_with([(0, 1, bomb)]))


@pytest.mark.parametrize(
    ("runs", "named"),
    [
        ([(2000, 1, zlib.compress(bytes(4096)))], "past RAM"),
        ([(5, 1, zlib.compress(bytes(4096))), (2, 1, zlib.compress(bytes(4096)))], "order"),
        ([(0, 1, b"not zlib at all")], "does not decompress"),
        ([(0, 1, zlib.compress(bytes(100)))], "inflates to another size"),
    ],
)
def test_ram_runs_out_of_place_are_named(runs: list, named: str) -> None:
    assert named in refused(ram_with(runs))


def test_a_section_claiming_more_than_its_cap_is_refused_before_reading() -> None:
    data = bytearray(real_file(*FILES[0]))
    struct.pack_into("<Q", data, HEADER.size + 4, 1 << 40)
    assert "claims 1,099,511,627,776 bytes" in refused(bytes(data))
