"""A strict schema for JSON read from files and the network: exact keys, exact types, ranges.

JSON decodes to plain data (no code runs), but plain data can still be hostile: a register of
-1, a list of a million entries, a key the reader does not know. Every document vmlab reads
from outside is checked against a schema first, and the first mismatch is named with its
path (`cpu.registers.eax: …`), so a broken file gets one clear line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class SchemaError(ValueError):
    """The document does not have the shape the schema says (the message names where)."""


@dataclass(frozen=True)
class Int:
    low: int = 0
    high: int = 0xFFFFFFFF


@dataclass(frozen=True)
class Str:
    longest: int = 256
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bool:
    pass


@dataclass(frozen=True)
class Float:
    pass


@dataclass(frozen=True)
class List:
    item: Spec
    longest: int
    shortest: int = 0


@dataclass(frozen=True)
class Tuple:
    items: tuple[Spec, ...]


@dataclass(frozen=True)
class Optional:
    spec: Spec


@dataclass(frozen=True)
class Map:
    """An object with keys the document chooses (names of counters), values alike."""

    value: Spec
    longest: int
    key_length: int = 64


Spec = Int | Str | Bool | Float | List | Tuple | Optional | Map | dict[str, "Spec"]

U8, U16, U32, U64 = Int(0, 0xFF), Int(0, 0xFFFF), Int(0, 0xFFFFFFFF), Int(0, (1 << 64) - 1)
BOOL = Bool()


def check(value: Any, spec: Spec, path: str = "") -> None:
    """Raise SchemaError at the first place `value` departs from `spec`."""
    where = path or "the document"
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object")
        missing = [key for key in spec if key not in value]
        extra = [key for key in value if key not in spec]
        if missing or extra:
            what = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}"
            raise SchemaError(f"{where}: {what}")
        for key, item in spec.items():
            check(value[key], item, f"{path}.{key}" if path else key)
    elif isinstance(spec, Int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(f"{where}: expected an integer")
        if not spec.low <= value <= spec.high:
            raise SchemaError(f"{where}: {value} is outside {spec.low}..{spec.high}")
    elif isinstance(spec, Bool):
        if not isinstance(value, bool):
            raise SchemaError(f"{where}: expected true or false")
    elif isinstance(spec, Float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise SchemaError(f"{where}: expected a number")
    elif isinstance(spec, Str):
        if not isinstance(value, str) or len(value) > spec.longest:
            raise SchemaError(f"{where}: expected a string of at most {spec.longest} characters")
        if spec.choices and value not in spec.choices:
            raise SchemaError(f"{where}: {value!r} is not one of {', '.join(spec.choices)}")
    elif isinstance(spec, Optional):
        if value is not None:
            check(value, spec.spec, path)
    elif isinstance(spec, List):
        if not isinstance(value, list) or not spec.shortest <= len(value) <= spec.longest:
            raise SchemaError(f"{where}: expected a list of {spec.shortest}..{spec.longest}")
        for index, item in enumerate(value):
            check(item, spec.item, f"{path}[{index}]")
    elif isinstance(spec, Tuple):
        if not isinstance(value, list) or len(value) != len(spec.items):
            raise SchemaError(f"{where}: expected a list of {len(spec.items)}")
        for index, (item, item_spec) in enumerate(zip(value, spec.items, strict=True)):
            check(item, item_spec, f"{path}[{index}]")
    elif isinstance(spec, Map):
        if not isinstance(value, dict) or len(value) > spec.longest:
            raise SchemaError(f"{where}: expected an object of at most {spec.longest} entries")
        for key, item in value.items():
            if len(key) > spec.key_length:
                raise SchemaError(f"{where}: a key longer than {spec.key_length} characters")
            check(item, spec.value, f"{path}.{key}")


def loads(text: bytes, spec: Spec) -> Any:
    """Decode JSON strictly and check it."""
    value = decode(text)
    check(value, spec)
    return value


def decode(text: bytes) -> Any:
    """JSON, strictly: no NaN or Infinity, no repeated keys (no schema yet)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_no_repeats)
    except (ValueError, RecursionError) as err:
        raise SchemaError(f"not valid JSON ({str(err).split(':')[0]})") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"repeated key {key!r}")
        result[key] = value
    return result
