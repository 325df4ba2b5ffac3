"""Guest images: where they come from (a sample name, an .asm, a file) and their line maps.

Sample guests ship prebuilt (`sample_guests/NAME.bin` with `NAME.map`) so users need no nasm.
A file is recognised by its content (`formats.py`): a flat image, or a multiboot kernel,
which may come with modules and a command line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from hypervisor.guest.bootinfo import Module
from hypervisor.guest.formats import (
    FLAG_ADDRESSES,
    GuestFormat,
    ImageError,
    detect,
    find_header,
    refuse_text,
)
from hypervisor.guest.nasm import GuestBuildError, SourceLine, assemble, parse_listing
from hypervisor.vmm.contract import DEFAULT_RAM, Mode

SAMPLES_PACKAGE = "sample_guests"
MAX_IMAGE = 64 << 20
# The mark of a paravirtualized kernel (like Xen's guest note): vmlab.inc built with -DPARAVIRT
# puts it right after the 5-byte entry jump, so the loader knows the kernel makes hypercalls;
# a multiboot kernel carries it right after its multiboot header.
PARAVIRT_SIGNATURE = b"VMLAB-PV"
PARAVIRT_OFFSET = 5
PV_SUFFIX = ".pv"  # sample_guests/NAME.pv.bin: the paravirtual build of NAME.asm
KERNEL_RAM = 128 << 20  # `qemu-system-i386`'s default -m: the machine a kernel is tried on


@dataclass(frozen=True)
class GuestImage:
    name: str
    data: bytes
    lines: tuple[SourceLine, ...] = ()
    source: str = ""  # where it came from, for messages
    modules: tuple[Module, ...] = ()  # multiboot modules, in order
    cmdline: str = ""  # the multiboot command line (the kernel's path first, as QEMU gives)
    _by_address: dict[int, SourceLine] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_address.update((line.address, line) for line in self.lines)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def line_at(self, address: int) -> SourceLine | None:
        return self._by_address.get(address)

    @property
    def format(self) -> GuestFormat:
        """What kind of image this is, by its content (ImageError if none vmlab boots)."""
        return detect(self.data, self.source or self.name)

    @property
    def paravirtual(self) -> bool:
        """Built for paravirtualization: it calls a hypervisor, bare metal cannot run it."""
        end = PARAVIRT_OFFSET + len(PARAVIRT_SIGNATURE)
        if self.data[0:1] == b"\xe9" and self.data[PARAVIRT_OFFSET:end] == PARAVIRT_SIGNATURE:
            return True
        try:
            header = find_header(self.data, self.source or self.name)
        except ImageError:
            return False
        if header is None:
            return False
        mark = header.offset + (32 if header.flags & FLAG_ADDRESSES else 12)
        return self.data[mark : mark + len(PARAVIRT_SIGNATURE)] == PARAVIRT_SIGNATURE


def default_ram(images: Iterable[GuestImage]) -> int:
    """RAM of each VM when the user names none: a multiboot kernel gets QEMU's 128 MiB (what
    `qemu-system-i386 -kernel` gives it, so its memory map and memory size read the same
    and a kernel that wants more than 4 MiB runs), vmlab's flat samples their contract's."""
    return KERNEL_RAM if any(i.format is not GuestFormat.FLAT for i in images) else DEFAULT_RAM


def sample_names() -> list[str]:
    """vmlab's own samples: flat images (NAME.bin, each with its paravirtual NAME.pv.bin)."""
    folder = resources.files(SAMPLES_PACKAGE)
    names = (p.name[:-4] for p in folder.iterdir() if p.name.endswith(".bin"))
    return sorted(name for name in names if not name.endswith(PV_SUFFIX))


def kernel_names() -> list[str]:
    """The sample multiboot kernels (NAME.elf, built from C: `kernels.py`; a kernel's
    paravirtual build, when it has one, is NAME.pv.elf)."""
    folder = resources.files(SAMPLES_PACKAGE)
    names = (p.name[:-4] for p in folder.iterdir() if p.name.endswith(".elf"))
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


