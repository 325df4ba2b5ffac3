"""Rebuild the prebuilt sample images: `python -m hypervisor.guest.samples [--check]`.

Each `sample_guests/NAME.asm` gives two builds from the same source: `NAME.bin` and `NAME.map`
(address → source line), and the paravirtual build (`-DPARAVIRT`) `NAME.pv.bin` and
`NAME.pv.map`. The C kernels (`kernels.py`) give `NAME.elf`, rebuilt and checked only with
the compiler they were built with (`sample_guests/COMPILER`). With `--check` nothing is
written; the exit status says whether any committed image is stale.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from hypervisor.files import write_atomically
from hypervisor.guest.image import PV_SUFFIX, format_line_map
from hypervisor.guest.kernels import KERNELS, build_kernel, compiler_version
from hypervisor.guest.nasm import INCLUDE_DIR, GuestBuildError, assemble, parse_listing

SAMPLES_DIR = INCLUDE_DIR  # the samples' own folder holds vmlab.inc
COMPILER_FILE = "COMPILER"  # the gcc and binutils the committed .elf kernels come from


BUILDS = {"": (), PV_SUFFIX: ("PARAVIRT",)}  # name suffix -> nasm defines


def build(source: Path, defines: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """(image, line map text) for one sample source."""
    data, listing = assemble(source, defines)
    return data, format_line_map(parse_listing(listing))


def _builds(folder: Path):
    """Every image the samples make: (name, .bin path, .map path, image, line map)."""
    for source in sorted(folder.glob("*.asm")):
        for suffix, defines in BUILDS.items():
            name = source.stem + suffix
            data, line_map = build(source, defines)
            yield name, folder / f"{name}.bin", folder / f"{name}.map", data, line_map


def stale_samples(folder: Path = SAMPLES_DIR) -> list[str]:
    """Names (NAME or NAME.pv) whose committed .bin or .map differ from a fresh build."""
    return [
        name
        for name, bin_path, map_path, data, line_map in _builds(folder)
        if not bin_path.is_file()
        or bin_path.read_bytes() != data
        or not map_path.is_file()
        or map_path.read_text() != line_map
    ]


def kernels_compiler(folder: Path = SAMPLES_DIR) -> str:
    return (folder / COMPILER_FILE).read_text().strip()


def stale_kernels(folder: Path = SAMPLES_DIR) -> list[str]:
    """C kernels whose committed .elf differs from a fresh build (same compiler only)."""
    return [
        k.name
        for k in KERNELS
        if not (folder / f"{k.name}.elf").is_file()
        or (folder / f"{k.name}.elf").read_bytes() != build_kernel(k, folder)
    ]


def rebuild(folder: Path = SAMPLES_DIR) -> list[str]:
    built = []
    for name, bin_path, map_path, data, line_map in _builds(folder):
        write_atomically(bin_path, data)
        write_atomically(map_path, line_map.encode())
        built.append(name)
    if shutil.which("gcc") and shutil.which("ld"):
        for kernel in KERNELS:
            (folder / f"{kernel.name}.elf").write_bytes(build_kernel(kernel, folder))
            built.append(kernel.name)
        (folder / COMPILER_FILE).write_text(compiler_version() + "\n")
    return built


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if "--check" in args:
            stale = stale_samples()
            if shutil.which("gcc") and compiler_version() == kernels_compiler():
                stale += stale_kernels()
            print("stale: " + ", ".join(stale) if stale else "all sample images are fresh")
            return 1 if stale else 0
        print("built: " + ", ".join(rebuild()))
        return 0
    except GuestBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
