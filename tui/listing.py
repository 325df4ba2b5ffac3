"""What the code pane lists: the guest's source lines (from its line map) or, for an image
without one, its disassembly — one row per instruction address, in address order."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hypervisor.guest.formats import GuestFormat
from hypervisor.guest.image import GuestImage
from hypervisor.guest.sources import NOT_FOUND, source_files
from hypervisor.guest.symbols import symbols_of
from hypervisor.isa import MAX_INSN_SIZE, decode
from hypervisor.vmm.contract import LOAD_ADDRESS


@dataclass(frozen=True, slots=True)
class ListingRow:
    address: int
    text: str
    line: int  # source line number (0: from an include, or disassembly)


class Listing:
    """Rows of one image, and the window of rows around an address."""

    def __init__(self, image: GuestImage) -> None:
        self.language = "nasm" if image.lines else "disassembly"
        self.symbols = symbols_of(image)
        self.sources = source_files(image)
        if image.lines:
            rows = [ListingRow(s.address, s.text.strip(), s.line) for s in image.lines]
        elif image.format is GuestFormat.FLAT:
            rows = list(_sweep(image.data, LOAD_ADDRESS))
        else:  # a kernel's file is not its memory image: disassemble memory as it runs
            rows = []
        self.rows = sorted(rows, key=lambda r: r.address)
        self._addresses = [r.address for r in self.rows]

    def window(
        self, address: int, read: Callable[[int, int], bytes], before: int, after: int
    ) -> list[ListingRow]:
        """`before` rows before `address`, its row, and `after` rows after it. An address the
        listing does not know (code outside the image, or between its rows) is disassembled
        from memory with `read(address, size)`."""
        index = bisect_left(self._addresses, address)
        if index < len(self.rows) and self.rows[index].address == address:
            return self.rows[max(0, index - before) : index + after + 1]
        here = list(_sweep(read(address, 16 * (after + 1)), address, after + 1))
        named, previous = [], None
        for row in here:
            source = self.symbols.row_at(row.address)
            where = (source.file, source.line) if source else None
            named.append(self._named(row, show_text=where != previous))
            previous = where
        return self.rows[max(0, index - before) : index] + named

    def _named(self, row: ListingRow, show_text: bool) -> ListingRow:
        """A disassembled row of a kernel with symbols: its function and C line beside it
        (the line number in the row's own column) and, where `show_text` (the first
        instruction of each run of one line), that line's text first: a narrow pane cuts
        the place, which the next rows repeat, rather than the text."""
        symbols = self.symbols
        if not symbols.functions and not symbols.rows:
            return row
        function, source = symbols.function_at(row.address), symbols.row_at(row.address)
        where = f"{function[0].name}+{function[1]:#x}" if function else ""
        if source is not None:
            where += f" {source.file}:{source.line}"
            if show_text:
                line = self.sources.line(source)
                where = f"{f'({NOT_FOUND})' if line is None else line}  · {where.strip()}"
        text = f"{row.text:<32} ; {where.strip()}" if where else row.text
        return ListingRow(row.address, text, source.line if source else 0)


def instruction(address: int, read: Callable[[int, int], bytes]) -> str:
    """The instruction in memory at `address`, as the CPU decodes it: what a source line
    assembled to (a macro's `mov dx, %1` is `mov dx, 0x3fd` there)."""
    code = read(address, MAX_INSN_SIZE)
    if not code:  # not mapped: nothing the CPU could fetch there
        return ""
    insn = decode(code, address)
    return insn.text if insn is not None else f"db {code[0]:#04x}"


def _sweep(code: bytes, address: int, limit: int | None = None) -> Iterator[ListingRow]:
    """Linear-sweep disassembly (an undecodable byte becomes `db`)."""
    offset, count = 0, 0
    while offset < len(code) and (limit is None or count < limit):
        insn = decode(code[offset : offset + 15], address + offset)
        if insn is None:
            yield ListingRow(address + offset, f"db {code[offset]:#04x}", 0)
            offset += 1
        else:
            yield ListingRow(address + offset, insn.text, 0)
            offset += insn.size
        count += 1
