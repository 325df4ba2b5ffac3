"""`.vmlab` files: a suspended VM on disk, or on the wire (docs/vmfile.md is the format).

No code runs when a file is read: it is a header, sections of JSON (checked against a strict
schema) and of zlib-compressed bytes whose inflated sizes are capped before inflating, each
section with its SHA-256, and a SHA-256 of the whole file at its end (sections spliced from
two files are caught there). Files are written atomically: a temporary file in the same
folder, flushed to disk, then renamed over the target. Every problem in a file is one
`VmFileError` naming it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from hypervisor import schema
from hypervisor.encap.state import SuspendedVm
from hypervisor.encap.vmmeta import MAX_CONSOLE, META, meta_of, suspended_of
from hypervisor.guest.image import MAX_IMAGE, GuestImage, load_guest, sample_names
from hypervisor.machine.hostram import PAGE
from hypervisor.schema import SchemaError

MAGIC = b"VMLAB\r\n\x1a"  # CR LF and ^Z: a file mangled by a text-mode copy shows at once
VERSION = 1
HEADER = struct.Struct("<8sHHI")  # magic, version, sections, reserved (0)
SECTION = struct.Struct("<4sQ32s")  # tag, payload length, SHA-256 of the payload
RUN = struct.Struct("<III")  # first page, pages, compressed length
END = b"END!"
TAGS = (b"META", b"IMAG", b"CONS", b"RAM ")
MAX_META = 1 << 20
RUN_PAGES = 256  # pages per compressed run (1 MiB): the unit of streaming


class VmFileError(ValueError):
    """A file that is not a well-formed, intact `.vmlab` (one line saying what is wrong)."""


# ---------------------------------------------------------------------- writing
def write(path: str | Path, suspended: SuspendedVm) -> None:
    """Write `suspended` to `path` atomically: the old file, if any, stays until the new one
    is complete on disk."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as out:
            for chunk in encode(suspended):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def to_bytes(suspended: SuspendedVm) -> bytes:
    return b"".join(encode(suspended))


def encode(suspended: SuspendedVm) -> Iterator[bytes]:
    """The file, chunk by chunk."""
    digest = hashlib.sha256()
    sections = (
        (b"META", _json(meta_of(suspended))),
        (b"IMAG", zlib.compress(suspended.image.data, 6)),
        (b"CONS", zlib.compress(suspended.console, 6)),
        (b"RAM ", _ram_runs(suspended.ram)),
    )
    header = HEADER.pack(MAGIC, VERSION, len(sections), 0)
    digest.update(header)
    yield header
    for tag, payload in sections:
        head = SECTION.pack(tag, len(payload), hashlib.sha256(payload).digest())
        digest.update(head)
        digest.update(payload)
        yield head
        yield payload
    yield END + digest.digest()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _ram_runs(ram: bytes) -> bytes:
    """RAM as runs of up to RUN_PAGES non-zero pages, each compressed; zero pages left out."""
    zero = bytes(PAGE)
    pages = [p for p in range(0, len(ram), PAGE) if ram[p : p + PAGE] != zero]
    return encode_runs(lambda address, size: ram[address : address + size], pages)


