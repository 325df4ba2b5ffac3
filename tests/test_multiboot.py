"""The multiboot loader and format detection: what a kernel finds at entry, and one clear line
for every image that cannot boot."""

from __future__ import annotations

import io
import itertools
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.guest.bootinfo import MBI_ADDRESS, MMAP_ADDRESS, Module
from hypervisor.guest.formats import GuestFormat, ImageError
from hypervisor.guest.image import GuestImage, default_ram, load_guest
from hypervisor.platform.board import ports_of
from hypervisor.session import run_guest
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm
from tests.elfimages import HLT_LOOP, Seg, aout, elf, multiboot_header
from vmlab.cli import main

KERNEL = 0x100000
ENTRY = KERNEL + 12  # right after the multiboot header, which opens the first segment


def vmlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmlab.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def mbi(vm: Vm) -> tuple[int, ...]:
    return struct.unpack("<22I", vm.machine.read(MBI_ADDRESS, 88))


def c_string(vm: Vm, address: int) -> str:
    data = vm.machine.read(address, 256)
    return data[: data.index(0)].decode()


def test_an_elf_kernel_is_entered_as_the_specification_says(tmp_path):
    path = write(tmp_path, "k.elf", elf([Seg(KERNEL, KERNEL, HLT_LOOP)], ENTRY))
    image = load_guest(path)
    assert image.format is GuestFormat.MULTIBOOT_ELF
    vm = Vm(image)
    state = vm.machine.state()
    assert (state.eax, state.ebx, state.eip) == (0x2BADB002, MBI_ADDRESS, ENTRY)
    assert state.esp < 0x9000 and state.eflags & 0x200 == 0
    assert (state.cs, state.ds, state.ss) == (0x08, 0x10, 0x10)
    flags, mem_lower, mem_upper = mbi(vm)[:3]
    assert flags & 0b1001001111 == 0b1001001111  # mem, boot device, cmdline, mods, mmap, name
    assert (mem_lower, mem_upper) == (639, 4096 - 1024 - 128)  # QEMU's firmware keeps 128 KiB
    assert c_string(vm, mbi(vm)[16]) == "vmlab"
    assert run_guest(image, "native", max_insns=100).exit.reason == "halted"


def test_the_memory_map_reserves_the_bios_areas_and_gives_the_rest(tmp_path):
    vm = Vm(load_guest(write(tmp_path, "k.elf", elf([Seg(KERNEL, KERNEL, HLT_LOOP)], ENTRY))))
    length, address = mbi(vm)[11:13]
    assert address == MMAP_ADDRESS
    raw = vm.machine.read(address, length)
    entries = [struct.unpack_from("<IQQI", raw, at) for at in range(0, length, 24)]
    assert [(base, size, kind) for _, base, size, kind in entries] == [
        (0, 0x9FC00, 1),
        (0x9FC00, 0x400, 2),
        (0xF0000, 0x10000, 2),
        (0x100000, (4 << 20) - 0x100000 - 0x20000, 1),
        ((4 << 20) - 0x20000, 0x20000, 2),
        (0xFFFC0000, 0x40000, 2),
    ]


def test_a_higher_half_kernel_loads_low_and_its_virtual_entry_is_translated(tmp_path):
    image = elf([Seg(0xC0100000, KERNEL, HLT_LOOP, memsz=0x3000)], 0xC0100000 + 12)
    vm = Vm(GuestImage("hh", image, (), "hh"))
    assert vm.machine.state().eip == ENTRY
    assert vm.machine.read(ENTRY, 4) == HLT_LOOP


def test_a_higher_half_kernel_whose_entry_is_physical_is_entered_there(tmp_path):
    # xv6: linked at 0x80100000, loaded at 1 MiB, e_entry = V2P_WO(entry) (QEMU boots it)
    image = elf([Seg(0x80100000, KERNEL, HLT_LOOP, memsz=0x3000)], ENTRY)
    vm = Vm(GuestImage("xv6-like", image, (), "xv6-like"))
    assert vm.machine.state().eip == ENTRY
    assert run_guest(GuestImage("xv6-like", image, (), "xv6-like"), "native").exit.reason == (
        "halted"
    )


