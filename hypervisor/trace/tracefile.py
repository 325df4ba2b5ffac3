"""Trace files: a recording saved with everything needed to replay it exactly.

Format 1 (all integers little-endian):

    offset  size  field
    0       8     magic b"VMLABTRC"
    8       2     format version (1)
    10      4     CRC-32 of the body
    14      8     length of the body in bytes
    22      …     body: zlib-compressed
                    u32 length of the header, the header (JSON, UTF-8),
                    then each column of header["columns"] ([name, typecode, count]) as raw
                    array bytes, in that order

The header holds the guest image itself (base64, with its SHA-256 and line map; a multiboot
kernel's command line and its modules, each with its string, content and SHA-256), the
configuration (mode, RAM size, step limit), the exit, the registers at step 0 and after the
last step, the instruction table, the non-instruction events ({"type": class name, fields}),
the instructor's annotations by step, the fast-forwarded stretches and the recording's small
indexes (register keyframes, per-address class history). A replay rebuilds the guest from the
file, checks its hash, and re-executes: runs are deterministic, so the file needs no memory
snapshot.

Any file that is not a complete format-1 trace raises `TraceFileError` with a one-line
message (never another exception): the header is checked against its declared schema
(traceschema.py: types, ranges, lengths, counts), the body is decompressed as it is read and
never beyond what the header declares, and the columns are checked against the header. A
file is written whole or not at all (a temporary file renamed over the target).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import struct
import sys
import zlib
from array import array
from pathlib import Path
from typing import Any

from hypervisor.files import FileWriteError, check_writable, write_atomically
from hypervisor.guest.bootinfo import Module
from hypervisor.guest.image import GuestImage
from hypervisor.guest.nasm import SourceLine
from hypervisor.schema import SchemaError
from hypervisor.text import visible
from hypervisor.trace.recording import REGISTERS, InsnInfo, Recording
from hypervisor.trace.skips import Skip, Skips
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.trace.traceschema import (
    MAX_COLUMNS,
    MAX_HEADER,
    MAX_RAM,
    check_columns,
    check_header,
    event_of,
)
from hypervisor.vmm.contract import DEFAULT_RAM, ExitInfo, ExitReason, Mode
from hypervisor.vmm.inputs import Input, InputScript

MAGIC = b"VMLABTRC"
VERSION = 1
_PREAMBLE = struct.Struct("<8sHIQ")
_COLUMNS = (
    "ids",
    "classes",
    "cpls",
    "reg_masks",
    "reg_values",
    "mem_steps",
    "mem_addresses",
    "mem_sizes",
    "mem_values",
    "holes",
)


class TraceFileError(Exception):
    """A trace file cannot be read; the message is one line for the user."""


@dataclasses.dataclass
class Trace:
    """A trace file's contents: the guest, how it ran, and the recording."""

    image: GuestImage
    mode: str
    limit: int
    recording: Recording


