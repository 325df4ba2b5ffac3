"""The C source text beside a kernel's code: found where DWARF says, beside the image's
file or in a sample's own folder, and "source not found" anywhere else."""

from __future__ import annotations

import shutil
from pathlib import Path

from hypervisor.guest.image import load_guest
from hypervisor.guest.samples import SAMPLES_DIR
from hypervisor.guest.sources import SourceFiles, source_files
from hypervisor.guest.symbols import SourceRow, symbols_of
from hypervisor.vmm.vm import Vm
from tests.ckernels import build_course
from tui.listing import Listing

KERNEL_C = (SAMPLES_DIR / "course" / "kernel.c").read_text().splitlines()


def _kmain_row(spec: str) -> str:
    """The code pane's row at kmain of the course kernel loaded as `spec`."""
    image = load_guest(spec)
    kmain = symbols_of(image).address_of("kmain")
    assert kmain is not None
    vm = Vm(image, "native", ram_size=32 << 20)  # loaded: the kernel is in its RAM
    (row,) = Listing(image).window(kmain, vm.machine.read, 0, 0)
    return row.text


def test_a_sample_kernel_shows_its_c_lines_from_its_own_folder():
    course = load_guest("course")
    symbols = symbols_of(course)
    row = symbols.row_at(symbols.address_of("kmain") or 0)
    assert row is not None and row.file == "kernel.c"
    assert source_files(course).line(row) == KERNEL_C[row.line - 1].strip()
    assert f"; {KERNEL_C[row.line - 1].strip()}  · kmain+0x0" in _kmain_row("course")


def test_sources_are_found_beside_the_image_and_else_not_found(tmp_path: Path):
    shutil.copy(SAMPLES_DIR / "course.elf", tmp_path / "mykernel.elf")
    assert "; (source not found)  · kmain+0x0" in _kmain_row(str(tmp_path / "mykernel.elf"))
    shutil.copy(SAMPLES_DIR / "course" / "kernel.c", tmp_path / "kernel.c")
    assert "source not found" not in _kmain_row(str(tmp_path / "mykernel.elf"))


def test_a_path_recorded_whole_is_read_where_it_says(tmp_path: Path):
    (tmp_path / "a.c").write_text("int x;\n    return x;  \n")
    sources = SourceFiles(())
    assert sources.line(SourceRow(0x100000, "a.c", 2, str(tmp_path))) == "return x;"
    assert sources.line(SourceRow(0x100000, "a.c", 3, str(tmp_path))) is None  # past its end
    assert sources.line(SourceRow(0x100000, "b.c", 1, str(tmp_path))) is None


def test_sources_beside_a_kernel_built_in_a_folder_that_is_gone(tmp_path: Path):
    """A student builds in one folder, then moves the kernel and its sources (or deletes the
    build tree): DWARF still names the old folder whole; the files beside the image are it."""
    built = build_course(tmp_path / "build", "-O2", "-g")
    moved = tmp_path / "moved"
    shutil.copytree(built.parent, moved)
    shutil.rmtree(built.parent)
    row = _kmain_row(str(moved / "kernel.elf"))
    assert "void kmain(uint32_t magic, uint32_t mbi_address) {  · kmain+0x0" in row


def test_sources_in_the_working_folder_as_gdb_looks_for_them(tmp_path: Path, monkeypatch):
    """The kernel in one folder, its sources (moved since the build) in another: run from the
    sources' folder, the code pane finds them there, as gdb's default path `$cdir:$cwd` does."""
    built = build_course(tmp_path / "build", "-O0", "-g")
    shutil.copy(built, tmp_path / "kernel.elf")
    shutil.move(built.parent, tmp_path / "src")
    assert "(source not found)  · kmain+0x0" in _kmain_row(str(tmp_path / "kernel.elf"))
    monkeypatch.chdir(tmp_path / "src")
    row = _kmain_row(str(tmp_path / "kernel.elf"))
    assert "void kmain(uint32_t magic, uint32_t mbi_address) {  · kmain+0x0" in row