def test_modules_and_command_line_follow_the_kernel_and_its_bss(tmp_path):
    kernel = write(
        tmp_path, "k.elf", elf([Seg(KERNEL, KERNEL, HLT_LOOP, memsz=0x5000)], ENTRY, symbols=True)
    )
    first = write(tmp_path, "initrd.img", b"first module")
    second = write(tmp_path, "prog", b"x" * 5000)
    image = load_guest(kernel, cmdline="nopaging quiet", modules=(first, f"{second}=prog --fast"))
    vm = Vm(image)
    fields = mbi(vm)
    assert c_string(vm, fields[4]) == f"{kernel} nopaging quiet"
    count, table = fields[5], fields[6]
    modules = [struct.unpack("<4I", vm.machine.read(table + 16 * i, 16)) for i in range(count)]
    assert [c_string(vm, m[2]) for m in modules] == [first, "prog --fast"]
    assert [m[1] - m[0] for m in modules] == [12, 5000]
    assert all(m[0] % 0x1000 == 0 and m[0] >= KERNEL + 0x5000 for m in modules)
    assert vm.machine.read(modules[0][0], 12) == b"first module"
    assert modules[0][1] <= modules[1][0]


def test_the_module_list_and_strings_are_packed_as_qemu_packs_them(tmp_path):
    # measured under QEMU 7.2 (-kernel K -initrd "A arg1,B" -append ...): the list at the page
    # after the kernel, then each module's string, then the command line, then the loader's
    # name, with no gaps; a kernel reading one entry too far finds the first string there
    kernel = write(tmp_path, "k.elf", elf([Seg(KERNEL, KERNEL, HLT_LOOP)], ENTRY))
    first, second = write(tmp_path, "a", b"first"), write(tmp_path, "b", b"second")
    image = load_guest(kernel, cmdline="hello world", modules=(f"{first}=a arg1", second))
    vm = Vm(image)
    fields = mbi(vm)
    table = fields[6]
    assert table == KERNEL + 0x1000
    strings = [struct.unpack("<4I", vm.machine.read(table + 16 * i, 16))[2] for i in range(2)]
    assert strings[0] == table + 32 and strings[1] == strings[0] + len("a arg1") + 1
    assert fields[4] == strings[1] + len(second) + 1  # the command line
    assert fields[16] == fields[4] + len(f"{kernel} hello world") + 1  # the loader's name


def test_elf_section_headers_are_handed_over_with_the_symbol_table_loaded(tmp_path):
    data = elf([Seg(KERNEL, KERNEL, HLT_LOOP)], ENTRY, symbols=True)
    vm = Vm(GuestImage("k", data, (), "k"))
    fields = mbi(vm)
    assert fields[0] & 1 << 5
    num, size, addr, shndx = fields[7:11]
    assert (num, size, shndx) == (5, 40, 4)
    symtab = struct.unpack("<10I", vm.machine.read(addr + 2 * size, size))
    assert symtab[3] and vm.machine.read(symtab[3] + 16, 8) == struct.pack("<II", 1, ENTRY)
    assert ELFFile(io.BytesIO(data)).get_section(2).name == ".symtab"


def test_an_aout_kludge_image_loads_where_its_header_says():
    data = aout(load=0x200000, bss=0x2000, entry_delta=1)
    image = GuestImage("aout", data, (), "aout")
    assert image.format is GuestFormat.MULTIBOOT_AOUT
    vm = Vm(image)
    assert vm.machine.state().eip == 0x200000 + 33
    assert vm.machine.read(0x200000, len(data)) == data


def test_a_kernel_that_needs_more_ram_asks_for_it_and_runs_with_it(tmp_path):
    big = write(tmp_path, "big.elf", elf([Seg(KERNEL, KERNEL, HLT_LOOP, memsz=12 << 20)], ENTRY))
    small = vmlab("run", big, "--ram", "8M")
    assert small.returncode == 2
    assert small.stderr.strip().count("\n") == 0 and "--ram" in small.stderr
    done = vmlab("run", big, "--ram", "32M", "--max-insns", "100")
    assert done.returncode == 0, done.stderr
    assert "halted" in done.stdout


