"""A small declarative schema for JSON read from files that others wrote (trace headers).

A file from someone else may hold anything: the wrong type, a huge count, a string of a
million characters, a key nobody knows. Each reader declares what it accepts — types, ranges,
lengths, exact keys — and `check` walks the value once against it, so that the code after it
meets only what it was written for. The first mismatch raises `SchemaError`, naming where it
is ("config.ram_size: 3 is not a multiple of 4096").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SchemaError(ValueError):
    """A value does not match its schema; the message says where and why, on one line."""


class Schema:
    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


def check(value: Any, schema: Schema, where: str = "header") -> None:
    schema.check(value, where)


def _fail(where: str, problem: str) -> SchemaError:
    return SchemaError(f"{where}: {problem}")


@dataclass(frozen=True)
class Int(Schema):
    low: int = 0
    high: int = 0xFFFFFFFF
    multiple: int = 1

    def check(self, value: Any, where: str) -> None:
        if type(value) is not int:
            raise _fail(where, f"expected an integer, not {type(value).__name__}")
        if not self.low <= value <= self.high:
            raise _fail(where, f"{value} is outside {self.low}..{self.high}")
        if value % self.multiple:
            raise _fail(where, f"{value} is not a multiple of {self.multiple}")


@dataclass(frozen=True)
class Bool(Schema):
    def check(self, value: Any, where: str) -> None:
        if type(value) is not bool:
            raise _fail(where, f"expected true or false, not {type(value).__name__}")


@dataclass(frozen=True)
class Str(Schema):
    longest: int
    hex: bool = False  # only an even number of hex digits

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise _fail(where, f"expected a string, not {type(value).__name__}")
        if len(value) > self.longest:
            raise _fail(where, f"a string of {len(value):,} characters (at most {self.longest:,})")
        if self.hex and (len(value) % 2 or value.strip("0123456789abcdefABCDEF")):
            raise _fail(where, "not hex bytes")


@dataclass(frozen=True)
class OneOf(Schema):
    values: frozenset[Any]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str | int) or value not in self.values:
            known = ", ".join(sorted(map(str, self.values)))
            raise _fail(where, f"{str(value)[:40]!r} is none of {known}")


@dataclass(frozen=True)
class Optional(Schema):
    inner: Schema

    def check(self, value: Any, where: str) -> None:
        if value is not None:
            self.inner.check(value, where)


@dataclass(frozen=True)
class List(Schema):
    item: Schema
    longest: int
    exactly: int | None = None

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise _fail(where, f"expected a list, not {type(value).__name__}")
        if self.exactly is not None and len(value) != self.exactly:
            raise _fail(where, f"{len(value):,} items where {self.exactly} belong")
        if len(value) > self.longest:
            raise _fail(where, f"{len(value):,} items (at most {self.longest:,})")
        for index, item in enumerate(value):
            self.item.check(item, f"{where}[{index}]")


@dataclass(frozen=True)
class Row(Schema):
    """A list of fixed length, one schema per position."""

    items: tuple[Schema, ...]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list) or len(value) != len(self.items):
            raise _fail(where, f"expected a list of {len(self.items)}")
        for index, (item, schema) in enumerate(zip(value, self.items, strict=True)):
            schema.check(item, f"{where}[{index}]")


@dataclass(frozen=True)
class Obj(Schema):
    """An object with these keys (all of them but the `optional` ones), and no other."""

    fields: Mapping[str, Schema]
    optional: frozenset[str] = frozenset()

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, f"expected an object, not {type(value).__name__}")
        missing = [key for key in self.fields if key not in value and key not in self.optional]
        unknown = [key for key in value if key not in self.fields]
        if missing or unknown:
            what = [f"no {k!r}" for k in missing] + [f"unknown {k[:40]!r}" for k in unknown]
            raise _fail(where, ", ".join(what[:3]))
        for key, schema in self.fields.items():
            if key in value:
                schema.check(value[key], f"{where}.{key}")


@dataclass(frozen=True)
class Table(Schema):
    """An object used as a table: keys that are decimal numbers in a range, one value schema."""

    key: Int
    value: Schema
    longest: int

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, f"expected an object, not {type(value).__name__}")
        if len(value) > self.longest:
            raise _fail(where, f"{len(value):,} entries (at most {self.longest:,})")
        for key, item in value.items():
            if not (key.isascii() and key.isdigit() and len(key) < 20):
                raise _fail(where, f"key {key[:40]!r} is not a number")
            self.key.check(int(key), f"{where}[{key}]")
            self.value.check(item, f"{where}[{key}]")
