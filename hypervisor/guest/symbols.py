"""Symbols of a guest image: function names and source lines by address.

A kernel built from C (an ELF image) carries a symbol table and DWARF line information; the
code pane names the function an address is in and the C line it comes from, and a user can go
to (or break at) a function by name. The loader that reads an ELF image fills a `SymbolTable`
(pyelftools: `.symtab` functions, `.debug_line` rows); an image without one has no symbols.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    address: int
    size: int  # 0 when the table does not say


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row of a line table: code from `address` on comes from `file`, line `line`."""

    address: int
    file: str
    line: int


@dataclass(frozen=True)
class SymbolTable:
    """Functions and line rows, each sorted by address (the loader sorts them)."""

    functions: tuple[Symbol, ...] = ()
    rows: tuple[SourceRow, ...] = ()
    _by_name: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    _starts: tuple[int, ...] = field(default=(), compare=False, repr=False)
    _row_starts: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update((s.name, s.address) for s in self.functions)
        object.__setattr__(self, "_starts", tuple(s.address for s in self.functions))
        object.__setattr__(self, "_row_starts", tuple(r.address for r in self.rows))

    def address_of(self, name: str) -> int | None:
        return self._by_name.get(name)

    def function_at(self, address: int) -> tuple[Symbol, int] | None:
        """The function `address` is in, and the offset into it."""
        index = bisect_right(self._starts, address) - 1
        if index < 0:
            return None
        symbol = self.functions[index]
        offset = address - symbol.address
        return (symbol, offset) if symbol.size == 0 or offset < symbol.size else None

    def row_at(self, address: int) -> SourceRow | None:
        index = bisect_right(self._row_starts, address) - 1
        return self.rows[index] if index >= 0 else None


NO_SYMBOLS = SymbolTable()


def symbols_of(image: object) -> SymbolTable:
    """An image's symbols: those its loader attached (`image.symbols`), if any."""
    table = getattr(image, "symbols", None)
    return table if isinstance(table, SymbolTable) else NO_SYMBOLS
