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

from hypervisor.encap import schema
from hypervisor.encap.schema import (
    BOOL,
    U8,
    U16,
    U32,
    U64,
    Float,
    Int,
    List,
    Map,
    Optional,
    SchemaError,
    Str,
    Tuple,
)
from hypervisor.encap.state import (
    COUNTERS,
    PIC_FIELDS,
    PIT_FIELDS,
    UART_FIELDS,
    DeviceState,
    RunHistory,
    SuspendedVm,
)
from hypervisor.guest.image import MAX_IMAGE, GuestImage, load_guest, sample_names
from hypervisor.machine.cpu import STATE_FIELDS
from hypervisor.machine.hostram import PAGE
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.guestcpu import FpuState, GuestCpu

MAGIC = b"VMLAB\r\n\x1a"  # CR LF and ^Z: a file mangled by a text-mode copy shows at once
VERSION = 1
HEADER = struct.Struct("<8sHHI")  # magic, version, sections, reserved (0)
SECTION = struct.Struct("<4sQ32s")  # tag, payload length, SHA-256 of the payload
RUN = struct.Struct("<III")  # first page, pages, compressed length
END = b"END!"
TAGS = (b"META", b"IMAG", b"CONS", b"RAM ")
MAX_META = 1 << 20
MAX_CONSOLE = 64 << 20
MAX_RAM = 1 << 30
RUN_PAGES = 256  # pages per compressed run (1 MiB): the unit of streaming
MODES = tuple(Mode)


class VmFileError(ValueError):
    """A file that is not a well-formed, intact `.vmlab` (one line saying what is wrong)."""


# ---------------------------------------------------------------------- the META schema
_PIC: dict[str, schema.Spec] = {
    "vector_base": U8,
    "imr": U8,
    "irr": U8,
    "isr": U8,
    "init_step": Int(0, 4),
    "single": BOOL,
    "icw4_needed": BOOL,
    "icw3": U8,
    "auto_eoi": BOOL,
    "read_isr": BOOL,
    "poll": BOOL,
}
_PIT: dict[str, schema.Spec] = {
    "mode": Int(0, 7),
    "access": Int(0, 3),
    "bcd": BOOL,
    "reload": Int(1, 0x10000),
    "counting": BOOL,
    "start": U64,
    "stopped_count": U16,
    "stopped_out": BOOL,
    "null_count": BOOL,
    "low_byte": Optional(U8),
    "read_high": BOOL,
    "latched_count": Optional(U16),
    "latched_status": Optional(U8),
}
_UART: dict[str, schema.Spec] = {
    "ier": U8,
    "lcr": U8,
    "mcr": U8,
    "scr": U8,
    "fcr": U8,
    "divisor": U16,
}
assert (tuple(_PIC), tuple(_PIT), tuple(_UART)) == (PIC_FIELDS, PIT_FIELDS, UART_FIELDS)
_SELECTORS = ("cs", "ss", "ds", "es", "fs", "gs")
_CPU: schema.Spec = {
    "registers": {name: U16 if name in _SELECTORS else U32 for name in STATE_FIELDS},
    "cpl": Int(0, 3),
    "cr0": U32,
    "cr2": U32,
    "cr3": U32,
    "cr4": U32,
    "gdtr": Tuple((U32, U16)),
    "idtr": Tuple((U32, U16)),
    "ldtr": U16,
    "tr": U16,
    "tss": Optional(Tuple((U32, U32))),
    "dr": List(U32, 8, 8),
    "msr": List(Tuple((U32, U64)), 64),
    "interrupt_shadow": BOOL,
    "halted": BOOL,
    "fpu": {
        "control": U16,
        "status": U16,
        "tag": U16,
        "stack": List(Tuple((U64, U16)), 8, 8),
        "mxcsr": U32,
        "xmm": List(Int(0, (1 << 128) - 1), 8, 8),
    },
}
_META: schema.Spec = {
    "format": Str(32, ("vmlab-suspended-vm",)),
    "name": Str(64),
    "guest": {
        "name": Str(64),
        "sha256": Str(64),
        "size": Int(1, MAX_IMAGE),
        "paravirtual": BOOL,
    },
    "mode": Str(8, MODES),
    "ram_size": Int(PAGE, MAX_RAM),
    "cpu": _CPU,
    "devices": {
        "pic": List(_PIC, 2, 2),
        "pit_ticks": U64,
        "pit": List(_PIT, 3, 3),
        "uart": _UART,
        "platform_index": U8,
    },
    "history": {
        "step": U64,
        "ticks": U64,
        "counters": dict.fromkeys(COUNTERS, Map(U64, 256)),
        "traced": BOOL,
        "timeline": List(Tuple((U64, Float())), 1 << 16),
    },
    "console_size": Int(0, MAX_CONSOLE),
    "pending_line": Int(0, MAX_CONSOLE),
    "ram_included": BOOL,
}


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
        (b"META", _json(_meta(suspended))),
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


