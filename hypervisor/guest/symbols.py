"""Symbols of a guest image: function names and source lines by address.

A kernel built from C (an ELF image) carries a symbol table and DWARF line information; the
code pane names the function an address is in and the C line it comes from, and a user can go
to (or break at) a function by name. The loader that reads an ELF image fills a `SymbolTable`
(pyelftools: `.symtab` functions, `.debug_line` rows, and from `.debug_info` where each
inlined copy of a function begins, for breaking there); an image without one has no symbols.
"""

from __future__ import annotations

import io
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from elftools.common.exceptions import DWARFError, ELFError
from elftools.dwarf.compileunit import CompileUnit
from elftools.dwarf.lineprogram import LineProgram
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

if TYPE_CHECKING:
    from hypervisor.guest.image import GuestImage


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
    directory: str = ""  # where the compiler recorded the file (comp_dir, include dirs)


@dataclass(frozen=True)
class SymbolTable:
    """Functions and line rows, each sorted by address (the loader sorts them)."""

    functions: tuple[Symbol, ...] = ()
    rows: tuple[SourceRow, ...] = ()
    inlined: tuple[Symbol, ...] = ()  # where each inlined copy of a function begins
    _by_name: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    _starts: tuple[int, ...] = field(default=(), compare=False, repr=False)
    _row_starts: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update((s.name, s.address) for s in self.functions)
        object.__setattr__(self, "_starts", tuple(s.address for s in self.functions))
        object.__setattr__(self, "_row_starts", tuple(r.address for r in self.rows))

    def address_of(self, name: str) -> int | None:
        return self._by_name.get(name)

    def addresses_of(self, name: str) -> frozenset[int]:
        """Where a function begins: its own code and each copy the compiler inlined (a
        `static` function called once may have only those), as gdb breaks at all."""
        found = {s.address for s in self.inlined if s.name == name}
        own = self._by_name.get(name)
        return frozenset(found if own is None else found | {own})

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
ELF_MAGIC = b"\x7fELF"


def symbols_of(image: GuestImage) -> SymbolTable:
    """An image's symbols: an ELF kernel's own (its symbol table and DWARF lines), else
    none (a flat image has its NASM line map instead)."""
    return elf_symbols(image.data) if image.data.startswith(ELF_MAGIC) else NO_SYMBOLS


@lru_cache(maxsize=8)
def elf_symbols(data: bytes) -> SymbolTable:
    """Functions from `.symtab` (and the global labels of assembly, such as a boot stub's
    entry), line rows from `.debug_line`. A table that cannot be read is no table: the
    image itself was checked by its loader, the symbols are a help for reading it."""
    try:
        elf = ELFFile(io.BytesIO(data))
        return SymbolTable(tuple(_functions(elf)), tuple(_rows(elf)), tuple(_inlined(elf)))
    except (ELFError, DWARFError, ValueError, KeyError, IndexError, AttributeError):
        return NO_SYMBOLS


def _functions(elf: ELFFile) -> list[Symbol]:
    table = elf.get_section_by_name(".symtab")
    if not isinstance(table, SymbolTableSection):
        return []
    found: dict[int, Symbol] = {}
    for symbol in table.iter_symbols():
        kind, bind = symbol["st_info"]["type"], symbol["st_info"]["bind"]
        if symbol["st_shndx"] == "SHN_UNDEF" or not symbol.name:
            continue
        if kind == "STT_FUNC" or (kind == "STT_NOTYPE" and bind == "STB_GLOBAL"):
            found.setdefault(
                symbol["st_value"], Symbol(symbol.name, symbol["st_value"], symbol["st_size"])
            )
    return sorted(found.values(), key=lambda s: s.address)


def _rows(elf: ELFFile) -> list[SourceRow]:
    if not elf.has_dwarf_info():
        return []
    dwarf, rows = elf.get_dwarf_info(), dict[int, SourceRow]()
    for unit in dwarf.iter_CUs():
        program = dwarf.line_program_for_CU(unit)
        if program is None:
            continue
        files = program["file_entry"]
        first = 0 if program.header["version"] >= 5 else 1  # DWARF 5 counts files from 0
        folders = _folders(unit, program)
        for entry in program.get_entries():
            state = entry.state
            if state is None or state.end_sequence or not 0 <= state.file - first < len(files):
                continue
            file = files[state.file - first]
            name = file.name.decode("utf-8", "replace")
            folder = folders[file.dir_index] if file.dir_index < len(folders) else ""
            rows[state.address] = SourceRow(state.address, name, state.line, folder)
    return sorted(rows.values(), key=lambda r: r.address)


def _inlined(elf: ELFFile) -> list[Symbol]:
    """Each inlined copy of a function (`DW_TAG_inlined_subroutine`): its name from the
    abstract function it copies, where it is entered (`DW_AT_entry_pc`, else its low PC)."""
    if not elf.has_dwarf_info():
        return []
    found = []
    for unit in elf.get_dwarf_info().iter_CUs():
        for die in unit.iter_DIEs():
            if die.tag != "DW_TAG_inlined_subroutine":
                continue
            attributes = die.attributes
            entry = attributes.get("DW_AT_entry_pc") or attributes.get("DW_AT_low_pc")
            if (
                entry is None
                or entry.form != "DW_FORM_addr"  # DWARF 5 may give an offset: not gcc's way
                or "DW_AT_abstract_origin" not in attributes
            ):
                continue
            name = die.get_DIE_from_attribute("DW_AT_abstract_origin").attributes.get("DW_AT_name")
            if name is not None:
                found.append(Symbol(name.value.decode("utf-8", "replace"), entry.value, 0))
    return sorted(found, key=lambda s: s.address)


def _folders(unit: CompileUnit, program: LineProgram) -> list[str]:
    """The line program's directories by index, each joined to the compilation directory:
    DWARF 5 lists the compilation directory itself first, earlier versions leave index 0
    to mean it."""
    attribute = unit.get_top_DIE().attributes.get("DW_AT_comp_dir")
    compiled_in = attribute.value.decode("utf-8", "replace") if attribute else ""
    listed = [d.decode("utf-8", "replace") for d in program["include_directory"]]
    folders = listed if program.header["version"] >= 5 else [compiled_in, *listed]
    return [str(PurePosixPath(compiled_in, folder)) for folder in folders]
