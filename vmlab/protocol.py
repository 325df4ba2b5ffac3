"""The host protocol's messages (docs/host-protocol.md): length-prefixed JSON with
an optional binary payload (the frames: hypervisor/encap/wire.py), every request checked
against its schema.

Why not a serialization library: the messages are small JSON objects and the bulk (RAM pages,
suspended VMs) is already a checked binary format (.vmlab runs), so a frame is just two
lengths, a JSON header and the payload — the standard library decodes it without running
any code, and the strict schema of hypervisor/schema.py checks every field.
"""

from __future__ import annotations

from typing import Any

from hypervisor import schema
from hypervisor.encap.wire import FRAME, ProtocolError, encode, recv, send, split
from hypervisor.schema import U64, Int, OneOf, Optional, SchemaError, Str
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.inputs import InputDevice

__all__ = ["FRAME", "REQUESTS", "ProtocolError", "encode", "recv", "request", "send", "split"]

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
    "view": {"vm": NAME},
    "cluster": {},
}


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
