"""What a trace file's header may hold (format 1), declared with its limits, and the checks
that make its columns agree with it.

Trace files travel between instructors and students: a file is someone else's input. Every
header field is declared here with its type and bounds, the columns are checked against the
header once they are read, and so a file either loads into a recording that the replay, the
UI and the indexes can use throughout, or is refused with one line naming the first problem.
The limits are far above what vmlab writes (a 20-million-step run of a sample) and low
enough that no file can make the reader allocate more than about a gigabyte.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypervisor import events as event_types
from hypervisor.events import InsnClass
from hypervisor.schema import (
    Bool,
    Int,
    List,
    Obj,
    OneOf,
    Optional,
    Row,
    Schema,
    SchemaError,
    Str,
    Table,
)
from hypervisor.trace.recording import CLASSES, KEYFRAME, REGISTERS, Recording
from hypervisor.vmm.contract import LOAD_ADDRESS, ExitReason, Mode

MAX_STEPS = 200_000_000
MAX_RAM = 256 << 20
MAX_IMAGE = 16 << 20
MAX_MODULES = 64
MAX_HEADER = 256 << 20  # bytes of JSON
MAX_COLUMNS = 1 << 30  # bytes of all columns together
MAX_ROWS = 5_000_000  # instructions, events, line map entries, addresses with a history
TEXT = 1_000  # characters of a name, an instruction, a source line, a detail
NOTE = 10_000  # characters of one annotation
PAGE = 0x1000

U32 = Int(0, 0xFFFFFFFF)
ANY_INT = Int(-(1 << 63), (1 << 64) - 1)
STEP = Int(0, MAX_STEPS)
REGISTER_ROW = List(U32, len(REGISTERS), len(REGISTERS))
_COUNTS = List(Row((OneOf(frozenset(c.value for c in InsnClass)), STEP)), len(InsnClass))

# Event fields by their annotation: a new event type with a field of another type must say
# here how it is checked (the import fails until it does).
_FIELD_SCHEMAS: dict[str, Schema] = {
    "int": ANY_INT,
    "str": Str(TEXT * 4),
    "bool": Bool(),
    "int | None": Optional(ANY_INT),
    "tuple[int, ...]": List(ANY_INT, 16),
    "InsnClass": OneOf(frozenset(c.value for c in InsnClass)),
}


def _event_schema(cls: type) -> Obj:
    """Its fields; those with a default may be missing (files written before they existed)."""
    fields: dict[str, Schema] = {"type": OneOf(frozenset({cls.__name__}))}
    optional = set()
    for f in dataclasses.fields(cls):
        schema = _FIELD_SCHEMAS.get(str(f.type))
        assert schema is not None, f"{cls.__name__}.{f.name}: say how a {f.type} is checked"
        fields[f.name] = STEP if f.name == "step" else schema
        if f.default is not dataclasses.MISSING:
            optional.add(f.name)
    return Obj(fields, frozenset(optional))


EVENT_TYPES = {
    name: cls
    for name, cls in vars(event_types).items()
    if isinstance(cls, type) and issubclass(cls, event_types.Event) and cls is not event_types.Event
}
EVENT_SCHEMAS = {name: _event_schema(cls) for name, cls in EVENT_TYPES.items()}
_TUPLE_FIELDS = {
    name: [f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")]
    for name, cls in EVENT_TYPES.items()
}


class _Event(Schema):
    def check(self, value: Any, where: str) -> None:
        kind = value.get("type") if isinstance(value, dict) else None
        schema = EVENT_SCHEMAS.get(kind) if isinstance(kind, str) else None
        if schema is None:
            raise SchemaError(f"{where}: not an event of a known type")
        schema.check(value, where)


HEADER = Obj(
    {
        "format": Int(1, 1),
        "guest": Obj(
            {
                "name": Str(TEXT),
                "source": Str(4 * TEXT),
                "sha256": Str(64, hex=True),
                "image": Str(MAX_IMAGE * 4 // 3 + 4),
                "lines": List(Row((U32, Int(0, 10_000_000), Str(TEXT))), MAX_ROWS),
                "cmdline": Str(4 * TEXT),
                # (string, SHA-256, content in base64) of each multiboot module
                "modules": List(
                    Row((Str(4 * TEXT), Str(64, hex=True), Str(MAX_IMAGE * 4 // 3 + 4))),
                    MAX_MODULES,
                ),
            },
            optional=frozenset({"cmdline", "modules"}),  # older files: a flat image's only
        ),
        "config": Obj(
            {
                "mode": OneOf(frozenset(m.value for m in Mode)),
                "ram_size": Int(2 << 20, MAX_RAM, multiple=PAGE),
                "limit": Int(1, 1 << 40),
            }
        ),
        "steps": STEP,
        "exit": Optional(
            Obj(
                {
                    "reason": OneOf(frozenset(r.value for r in ExitReason)),
                    "status": Optional(Int(0, 0xFF)),
                    "detail": Str(TEXT),
                }
            )
        ),
        "registers": List(OneOf(frozenset(REGISTERS)), len(REGISTERS), len(REGISTERS)),
        "initial": REGISTER_ROW,
        "final": List(U32, len(REGISTERS)),
        "keyframes": List(Row((Int(0, MAX_COLUMNS), REGISTER_ROW)), MAX_STEPS // KEYFRAME + 1),
        "instructions": List(Row((U32, Str(30, hex=True), Str(TEXT), Bool())), MAX_ROWS),
        "events": List(_Event(), MAX_ROWS),
        "history": List(Row((U32, List(STEP, MAX_STEPS), List(Int(0, 0xFF), MAX_STEPS))), MAX_ROWS),
        "annotations": Table(STEP, Str(NOTE), 100_000),
        "columns": List(Row((Str(20), Str(1), Int(0, MAX_COLUMNS))), 20),
        # fast-forwarded stretches: start, end, column, register offset, counts, registers
        "skips": List(
            Row((STEP, STEP, STEP, Int(0, MAX_COLUMNS), _COUNTS, REGISTER_ROW)),
            MAX_ROWS,
        ),
    },
    optional=frozenset({"skips"}),  # written since fast-forward; older files have none
)


def check_header(header: Any) -> None:
    """`header` against HEADER, and the fields that must agree with each other."""
    HEADER.check(header, "header")
    if header["registers"] != list(REGISTERS):
        raise SchemaError("header.registers: recorded with another register layout")
    config, steps = header["config"], header["steps"]
    if config["limit"] < steps:
        raise SchemaError(f"header.config.limit: {config['limit']:,} is below {steps:,} steps")
    image_bytes = len(header["guest"]["image"]) * 3 // 4
    if LOAD_ADDRESS + image_bytes > config["ram_size"] - PAGE:
        raise SchemaError("header.config.ram_size: too small for the guest image")
    if len(header["final"]) not in (0, len(REGISTERS)):
        raise SchemaError("header.final: not a full set of registers")
    skips = header.get("skips", [])
    traced = steps - sum(end - start for start, end, *_ in skips)
    if traced < 0 or len(header["keyframes"]) != -(-traced // KEYFRAME):
        raise SchemaError("header.keyframes: not one every 4096 steps")
    for index, (_, steps_at, codes) in enumerate(header["history"]):
        if len(steps_at) != len(codes) or not steps_at:
            raise SchemaError(f"header.history[{index}]: steps and classes disagree")
    for index, event in enumerate(header["events"]):
        if event["step"] > steps:
            raise SchemaError(f"header.events[{index}]: step beyond the recording")


def event_of(fields: dict[str, Any]) -> event_types.Event:
    """An event from its checked fields."""
    name = fields.pop("type")
    for key in _TUPLE_FIELDS[name]:
        if key in fields:
            fields[key] = tuple(fields[key])
    if "cls" in fields:
        fields["cls"] = InsnClass(fields["cls"])
    return EVENT_TYPES[name](**fields)


def check_columns(recording: Recording, steps: int) -> None:
    """The columns, as read, against each other and against the header's tables (so that no
    index into them can fail later)."""
    r = recording
    if len(r) != steps:
        raise SchemaError("the register column disagrees with the step count")
    if not len(r.ids) == len(r.classes) == len(r.cpls) <= steps:
        raise SchemaError("the instruction columns disagree in length")
    if len(r.ids) and max(r.ids) >= len(r.instructions):
        raise SchemaError("an instruction column names no instruction of the table")
    if len(r.classes) and max(r.classes) >= len(CLASSES):
        raise SchemaError("a class column entry is no instruction class")
    if len(r.cpls) and max(r.cpls) > 3:
        raise SchemaError("a privilege level above 3")
    if len(r.reg_masks) and max(r.reg_masks) >> len(REGISTERS):
        raise SchemaError("a register mask names no register")
    changed = int.from_bytes(r.reg_masks.tobytes(), "little").bit_count()
    if changed != len(r.reg_values):
        raise SchemaError("the register values disagree with their masks")
    if not len(r.mem_steps) == len(r.mem_addresses) == len(r.mem_sizes) == len(r.mem_values):
        raise SchemaError("the memory columns disagree in length")
    for name in ("mem_steps", "holes"):
        column = getattr(r, name)
        if len(column) and (max(column) >= steps or list(column) != sorted(column)):
            raise SchemaError(f"the {name} column is out of order or beyond the recording")
    if any(offset > len(r.reg_values) for offset, _ in r.keyframes):
        raise SchemaError("a keyframe points past the register values")
    for steps_at, codes in r.history.values():
        if max(steps_at) >= steps or max(c & 0x7F for c in codes) >= len(CLASSES):
            raise SchemaError("a class history is beyond the recording")
