"""The course kernel's C sources built as a student's Makefile would build them (other
optimisation, DWARF version, no path mapping), into a folder of the test's: the symbols and
source lines must hold for more than the committed build's flags."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hypervisor.guest.samples import SAMPLES_DIR

FREESTANDING = (
    *("-m32", "-march=i386", "-ffreestanding", "-fno-pie", "-fno-pic"),
    *("-fno-stack-protector", "-fno-builtin", "-mno-sse", "-mno-mmx"),
)


def build_course(folder: Path, *cflags: str) -> Path:
    """The course kernel compiled in `folder` (its sources copied there, so DWARF records
    `folder` whole as the compilation directory) with `cflags`; its ELF file's path."""
    if shutil.which("gcc") is None or shutil.which("nasm") is None:
        pytest.skip("gcc or nasm is not installed (CI installs them)")
    shutil.copytree(SAMPLES_DIR / "course", folder)
    objects = ["boot.o"]
    _run(folder, "nasm", "-f", "elf32", "-w-other", "-o", "boot.o", "boot.asm")
    for source in sorted(folder.glob("*.c")):
        objects.append(f"{source.stem}.o")
        _run(folder, "gcc", *FREESTANDING, *cflags, "-c", source.name, "-o", objects[-1])
    link = ("ld", "-m", "elf_i386", "-nostdlib", "-T", "link.ld", "--defsym=KERNEL_BASE=0")
    _run(folder, *link, "--no-warn-rwx-segments", "-o", "kernel.elf", *objects)
    return folder / "kernel.elf"


def _run(folder: Path, *command: str) -> None:
    subprocess.run(command, cwd=folder, check=True, capture_output=True)
