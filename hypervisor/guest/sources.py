"""The C source text behind a kernel's line rows, for the code pane.

DWARF names a line's file as the compiler saw it: a name, its directory, the compilation
directory. A path recorded whole (absolute) is read where it says, and where that folder is
gone (the kernel and its sources moved since the build) beside the image's file. A relative
one (the samples are built with their folder mapped to ".", so that their bytes do not depend
on the checkout) is looked for beside the image's file and, for a sample kernel, in the
folder its build compiles (`kernels.py`). Last comes the folder vmlab runs in (gdb's default
source path is `$cdir:$cwd`): sources kept apart from the kernel are found by running there.
A file found nowhere is "source not found": the image runs the same, the pane just has no
text to show.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from hypervisor.guest.image import GuestImage
from hypervisor.guest.kernels import KERNELS
from hypervisor.guest.samples import SAMPLES_DIR
from hypervisor.guest.symbols import SourceRow

NOT_FOUND = "source not found"
SAMPLE_SOURCE = "sample "  # GuestImage.source of a sample loaded by name


class SourceFiles:
    """Source lines by (file, line) under some folders; each file read once."""

    def __init__(self, roots: tuple[Path, ...]) -> None:
        self.roots = roots
        self._files: dict[tuple[str, str], tuple[str, ...] | None] = {}

    def line(self, row: SourceRow) -> str | None:
        """The text of `row`'s line (without its indentation), None where its file is not
        found or is shorter."""
        lines = self._lines(row.directory, row.file)
        return lines[row.line - 1].strip() if lines and 0 < row.line <= len(lines) else None

    def _lines(self, directory: str, name: str) -> tuple[str, ...] | None:
        key = (directory, name)
        if key not in self._files:
            self._files[key] = None
            for path in self._candidates(directory, name):
                try:
                    text = path.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                self._files[key] = tuple(text.splitlines())
                break
        return self._files[key]

    def _candidates(self, directory: str, name: str) -> list[Path]:
        """Where DWARF says, then under each root: the path as recorded (when relative),
        the file's name as the compiler was given it, its bare name. A path recorded whole
        whose folder is gone (the build tree moved or deleted) is so looked for beside the
        image too."""
        recorded, given = PurePosixPath(directory, name), PurePosixPath(name)
        parts = dict.fromkeys((recorded, given, PurePosixPath(given.name)))
        relative = [part for part in parts if not part.is_absolute()]
        whole = [Path(recorded)] if recorded.is_absolute() else []
        return whole + [root / part for root in self.roots for part in relative]


def source_files(image: GuestImage) -> SourceFiles:
    """Where `image`'s sources may be: beside its file, a sample kernel's own folder, the
    working folder."""
    roots: list[Path] = []
    if image.source.startswith(SAMPLE_SOURCE):
        folder = SAMPLES_DIR
    else:
        folder = Path(image.source).parent
        roots.append(folder)
    if folder.resolve() == SAMPLES_DIR.resolve():
        roots += [SAMPLES_DIR / b.source for b in KERNELS if b.name == image.name]
    return SourceFiles((*roots, Path.cwd()))  # last, the folder vmlab runs in, as gdb's $cwd