def _meta(s: SuspendedVm) -> dict[str, Any]:
    cpu, devices, history = s.cpu, s.devices, s.history
    fpu = cpu.fpu
    return {
        "format": "vmlab-suspended-vm",
        "name": s.name,
        "guest": {
            "name": s.image.name,
            "sha256": s.image.sha256,
            "size": len(s.image.data),
            "paravirtual": s.image.paravirtual,
        },
        "mode": s.mode,
        "ram_size": s.ram_size,
        "cpu": {
            "registers": dict(zip(STATE_FIELDS, cpu.registers, strict=True)),
            "cpl": cpu.cpl,
            "cr0": cpu.cr0,
            "cr2": cpu.cr2,
            "cr3": cpu.cr3,
            "cr4": cpu.cr4,
            "gdtr": list(cpu.gdtr),
            "idtr": list(cpu.idtr),
            "ldtr": cpu.ldtr,
            "tr": cpu.tr,
            "tss": list(cpu.tss) if cpu.tss else None,
            "dr": list(cpu.dr),
            "msr": [list(pair) for pair in cpu.msr],
            "interrupt_shadow": cpu.interrupt_shadow,
            "halted": cpu.halted,
            "fpu": {
                "control": fpu.control,
                "status": fpu.status,
                "tag": fpu.tag,
                "stack": [list(st) for st in fpu.stack],
                "mxcsr": fpu.mxcsr,
                "xmm": list(fpu.xmm),
            },
        },
        "devices": {
            "pic": list(devices.pic),
            "pit_ticks": devices.pit_ticks,
            "pit": list(devices.pit),
            "uart": devices.uart,
            "platform_index": devices.platform_index,
        },
        "history": {
            "step": history.step,
            "ticks": history.ticks,
            "counters": history.counters,
            "traced": history.traced,
            "timeline": [list(point) for point in history.timeline],
        },
        "console_size": len(s.console),
        "pending_line": len(s.pending_line),
        "ram_included": bool(s.ram),
    }


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
        meta = schema.loads(self._section(b"META", MAX_META), _META)
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
        return _suspended(meta, image, console, ram)

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


def _suspended(meta: dict[str, Any], image: GuestImage, console: bytes, ram: bytes) -> SuspendedVm:
    c, d, h = meta["cpu"], meta["devices"], meta["history"]
    f = c["fpu"]
    cpu = GuestCpu(
        registers=tuple(c["registers"][name] for name in STATE_FIELDS),
        cpl=c["cpl"],
        cr0=c["cr0"],
        cr2=c["cr2"],
        cr3=c["cr3"],
        cr4=c["cr4"],
        gdtr=(c["gdtr"][0], c["gdtr"][1]),
        idtr=(c["idtr"][0], c["idtr"][1]),
        ldtr=c["ldtr"],
        tr=c["tr"],
        tss=(c["tss"][0], c["tss"][1]) if c["tss"] else None,
        dr=tuple(c["dr"]),
        msr=tuple((i, v) for i, v in c["msr"]),
        interrupt_shadow=c["interrupt_shadow"],
        halted=c["halted"],
        fpu=FpuState(
            control=f["control"],
            status=f["status"],
            tag=f["tag"],
            stack=tuple((m, e) for m, e in f["stack"]),
            mxcsr=f["mxcsr"],
            xmm=tuple(f["xmm"]),
        ),
    )
    devices = DeviceState(
        pic=(d["pic"][0], d["pic"][1]),
        pit_ticks=d["pit_ticks"],
        pit=tuple(d["pit"]),
        uart=d["uart"],
        platform_index=d["platform_index"],
    )
    history = RunHistory(
        step=h["step"],
        ticks=h["ticks"],
        counters=h["counters"],
        traced=h["traced"],
        timeline=tuple((step, float(pct)) for step, pct in h["timeline"]),
    )
    split = len(console) - meta["pending_line"]
    return SuspendedVm(
        name=meta["name"],
        image=image,
        mode=meta["mode"],
        ram_size=meta["ram_size"],
        cpu=cpu,
        devices=devices,
        history=history,
        console=console,
        pending_line=console[split:],
        ram=ram,
    )


def _name(tag: bytes) -> str:
    return tag.decode("ascii", "replace").strip() or repr(tag)