def save(path: str | Path, trace: Trace) -> None:
    recording, image = trace.recording, trace.image
    columns = [getattr(recording, name) for name in _COLUMNS]
    header = {
        "format": VERSION,
        "guest": {
            "name": image.name,
            "source": image.source,
            "sha256": image.sha256,
            "image": base64.b64encode(image.data).decode("ascii"),
            "lines": [[s.address, s.line, s.text] for s in image.lines],
            "cmdline": image.cmdline,
            "modules": [
                [m.string, _sha256(m.data), base64.b64encode(m.data).decode("ascii")]
                for m in image.modules
            ],
        },
        "config": {"mode": trace.mode, "ram_size": recording.ram_size, "limit": trace.limit},
        "steps": len(recording),
        "exit": dataclasses.asdict(recording.exit) if recording.exit else None,
        "registers": list(REGISTERS),
        "initial": list(recording.initial),
        "final": list(recording.final),
        "keyframes": [[offset, list(state)] for offset, state in recording.keyframes],
        "instructions": [[i.eip, i.raw.hex(), i.text, i.sensitive] for i in recording.instructions],
        "events": [{"type": type(e).__name__, **dataclasses.asdict(e)} for e in recording.events],
        "history": [[eip, list(s), list(c)] for eip, (s, c) in recording.history.items()],
        "skips": [
            [k.start, k.end, k.column, k.offset, [list(c) for c in k.counts], list(k.after)]
            for k in recording.skips.items
        ],
        "annotations": {str(step): text for step, text in sorted(recording.annotations.items())},
        "columns": [
            [name, _typecode(c), len(c)] for name, c in zip(_COLUMNS, columns, strict=True)
        ],
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    payload = b"".join([struct.pack("<I", len(encoded)), encoded, *map(_raw, columns)])
    body = zlib.compress(payload, 6)
    preamble = _PREAMBLE.pack(MAGIC, VERSION, zlib.crc32(body), len(body))
    try:
        write_atomically(path, preamble + body)
    except FileWriteError as err:
        raise TraceFileError(visible(str(err))) from None


def load(path: str | Path) -> Trace:
    """The trace in the file at `path`, or TraceFileError with one line naming the problem
    (what came from the file made visible: it may hold control characters)."""
    try:
        return _load(path)
    except TraceFileError as err:
        raise TraceFileError(visible(str(err))) from None


def _load(path: str | Path) -> Trace:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise TraceFileError(f"{path}: {err.strerror or err}") from None
    if len(data) < _PREAMBLE.size or not data.startswith(MAGIC):
        raise TraceFileError(f"{path}: not a vmlab trace file")
    _, version, crc, length = _PREAMBLE.unpack_from(data)
    if version > VERSION:
        raise TraceFileError(
            f"{path}: trace format {version} is newer than this vmlab reads ({VERSION}): "
            "upgrade vmlab"
        )
    body = data[_PREAMBLE.size :]
    if len(body) < length:
        raise TraceFileError(f"{path}: truncated ({len(body):,} of {length:,} body bytes)")
    if zlib.crc32(body[:length]) != crc:
        raise TraceFileError(f"{path}: corrupt (checksum mismatch)")
    try:
        return _decode(_Inflater(body[:length]))
    except SchemaError as err:
        raise TraceFileError(f"{path}: corrupt: {err}") from None
    except RecursionError:
        raise TraceFileError(f"{path}: corrupt: the header nests too deeply") from None
    except (ValueError, zlib.error) as err:  # JSON, base64, UTF-8, zlib
        raise TraceFileError(f"{path}: corrupt ({type(err).__name__}: {err})") from None


class _Inflater:
    """The body, decompressed as it is read and never past what the header declares: a
    small file cannot make the reader hold more than the limits (a zlib bomb stops early)."""

    def __init__(self, body: bytes) -> None:
        self._stream = zlib.decompressobj()
        self._input = body

    def read(self, size: int) -> bytes:
        parts, wanted = [], size
        while wanted:
            part = self._stream.decompress(self._input, min(wanted, 1 << 24))
            self._input = self._stream.unconsumed_tail
            if not part:
                raise SchemaError(f"the body ends {wanted:,} bytes early")
            parts.append(part)
            wanted -= len(part)
        return b"".join(parts)

    def finish(self) -> None:
        if self._stream.decompress(self._input, 1) or not self._stream.eof:
            raise SchemaError("data after the last column")


def _decode(body: _Inflater) -> Trace:
    (size,) = struct.unpack("<I", body.read(4))
    if size > MAX_HEADER:
        raise SchemaError(f"a header of {size:,} bytes (at most {MAX_HEADER:,})")
    header = json.loads(body.read(size))
    check_header(header)
    guest = header["guest"]
    data = base64.b64decode(guest["image"], validate=True)
    if _sha256(data) != guest["sha256"].lower():
        raise SchemaError("the embedded guest image does not match its hash")
    lines = tuple(SourceLine(a, n, t) for a, n, t in guest["lines"])
    modules = []
    for index, (string, sha256, encoded) in enumerate(guest.get("modules", [])):
        module = base64.b64decode(encoded, validate=True)
        if _sha256(module) != sha256.lower():
            raise SchemaError(f"header.guest.modules[{index}]: does not match its hash")
        modules.append(Module(module, string))
    image = GuestImage(
        guest["name"], data, lines, guest["source"], tuple(modules), guest.get("cmdline", "")
    )
    config = header["config"]
    recording = Recording(guest["name"], config["mode"], guest["sha256"], config["ram_size"])
    _read_columns(body, header["columns"], recording)
    try:
        recording.skips = Skips(
            [
                Skip(a, b, c, o, tuple(map(tuple, n)), tuple(r))
                for a, b, c, o, n, r in header.get("skips", [])
            ]
        )
    except ValueError as err:
        raise SchemaError(f"header.skips: {err}") from None
    recording.initial = tuple(header["initial"])
    recording.final = tuple(header["final"])
    recording.keyframes = [(o, tuple(s)) for o, s in header["keyframes"]]
    recording.instructions = [
        InsnInfo(eip, bytes.fromhex(raw), text, sensitive)
        for eip, raw, text, sensitive in header["instructions"]
    ]
    recording.events = [event_of(e) for e in header["events"]]
    recording.history = {
        eip: (array("I", steps), bytearray(codes)) for eip, steps, codes in header["history"]
    }
    recording.annotations = {int(step): text for step, text in header["annotations"].items()}
    exit_info = header["exit"]
    recording.exit = _exit(exit_info) if exit_info else None
    check_columns(recording, header["steps"])
    recording.reindex()
    return Trace(image, Mode(config["mode"]), config["limit"], recording)


def _read_columns(body: _Inflater, declared: list, recording: Recording) -> None:
    if [name for name, _, _ in declared] != list(_COLUMNS):
        raise SchemaError(f"header.columns: not the columns {', '.join(_COLUMNS)}")
    columns = []
    for name, typecode, count in declared:
        column = getattr(recording, name)
        if typecode != _typecode(column):
            raise SchemaError(f"column {name} has type {typecode!r}")
        columns.append((name, typecode, count * (1 if typecode == "B" else column.itemsize)))
    if sum(nbytes for _, _, nbytes in columns) > MAX_COLUMNS:
        raise SchemaError(f"columns of more than {MAX_COLUMNS:,} bytes")
    for name, typecode, nbytes in columns:
        raw = body.read(nbytes)
        if typecode == "B":
            setattr(recording, name, bytearray(raw))
            continue
        column = array(typecode)
        column.frombytes(raw)
        if sys.byteorder == "big":
            column.byteswap()
        setattr(recording, name, column)
    body.finish()


def _exit(fields: dict[str, Any]) -> ExitInfo:
    return ExitInfo(ExitReason(fields["reason"]), fields["status"], fields["detail"])


def _typecode(column: array | bytearray) -> str:
    return column.typecode if isinstance(column, array) else "B"


def _raw(column: array | bytearray) -> bytes:
    if isinstance(column, array) and sys.byteorder == "big":
        column = array(column.typecode, column)
        column.byteswap()
    return bytes(column)


def check_target(path: str | Path) -> None:
    """A trace can be saved at `path` (checked before a long recording, not after it)."""
    try:
        check_writable(path)
    except FileWriteError as err:
        raise TraceFileError(visible(str(err))) from None


def record(
    image: GuestImage,
    mode: str,
    max_insns: int,
    inputs: tuple[Input, ...] = (),
    ram_size: int = DEFAULT_RAM,
) -> Trace:
    """Run a guest traced to its end (or `max_insns`) with `inputs`, and return it as a
    trace (which keeps each input with the step it arrived at)."""
    if ram_size > MAX_RAM:
        raise TraceFileError(f"a trace file holds a VM of at most {MAX_RAM >> 20} MiB of RAM")
    script = InputScript(inputs)
    machine = TimeMachine(image, mode, limit=max_insns, inputs=script, ram_size=ram_size)
    machine.extend(max_insns)
    return Trace(image, mode, max_insns, machine.recording)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
