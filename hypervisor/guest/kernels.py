"""Building the C sample kernels (`sample_guests/course/`, `apicsh/`) into multiboot ELF images.

The flags are pinned so that the same compiler gives the same bytes on every machine and in
every checkout: no build ID, no unwind tables, no `.comment`, source paths made relative,
one link script. The prebuilt ELF files are committed (users need no compiler); the test
that they are fresh runs only where the compiler is the one they were built with
(`COMPILER`), since another gcc version emits other (equally good) code.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypervisor.guest.nasm import GuestBuildError, nasm_path

CFLAGS = (
    "-m32",
    "-march=i386",
    "-std=gnu11",
    "-O2",
    "-ffreestanding",
    "-fno-pie",
    "-fno-pic",
    "-fno-stack-protector",
    "-fno-builtin",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-ident",
    "-mno-sse",
    "-mno-mmx",
    "-g",
    "-Wall",
    "-Werror",
)


@dataclass(frozen=True, slots=True)
class KernelBuild:
    name: str  # sample_guests/NAME.elf
    source: str  # folder under sample_guests/
    defines: tuple[str, ...] = ()
    base: int = 0  # added to every link address (the higher half: 0xC0000000)


KERNELS = (
    KernelBuild("course", "course"),
    KernelBuild("course_hh", "course", ("HIGHER_HALF",), 0xC0000000),
    KernelBuild("course.pv", "course", ("PARAVIRT",)),  # ported: direct paging (pv)
    KernelBuild("course_hh.pv", "course", ("HIGHER_HALF", "PARAVIRT"), 0xC0000000),
    KernelBuild("apicsh", "apicsh"),  # on the APICs: the 8259 masked, a ring-3 shell
)


def compiler_version() -> str:
    """`gcc -dumpfullversion` and the binutils version: what the committed kernels depend on."""
    gcc, ld = _tool("gcc"), _tool("ld")
    version = subprocess.run([gcc, "-dumpfullversion"], capture_output=True, text=True)
    linker = subprocess.run([ld, "--version"], capture_output=True, text=True)
    return f"gcc {version.stdout.strip()}, {linker.stdout.splitlines()[0].strip()}"


def build_kernel(build: KernelBuild, samples: Path) -> bytes:
    """The ELF image of one kernel build."""
    folder = samples / build.source
    with tempfile.TemporaryDirectory(prefix="vmlab-cc-") as tmp:
        out = Path(tmp)
        defines = [f"-D{d}" for d in build.defines]
        objects = [out / "boot.o"]
        _run([nasm_path(), "-f", "elf32", *defines, "-o", str(objects[0]), "boot.asm"], folder)
        for source in sorted(folder.glob("*.c")):
            objects.append(out / f"{source.stem}.o")
            prefix = f"-fdebug-prefix-map={folder}=."
            command = [_tool("gcc"), *CFLAGS, prefix, *defines, "-c", source.name]
            _run([*command, "-o", str(objects[-1])], folder)
        image = out / "kernel.elf"
        link = [_tool("ld"), "-m", "elf_i386", "-nostdlib", "--build-id=none", "-T", "link.ld"]
        link += [f"--defsym=KERNEL_BASE={build.base:#x}", "-o", str(image)]
        _run([*link, *(str(o) for o in objects)], folder)
        return image.read_bytes()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise GuestBuildError(
            f"{name} is not installed: the C sample kernels need gcc and binutils "
            "(e.g. `apt-get install gcc`); the prebuilt .elf files run without them"
        )
    return path


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GuestBuildError(f"{Path(command[0]).name} failed:\n{done.stderr.strip()}")