# a GRUB 2 kernel's header: magic, architecture 0 (i386), length 24, checksum, the end tag
MULTIBOOT2_HEADER = struct.pack("<IIII", 0xE85250D6, 0, 24, -(0xE85250D6 + 24) & 0xFFFFFFFF)
MULTIBOOT2_HEADER += struct.pack("<HHI", 0, 0, 8)

BAD_IMAGES = [
    (b"vm\n", "a text file"),
    (b"#!/bin/sh\necho hello\n" * 4, "a text file"),
    (elf([Seg(KERNEL, KERNEL, HLT_LOOP)], ENTRY, header=b""), "without a multiboot header"),
    (elf([Seg(KERNEL, KERNEL, HLT_LOOP)], ENTRY)[:-2], "truncated"),
    (elf([Seg(KERNEL, KERNEL, HLT_LOOP)], ENTRY, machine=62), "not a 32-bit x86 ELF"),
    (elf([Seg(0x10000000, 0x10000000, HLT_LOOP)], 0x10000000 + 12), "outside RAM"),  # 256M
    (elf([Seg(KERNEL, KERNEL, HLT_LOOP)], 0x400000), "in no segment"),
    (elf([Seg(0x9000, 0x9000, HLT_LOOP)], 0x9000 + 12), "overlaps"),
    (multiboot_header(checksum=0) + HLT_LOOP, "fails its checksum"),
    (multiboot_header() + HLT_LOOP, "without load addresses"),
    (multiboot_header(flags=0x10003) + bytes(8), "cut short"),
    (
        elf([Seg(KERNEL, KERNEL, HLT_LOOP)], ENTRY, header=multiboot_header(0x13)),
        "requires multiboot features",
    ),
    (aout()[:34], "truncated"),
    (
        elf([Seg(KERNEL, KERNEL, HLT_LOOP)], ENTRY, header=bytes(4) + MULTIBOOT2_HEADER),
        "a multiboot2 kernel",  # at file offset 88: 64-bit aligned, as multiboot2 requires
    ),
    (bytes(8) + MULTIBOOT2_HEADER + HLT_LOOP, "a multiboot2 kernel"),  # flat, not run as code
]


@pytest.mark.parametrize(("data", "message"), BAD_IMAGES, ids=[m for _, m in BAD_IMAGES])
def test_an_image_that_cannot_boot_gets_one_line(tmp_path, capsys, data, message):
    path = write(tmp_path, "bad.img", data)
    assert main(["run", path]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err


def test_the_samples_and_the_repro_images_are_recognised(tmp_path):
    assert load_guest("hello").format is GuestFormat.FLAT
    assert load_guest("hello", paravirtual=True).format is GuestFormat.FLAT
    with pytest.raises(ImageError, match="text file"):
        load_guest(write(tmp_path, "notes.txt", b"hello world\n"))


def test_short_code_that_starts_with_a_printable_byte_is_not_text(tmp_path):
    """`xor ecx, ecx; div ecx` is 31 c9 f7 f1: "1", then bytes that are no UTF-8 at all."""
    image = load_guest(write(tmp_path, "snippet.bin", bytes.fromhex("31c9f7f1")))
    assert image.format is GuestFormat.FLAT


def test_a_flat_image_takes_no_modules(tmp_path):
    flat = write(tmp_path, "hello.bin", load_guest("hello").data)
    done = vmlab("run", flat, "--cmdline", "x")
    assert done.returncode == 2 and "flat image" in done.stderr


def test_qemu_isa_debug_exit_ends_the_run_with_the_status():
    code = b"\xb0\x05\xe6\xf4\xf4"  # mov al, 5; out 0xf4, al; hlt
    report = run_guest(GuestImage("q", aout(code=code), (), "q"), "native", max_insns=100)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 5)
    assert "0xf4" in report.exit.detail


def test_every_device_of_a_vm_answers_only_the_ports_the_board_gives_it():
    vm = Vm(load_guest("hello"))
    for device in vm.devices:
        assert set(device.ports) <= ports_of(device.name), device.name


def test_a_recorded_multiboot_kernel_replays_exactly(tmp_path):
    trace = str(tmp_path / "course.trace")
    recorded = vmlab("record", "course", "--mode", "trap", "-o", trace, "--max-insns", "12000")
    assert recorded.returncode == 0, recorded.stderr
    replayed = vmlab("replay", trace, "--check")
    assert "replays exactly" in replayed.stdout, replayed.stderr


