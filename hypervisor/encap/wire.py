"""The frames of the host protocol (docs/host-protocol.md) and its client: length-prefixed
JSON with an optional binary payload. Below the UI and the command line, so that both (a
cluster view, the manager) speak to hosts with one client.

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
from hypervisor.encap.migration import MigrationFailed
from hypervisor.schema import SchemaError

FRAME = struct.Struct("<II")  # header length, payload length
MAX_HEADER = 64 << 10
MAX_PAYLOAD = 160 << 20  # a 128 MiB VM's pages, compressed or not, with room to spare
TIMEOUT = 30.0


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


class HostError(MigrationFailed):
    """A host refused a command (its reason)."""


class HostClient:
    """A connection to a host (or a cluster's manager), authenticated."""

    def __init__(self, address: str, token: str) -> None:
        host, _, port = address.rpartition(":")
        try:
            self.sock = socket.create_connection((host or "127.0.0.1", int(port)), TIMEOUT)
        except (OSError, ValueError) as err:
            raise MigrationFailed(f"cannot reach the host at {address}: {err}") from None
        self.call("hello", token=token)

    def call(self, op: str, payload: bytes = b"", **fields: Any) -> tuple[dict[str, Any], bytes]:
        try:
            send(self.sock, {"op": op, **fields}, payload)
            reply, data = recv(self.sock)
        except (OSError, ProtocolError) as err:
            raise MigrationFailed(f"{op}: the host is gone ({err})") from None
        if not reply.get("ok"):
            raise HostError(str(reply.get("error", "refused")))
        return reply, data

    def close(self) -> None:
        self.sock.close()
