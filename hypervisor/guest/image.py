"""Guest images: where they come from (a sample name, an .asm, a .bin) and their line maps.

Sample guests ship prebuilt (`sample_guests/NAME.bin` with `NAME.map`) so users need no nasm.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from hypervisor.guest.nasm import GuestBuildError, SourceLine, assemble, parse_listing
from hypervisor.vmm.contract import Mode

SAMPLES_PACKAGE = "sample_guests"
MAX_IMAGE = 2 << 20
# The mark of a paravirtualized kernel (like Xen's guest note): vmlab.inc built with -DPARAVIRT
# puts it right after the 5-byte entry jump, so the loader knows the kernel makes hypercalls.
PARAVIRT_SIGNATURE = b"VMLAB-PV"
PARAVIRT_OFFSET = 5
PV_SUFFIX = ".pv"  # sample_guests/NAME.pv.bin: the paravirtual build of NAME.asm


@dataclass(frozen=True)
class GuestImage:
    name: str
    data: bytes
    lines: tuple[SourceLine, ...] = ()
    source: str = ""  # where it came from, for messages
    _by_address: dict[int, SourceLine] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_address.update((line.address, line) for line in self.lines)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def line_at(self, address: int) -> SourceLine | None:
        return self._by_address.get(address)

    @property
    def paravirtual(self) -> bool:
        """Built for paravirtualization: it calls a hypervisor, bare metal cannot run it."""
        end = PARAVIRT_OFFSET + len(PARAVIRT_SIGNATURE)
        return self.data[0:1] == b"\xe9" and self.data[PARAVIRT_OFFSET:end] == PARAVIRT_SIGNATURE


def sample_names() -> list[str]:
    folder = resources.files(SAMPLES_PACKAGE)
    names = (p.name[:-4] for p in folder.iterdir() if p.name.endswith(".bin"))
    return sorted(name for name in names if not name.endswith(PV_SUFFIX))


def sample_source(name: str) -> Path:
    return Path(str(resources.files(SAMPLES_PACKAGE) / f"{name}.asm"))


def read_line_map(text: str) -> tuple[SourceLine, ...]:
    """Parse a committed `.map`: one `ADDRESS<TAB>LINE<TAB>TEXT` per line."""
    lines = []
    for row in text.splitlines():
        address, line, source = row.split("\t", 2)
        lines.append(SourceLine(int(address, 16), int(line), source))
    return tuple(lines)


def format_line_map(lines: list[SourceLine]) -> str:
    return "".join(f"{s.address:08x}\t{s.line}\t{s.text}\n" for s in lines)


def load_guest(spec: str, paravirtual: bool = False) -> GuestImage:
    """A guest from a sample name, a path to a .asm (assembled now) or a .bin. With
    `paravirtual`, a sample name gives the sample's paravirtual build (a path is as it is)."""
    path = Path(spec)
    if path.suffix == ".asm":
        data, listing = assemble(path)
        return _checked(GuestImage(path.stem, data, tuple(parse_listing(listing)), str(path)))
    if path.suffix == ".bin" or path.is_file():
        if not path.is_file():
            raise GuestBuildError(f"{spec}: no such file")
        return _checked(GuestImage(path.stem, path.read_bytes(), (), str(path)))
    if spec in sample_names():
        build = spec + PV_SUFFIX if paravirtual else spec
        folder = resources.files(SAMPLES_PACKAGE)
        data = (folder / f"{build}.bin").read_bytes()
        map_file = folder / f"{build}.map"
        lines = read_line_map(map_file.read_text()) if map_file.is_file() else ()
        return GuestImage(build, data, lines, f"sample {build}")
    known = ", ".join(sample_names()) or "none"
    raise GuestBuildError(f"{spec}: not a sample guest, .asm or .bin (samples: {known})")


def load_for_mode(spec: str, mode: Mode, *, unported: bool = False) -> GuestImage:
    """The guest `load_guest` gives for running under `mode`: a sample's paravirtual port
    under pv (Xen runs ported kernels), unless `unported` asks for the unmodified build."""
    return load_guest(spec, paravirtual=mode == Mode.PV and not unported)


def _checked(image: GuestImage) -> GuestImage:
    if not image.data:
        raise GuestBuildError(f"{image.source}: the image is empty")
    if len(image.data) > MAX_IMAGE:
        raise GuestBuildError(f"{image.source}: the image is larger than {MAX_IMAGE >> 20} MiB")
    return image
