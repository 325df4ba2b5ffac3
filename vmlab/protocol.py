"""The host protocol's frames and messages (docs/host-protocol.md): length-prefixed JSON with
an optional binary payload, every message checked against its schema.

Why not a serialization library: the messages are small JSON objects and the bulk (RAM pages,
suspended VMs) is already a checked binary format (.vmlab runs), so a frame is just two
lengths, a JSON header and the payload — the standard library decodes it without running
any code, and the strict schema of hypervisor/schema.py checks every field.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from hypervisor import schema
from hypervisor.schema import U64, Int, OneOf, Optional, SchemaError, Str
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.inputs import InputDevice

FRAME = struct.Struct("<II")  # header length, payload length
MAX_HEADER = 64 << 10
MAX_PAYLOAD = 160 << 20  # a 128 MiB VM's pages, compressed or not, with room to spare
NAME = Str(64)
ADDRESS = Str(64)

REQUESTS: dict[str, dict[str, schema.Spec]] = {
    "hello": {"token": Str(256)},
    "create": {"guest": Str(256), "mode": OneOf(frozenset(Mode)), "name": Optional(NAME)},
    "list": {},
    "console": {"vm": NAME, "since": U64},
    "pause": {"vm": NAME},
    "resume": {"vm": NAME},
    "destroy": {"vm": NAME},
    "suspend": {"vm": NAME},
    "checkpoint": {"vm": NAME},
    "receive": {"mode": Optional(OneOf(frozenset(Mode))), "name": Optional(NAME)},
    "migrate": {"vm": NAME, "to": ADDRESS},
    "mig_open": {},
    "mig_pages": {"round": Int(0, 1 << 16)},
    "mig_commit": {},
    "mig_go": {},
    "mig_abort": {},
    "shutdown": {},
    "input": {"vm": NAME, "device": OneOf(frozenset(InputDevice)), "text": Str(4096)},
    "ft_start": {
        "guest": Str(256),
        "mode": OneOf(frozenset(Mode)),
        "name": NAME,
        "backup": ADDRESS,
    },
    "ft_backup": {"guest": Str(256), "mode": OneOf(frozenset(Mode)), "name": NAME},
    "ft_log": {},
}


class ProtocolError(ValueError):
    """A frame or message that breaks the protocol (the peer gets this text, the connection
    is closed if the frame itself could not be read)."""


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > MAX_HEADER or len(payload) > MAX_PAYLOAD:
        raise ProtocolError("message too large")
    return FRAME.pack(len(text), len(payload)) + text + payload


def send(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    sock.sendall(encode(header, payload))


def split(buffer: bytearray) -> tuple[bytes, bytes] | None:
    """Take one whole frame (header text, payload) off the front of `buffer`, or None while
    it is incomplete. ProtocolError for lengths past the caps: such a peer is cut off."""
    if len(buffer) < FRAME.size:
        return None
    head, size = FRAME.unpack_from(buffer)
    if head > MAX_HEADER or size > MAX_PAYLOAD:
        raise ProtocolError(f"a frame of {head:,} + {size:,} bytes is over the limits")
    end = FRAME.size + head + size
    if len(buffer) < end:
        return None
    text, payload = (
        bytes(buffer[FRAME.size : FRAME.size + head]),
        bytes(buffer[FRAME.size + head : end]),
    )
    del buffer[:end]
    return text, payload


def request(text: bytes) -> dict[str, Any]:
    """A request's header, checked: an object with a known `op` and exactly its fields."""
    try:
        header = schema.decode(text)
        if not isinstance(header, dict) or not isinstance(header.get("op"), str):
            raise SchemaError("a request is an object with an op")
        op = header["op"]
        if op not in REQUESTS:
            raise SchemaError(f"unknown op {op[:32]!r}")
        schema.check(header, {"op": Str(16), **REQUESTS[op]})
    except SchemaError as err:
        raise ProtocolError(str(err)) from None
    return header


def recv(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """One reply (blocking, for clients)."""
    buffer = bytearray()
    while True:
        frame = split(buffer)
        if frame is not None:
            try:
                reply = schema.decode(frame[0])
            except SchemaError:
                raise ProtocolError("the peer sent a reply that is not JSON") from None
            if not isinstance(reply, dict):
                raise ProtocolError("the peer sent a reply that is not an object")
            return reply, frame[1]
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        buffer += chunk