def load_guest(
    spec: str,
    paravirtual: bool = False,
    *,
    cmdline: str | None = None,
    modules: tuple[str, ...] = (),
) -> GuestImage:
    """A guest from a sample name, a path to a .asm (assembled now) or an image file. With
    `paravirtual`, a sample name gives the sample's paravirtual build (a path is as it is).
    `cmdline` and `modules` (`FILE[=STRING]` each) are for multiboot kernels: the command
    line they get is the kernel's path, a space and `cmdline`, as QEMU's `-append` gives
    (without `cmdline`, an empty one)."""
    image = _load(spec, paravirtual)
    if image.format is GuestFormat.FLAT:
        if cmdline is not None or modules:
            raise GuestBuildError(
                f"{spec}: a flat image takes no --cmdline or --module (multiboot kernels do)"
            )
        return image
    if cmdline is None and not modules:
        return image  # an empty command line: what a trace file can give again (it holds none)
    return replace(
        image,
        cmdline="" if cmdline is None else f"{spec} {cmdline}",
        modules=tuple(load_module(m) for m in modules),
        _by_address={},
    )


def load_module(spec: str) -> Module:
    """A boot module from `FILE[=STRING]`: the file's bytes, and STRING (or FILE) as its
    string, as GRUB's `module FILE STRING` and QEMU's `-initrd` give one."""
    name, _, string = spec.partition("=")
    path = Path(name)
    if not path.is_file():
        raise GuestBuildError(f"{name}: no such module file")
    data = path.read_bytes()
    if len(data) > MAX_IMAGE:
        raise GuestBuildError(f"{name}: a module larger than {MAX_IMAGE >> 20} MiB")
    return Module(data, string or name)


def _load(spec: str, paravirtual: bool) -> GuestImage:
    path = Path(spec)
    if path.suffix == ".asm":
        data, listing = assemble(path)
        return _checked(GuestImage(path.stem, data, tuple(parse_listing(listing)), str(path)))
    if path.suffix in (".bin", ".elf") or path.is_file():
        if not path.is_file():
            raise GuestBuildError(f"{spec}: no such file")
        return _checked(GuestImage(path.stem, path.read_bytes(), (), str(path)))
    folder = resources.files(SAMPLES_PACKAGE)
    if spec in kernel_names():  # one build for every mode, or its paravirtual port
        ported = folder / f"{spec}{PV_SUFFIX}.elf"
        build = spec + PV_SUFFIX if paravirtual and ported.is_file() else spec
        return GuestImage(build, (folder / f"{build}.elf").read_bytes(), (), f"sample {build}")
    if spec in sample_names():
        build = spec + PV_SUFFIX if paravirtual else spec
        data = (folder / f"{build}.bin").read_bytes()
        map_file = folder / f"{build}.map"
        lines = read_line_map(map_file.read_text()) if map_file.is_file() else ()
        return GuestImage(build, data, lines, f"sample {build}")
    known = ", ".join(sample_names() + kernel_names()) or "none"
    raise GuestBuildError(f"{spec}: not a sample guest, .asm or image file (samples: {known})")


def load_for_mode(
    spec: str,
    mode: Mode,
    *,
    unported: bool = False,
    cmdline: str | None = None,
    modules: tuple[str, ...] = (),
) -> GuestImage:
    """The guest `load_guest` gives for running under `mode`: a sample's paravirtual port
    under pv (Xen runs ported kernels), unless `unported` asks for the unmodified build."""
    paravirtual = mode == Mode.PV and not unported
    return load_guest(spec, paravirtual, cmdline=cmdline, modules=modules)


def _checked(image: GuestImage) -> GuestImage:
    """Refuse at once what no loader boots: too large, empty, or of no known format."""
    if len(image.data) > MAX_IMAGE:
        raise GuestBuildError(f"{image.source}: the image is larger than {MAX_IMAGE >> 20} MiB")
    detect(image.data, image.source)
    refuse_text(image.data, image.source)
    return image