C_STRING_CHARACTERS = st.characters(blacklist_characters="\0", blacklist_categories=["Cs"])


@settings(max_examples=30, deadline=None)
@given(
    kernel=st.integers(1, 0x30000),
    bss=st.integers(0, 0x40000),
    modules=st.lists(st.integers(0, 0x9000), max_size=4),
    cmdline=st.text(C_STRING_CHARACTERS, max_size=40),
)
def test_everything_the_loader_places_lies_in_ram_and_apart(kernel, bss, modules, cmdline):
    image = GuestImage(
        "k",
        elf([Seg(KERNEL, KERNEL, bytes(kernel), memsz=kernel + 12 + bss)], ENTRY),
        (),
        "k",
        tuple(Module(bytes([i + 1]) * size, f"m{i}") for i, size in enumerate(modules)),
        cmdline,
    )
    vm = Vm(image)
    pieces = vm.boot.pieces
    assert all(p.address >= 0 and p.end <= 4 << 20 for p in pieces)
    assert all(a.end <= b.address for a, b in itertools.pairwise(pieces))
    count, table = mbi(vm)[5:7]
    assert count == len(modules)
    for i, size in enumerate(modules):
        start, end, string, _ = struct.unpack("<4I", vm.machine.read(table + 16 * i, 16))
        assert end - start == size and start >= KERNEL + kernel + 12 + bss
        assert vm.machine.read(start, size) == bytes([i + 1]) * size
        assert c_string(vm, string) == f"m{i}"
    assert c_string(vm, mbi(vm)[4]) == cmdline


def test_the_ui_boots_a_kernel_with_its_command_line_and_modules(tmp_path, monkeypatch):
    import vmlab.cli

    opened: list = []
    monkeypatch.setattr(vmlab.cli, "_open_ui", lambda guests, **_: opened.extend(guests) or 0)
    module = write(tmp_path, "notes.txt", b"notes\n")
    assert vmlab.cli.main(["tui", "course", "--cmdline", "nopaging", "--module", module]) == 0
    [(image, mode)] = opened
    assert (image.cmdline, [m.string for m in image.modules], mode) == (
        "course nopaging",
        [module],
        "trap",
    )


@needs_nasm
@pytest.mark.skipif(shutil.which("qemu-system-i386") is None, reason="QEMU is not installed")
def test_an_aout_kludge_kernel_boots_as_under_qemu(tmp_path):
    """The header lies 64 bytes into the file: both loaders must find the same load offset,
    entry, BSS and command line (tests/guests/aout_kludge.asm prints what it was given)."""
    kernel = tmp_path / "aout.bin"
    source = Path(__file__).parent / "guests" / "aout_kludge.asm"
    subprocess.run(["nasm", "-f", "bin", "-o", str(kernel), str(source)], check=True)
    serial = tmp_path / "serial.txt"
    qemu = [str(shutil.which("qemu-system-i386")), "-kernel", str(kernel), "-append", "one two"]
    qemu += ["-m", "32", "-display", "none", "-no-reboot", "-serial", f"file:{serial}"]
    qemu += ["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    assert subprocess.run(qemu, timeout=30, check=False).returncode == 1  # status 0
    report = run_guest(load_guest(str(kernel), cmdline="one two"), "native")
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)
    expected = f"booted by multiboot, command line: {kernel} one two\n"
    assert report.console == serial.read_text() == expected


def test_a_kernel_gets_qemus_default_ram_and_a_flat_sample_its_own(capsys):
    """`vmlab run K` as `qemu-system-i386 -kernel K`: 128 MiB, so the kernel's memory lines
    read the same; `--ram` still decides; the flat samples keep their 4 MiB."""
    assert main(["run", "course", "--cmdline", "exit"]) == 0
    assert "memory: 639 KiB below 1 MiB, 129920 KiB above\n" in capsys.readouterr().out
    assert main(["run", "course", "--cmdline", "exit", "--ram", "32M"]) == 0
    assert "memory: 639 KiB below 1 MiB, 31616 KiB above\n" in capsys.readouterr().out
    assert default_ram([load_guest("hello")]) == 4 << 20
