"""One strict schema for JSON that others wrote: trace files, `.vmlab` files, host messages.

JSON decodes to plain data (no code runs), but plain data can still be hostile: the wrong
type, a register of -1, a list of a million entries, a string of a million characters, a key
the reader does not know. Each reader declares what it accepts — types, ranges, lengths,
exact keys — and `check` walks the value once against it, so the code after it meets only
what it was written for. The first mismatch raises `SchemaError` naming where it is
(`cpu.registers.eax: -1 is outside 0..4294967295`), so a broken file gets one clear line.

A plain `dict` of key -> schema is shorthand for `Obj` with every key required.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROOT = ""  # the `where` of a whole document: named "the document", its keys plainly


class SchemaError(ValueError):
    """A value does not match its schema; the message says where and why, on one line."""


class Schema:
    """What one place in a document may hold."""

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


Spec = Schema | dict[str, "Spec"]


def check(value: Any, spec: Spec, where: str = ROOT) -> None:
    """Raise SchemaError at the first place `value` departs from `spec`."""
    (Obj(spec) if isinstance(spec, dict) else spec).check(value, where)


def _fail(where: str, problem: str) -> SchemaError:
    return SchemaError(f"{where or 'the document'}: {problem}")


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _name(value: Any) -> str:
    return type(value).__name__


@dataclass(frozen=True)
class Int(Schema):
    low: int = 0
    high: int = 0xFFFFFFFF
    multiple: int = 1

    def check(self, value: Any, where: str) -> None:
        if type(value) is not int:
            raise _fail(where, f"expected an integer, not {_name(value)}")
        if not self.low <= value <= self.high:
            raise _fail(where, f"{value} is outside {self.low}..{self.high}")
        if value % self.multiple:
            raise _fail(where, f"{value} is not a multiple of {self.multiple}")


@dataclass(frozen=True)
class Bool(Schema):
    def check(self, value: Any, where: str) -> None:
        if type(value) is not bool:
            raise _fail(where, f"expected true or false, not {_name(value)}")


@dataclass(frozen=True)
class Float(Schema):
    def check(self, value: Any, where: str) -> None:
        if type(value) not in (int, float):
            raise _fail(where, f"expected a number, not {_name(value)}")


@dataclass(frozen=True)
class Str(Schema):
    longest: int = 256
    hex: bool = False  # only an even number of hex digits

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise _fail(where, f"expected a string, not {_name(value)}")
        if len(value) > self.longest:
            raise _fail(where, f"a string of {len(value):,} characters (at most {self.longest:,})")
        if self.hex and (len(value) % 2 or value.strip("0123456789abcdefABCDEF")):
            raise _fail(where, "not hex bytes")


@dataclass(frozen=True)
class OneOf(Schema):
    """One of a closed set of strings or integers (an enum's values)."""

    values: frozenset[Any]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str | int) or isinstance(value, bool) or value not in self.values:
            known = ", ".join(sorted(map(str, self.values)))
            raise _fail(where, f"{str(value)[:40]!r} is not one of {known}")


@dataclass(frozen=True)
class Optional(Schema):
    inner: Spec

    def check(self, value: Any, where: str) -> None:
        if value is not None:
            check(value, self.inner, where)


@dataclass(frozen=True)
class List(Schema):
    item: Spec
    longest: int
    shortest: int = 0

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise _fail(where, f"expected a list, not {_name(value)}")
        if not self.shortest <= len(value) <= self.longest:
            length = (
                f"{self.longest:,}"
                if self.shortest == self.longest
                else (f"{self.shortest:,}..{self.longest:,}")
            )
            raise _fail(where, f"expected a list of {length}, not {len(value):,} items")
        for index, item in enumerate(value):
            check(item, self.item, f"{where}[{index}]")


@dataclass(frozen=True)
class Row(Schema):
    """A list of fixed length, one schema per position."""

    items: tuple[Spec, ...]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list) or len(value) != len(self.items):
            raise _fail(where, f"expected a list of {len(self.items)}")
        for index, (item, spec) in enumerate(zip(value, self.items, strict=True)):
            check(item, spec, f"{where}[{index}]")


@dataclass(frozen=True)
class Obj(Schema):
    """An object with these keys (all of them but the `optional` ones), and no other."""

    fields: Mapping[str, Spec]
    optional: frozenset[str] = frozenset()

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, f"expected an object, not {_name(value)}")
        missing = [key for key in self.fields if key not in value and key not in self.optional]
        unknown = [key for key in value if key not in self.fields]
        if missing or unknown:
            what = [f"missing {k}" for k in missing] + [f"unknown {k[:40]}" for k in unknown]
            raise _fail(where, ", ".join(what[:3]))
        for key, spec in self.fields.items():
            if key in value:
                check(value[key], spec, _key(where, key))


@dataclass(frozen=True)
class Table(Schema):
    """An object used as a table: keys that are decimal numbers in a range, one value schema."""

    key: Int
    value: Spec
    longest: int

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, f"expected an object, not {_name(value)}")
        if len(value) > self.longest:
            raise _fail(where, f"{len(value):,} entries (at most {self.longest:,})")
        for key, item in value.items():
            if not (key.isascii() and key.isdigit() and len(key) < 20):
                raise _fail(where, f"key {key[:40]!r} is not a number")
            self.key.check(int(key), f"{where}[{key}]")
            check(item, self.value, f"{where}[{key}]")


@dataclass(frozen=True)
class Map(Schema):
    """An object whose keys the document chooses (names of counters), values alike."""

    value: Spec
    longest: int
    key_length: int = 64

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict) or len(value) > self.longest:
            raise _fail(where, f"expected an object of at most {self.longest} entries")
        for key, item in value.items():
            if len(key) > self.key_length:
                raise _fail(where, f"a key longer than {self.key_length} characters")
            check(item, self.value, _key(where, key))


U8, U16, U32, U64 = Int(0, 0xFF), Int(0, 0xFFFF), Int(0, 0xFFFFFFFF), Int(0, (1 << 64) - 1)
BOOL = Bool()


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
