"""Assembling guest sources with nasm, and the line map nasm's listing gives us."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

LOAD_ADDRESS = 0x00100000
INCLUDE_DIR = Path(__file__).resolve().parents[2] / "sample_guests"
"""Where `vmlab.inc` lives: always on nasm's include path, after the source's own folder, so
that a guest written anywhere can `%include "vmlab.inc"`."""


class GuestBuildError(Exception):
    """A guest could not be built; the message is for the user, as is."""


@dataclass(frozen=True, slots=True)
class SourceLine:
    address: int
    line: int  # line number in the main source file (0 for lines from an include)
    text: str


# "   12 00000004 B801000000              mov eax, 1"  (include lines carry "<1>")
_LISTING = re.compile(r"^\s*(\d+)\s+([0-9A-F]{8})\s+([0-9A-F()\[\]]+)-?\s+(<\d+>)?\s?(.*)$")


def parse_listing(listing: str, origin: int = LOAD_ADDRESS) -> list[SourceLine]:
    """Address → source line, from a `nasm -l` listing (first line that emits at an address)."""
    lines: list[SourceLine] = []
    seen: set[int] = set()
    for raw in listing.splitlines():
        match = _LISTING.match(raw)
        if not match:
            continue
        number, offset, _, include, text = match.groups()
        address = origin + int(offset, 16)
        if address in seen or not text.strip() or text.lstrip().startswith(";"):
            continue
        seen.add(address)
        lines.append(SourceLine(address, 0 if include else int(number), text.rstrip()))
    return lines


def nasm_path() -> str:
    path = shutil.which("nasm")
    if path is None:
        raise GuestBuildError(
            "nasm is not installed: install it (e.g. `apt-get install nasm`) to assemble .asm "
            "guests, or run a prebuilt .bin"
        )
    return path


def assemble(source: Path, defines: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """Assemble `source` to a flat binary; returns (image, listing)."""
    if not source.is_file():
        raise GuestBuildError(f"{source}: no such file")
    with tempfile.TemporaryDirectory(prefix="vmlab-nasm-") as tmp:
        out, lst = Path(tmp) / "image.bin", Path(tmp) / "image.lst"
        command = [nasm_path(), "-f", "bin", "-o", str(out), "-l", str(lst)]
        command += [f"-D{d}" for d in defines]
        command += ["-I", f"{source.parent}/", "-I", f"{INCLUDE_DIR}/", str(source)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise GuestBuildError(f"nasm failed on {source.name}:\n{done.stderr.strip()}")
        return out.read_bytes(), lst.read_text(errors="replace")