def encode_runs(read: Callable[[int, int], bytes], pages: list[int]) -> bytes:
    """The pages at these (sorted) addresses, as RAM runs (the RAM section's encoding, which
    live migration's page frames use too); `read(address, size)` reads the RAM."""
    out = io.BytesIO()
    index = 0
    while index < len(pages):
        first = end = pages[index]
        while index < len(pages) and pages[index] == end and end - first < RUN_PAGES * PAGE:
            end += PAGE
            index += 1
        data = zlib.compress(read(first, end - first), 1)
        out.write(RUN.pack(first // PAGE, (end - first) // PAGE, len(data)))
        out.write(data)
    return out.getvalue()


def decode_runs(
    data: bytes, ram_size: int, write: Callable[[int, bytes], object], what: str = "RAM"
) -> None:
    """Hand each RAM run to `write(address, contents)`: each inside the RAM, after the one
    before, inflated to exactly its pages (never further)."""
    done, next_page = 0, 0
    while done < len(data):
        if done + RUN.size > len(data):
            raise VmFileError(f"section {what}: a run's head goes past the section's end")
        first, pages, packed = RUN.unpack_from(data, done)
        done += RUN.size
        if done + packed > len(data):
            raise VmFileError(f"section {what}: a run goes past the section's end")
        if first < next_page or pages == 0 or pages > RUN_PAGES:
            raise VmFileError(f"section {what}: a run at page {first} is out of order or size")
        if (first + pages) * PAGE > ram_size:
            raise VmFileError(f"section {what}: pages {first}..{first + pages - 1} are past RAM")
        write(first * PAGE, _inflate(data[done : done + packed], pages * PAGE, what))
        done += packed
        next_page = first + pages


# ---------------------------------------------------------------------- reading
def read(path: str | Path) -> SuspendedVm:
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            return _decode(stream, size, path.name)
    except OSError as err:
        raise VmFileError(f"{path}: {err.strerror or err}") from None


def from_bytes(data: bytes, origin: str = "the VM") -> SuspendedVm:
    return _decode(io.BytesIO(data), len(data), origin)


def _decode(stream: BinaryIO, size: int, origin: str) -> SuspendedVm:
    try:
        return _Reader(stream, size).suspended()
    except (VmFileError, SchemaError) as err:
        raise VmFileError(f"{origin}: {err}") from None


class _Reader:
    """Reads a file front to back, never more than a section's declared length (which is
    checked against what is left of the file and against the section's cap first)."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream, self.left = stream, size
        self.digest = hashlib.sha256()

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise VmFileError(f"truncated: {what} needs {n:,} bytes, {self.left:,} are left")
        data = self.stream.read(n)
        self.left -= n
        self.digest.update(data)
        return data

    def suspended(self) -> SuspendedVm:
        magic, version, count, reserved = HEADER.unpack(self.take(HEADER.size, "the header"))
        if magic != MAGIC:
            raise VmFileError("not a vmlab suspended-VM file (wrong magic bytes)")
        if version != VERSION:
            raise VmFileError(f"format version {version}; this vmlab reads version {VERSION}")
        if count != len(TAGS) or reserved:
            raise VmFileError(f"the header says {count} sections; version 1 has {len(TAGS)}")
        meta = schema.loads(self._section(b"META", MAX_META), META)
        image = self._image(meta)
        console = _inflate(self._section(b"CONS", MAX_CONSOLE), meta["console_size"], "CONS")
        ram = self._ram(meta["ram_size"] if meta["ram_included"] else 0)
        expected = self.digest.digest()
        trailer = self.take(len(END) + 32, "the end mark")
        if trailer[:4] != END:
            raise VmFileError("no end mark after the last section")
        if trailer[4:] != expected:
            raise VmFileError("the file's checksum does not match (sections from another file?)")
        if self.left:
            raise VmFileError(f"{self.left:,} bytes of trailing data after the end mark")
        if meta["pending_line"] > len(console):
            raise VmFileError("META: pending_line is longer than the console")
        return suspended_of(meta, image, console, ram)

    def _head(self, tag: bytes, cap: int) -> tuple[int, bytes]:
        found, length, checksum = SECTION.unpack(self.take(SECTION.size, f"section {_name(tag)}"))
        if found != tag:
            raise VmFileError(f"expected section {_name(tag)}, found {_name(found)}")
        if length > cap:
            raise VmFileError(f"section {_name(tag)} claims {length:,} bytes (at most {cap:,})")
        return length, checksum

    def _section(self, tag: bytes, cap: int) -> bytes:
        length, checksum = self._head(tag, cap)
        payload = self.take(length, f"section {_name(tag)}")
        if hashlib.sha256(payload).digest() != checksum:
            raise VmFileError(f"section {_name(tag)} is corrupt (its checksum does not match)")
        return payload

    def _image(self, meta: dict[str, Any]) -> GuestImage:
        guest = meta["guest"]
        data = _inflate(self._section(b"IMAG", MAX_IMAGE), guest["size"], "IMAG")
        image = _known_image(guest["name"], data)
        if image.sha256 != guest["sha256"] or image.paravirtual != guest["paravirtual"]:
            raise VmFileError("the guest image does not match its identity in META")
        if meta["ram_size"] % PAGE or 0x100000 + len(data) > meta["ram_size"]:
            raise VmFileError("META: ram_size does not hold the guest image")
        return image

    def _ram(self, ram_size: int) -> bytes:
        """The RAM (0 bytes when the file says it holds none, and then no run may follow)."""
        ram = bytearray(ram_size)

        def write(address: int, contents: bytes) -> None:
            ram[address : address + len(contents)] = contents

        section = self._section(b"RAM ", ram_size + ram_size // 8 + RUN.size * 4096)
        decode_runs(section, ram_size, write)
        return bytes(ram)


def _inflate(data: bytes, size: int, tag: str) -> bytes:
    """Exactly `size` bytes from zlib `data`: more (a bomb) or less is an error."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, size)
        overflow = inflater.unconsumed_tail or (not inflater.eof and inflater.decompress(b"", 1))
    except zlib.error:
        raise VmFileError(f"section {tag} does not decompress") from None
    if overflow or len(out) != size or inflater.unused_data:
        raise VmFileError(f"section {tag} inflates to another size than declared ({size:,})")
    return out


def _known_image(name: str, data: bytes) -> GuestImage:
    """The image, with the sample's line map when it is a sample with these very bytes."""
    sample = name.removesuffix(".pv")
    if sample in sample_names():
        known = load_guest(sample, paravirtual=name.endswith(".pv"))
        if known.data == data:
            return known
    return GuestImage(name, data, (), "a suspended VM")


def _name(tag: bytes) -> str:
    return tag.decode("ascii", "replace").strip() or repr(tag)
