"""Rebuild the prebuilt sample images: `python -m hypervisor.guest.samples [--check]`.

Each `sample_guests/NAME.asm` gives `NAME.bin` and `NAME.map` (address → source line). With
`--check` nothing is written; the exit status says whether any committed image is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypervisor.guest.image import format_line_map
from hypervisor.guest.nasm import GuestBuildError, assemble, parse_listing

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "sample_guests"


def build(source: Path) -> tuple[bytes, str]:
    """(image, line map text) for one sample source."""
    data, listing = assemble(source)
    return data, format_line_map(parse_listing(listing))


def stale_samples(folder: Path = SAMPLES_DIR) -> list[str]:
    """Names whose committed .bin or .map differ from a fresh build."""
    stale = []
    for source in sorted(folder.glob("*.asm")):
        data, line_map = build(source)
        bin_path, map_path = source.with_suffix(".bin"), source.with_suffix(".map")
        if (
            not bin_path.is_file()
            or bin_path.read_bytes() != data
            or not map_path.is_file()
            or map_path.read_text() != line_map
        ):
            stale.append(source.stem)
    return stale


def rebuild(folder: Path = SAMPLES_DIR) -> list[str]:
    built = []
    for source in sorted(folder.glob("*.asm")):
        data, line_map = build(source)
        source.with_suffix(".bin").write_bytes(data)
        source.with_suffix(".map").write_text(line_map)
        built.append(source.stem)
    return built


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if "--check" in args:
            stale = stale_samples()
            print("stale: " + ", ".join(stale) if stale else "all sample images are fresh")
            return 1 if stale else 0
        print("built: " + ", ".join(rebuild()))
        return 0
    except GuestBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
