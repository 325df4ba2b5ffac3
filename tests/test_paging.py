"""Paging on bare metal: what the machine layer does for the CPU goes through the page tables.

Unicorn's MMU translates the guest's own accesses; interrupt delivery (IDT, GDT, TSS, the
frame), the #PF error code and instruction decoding for events are vmlab's, and must agree.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from unicorn import x86_const as x

from hypervisor.events import IsolationViolation, PageFaultHandled
from hypervisor.guest.image import load_guest
from hypervisor.machine.machine import Machine
from hypervisor.machine.paging import PTE_ACCESSED, PTE_DIRTY, PageFault
from hypervisor.session import run_guest, run_host
from hypervisor.trace.checkpoints import CheckpointStore
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm
from tests.test_checkpoints import observed
from tui.model import describe
from vmlab.text import trace_line

GUESTS = Path(__file__).parent / "guests"
ALIAS_4M = 0x400000  # pagefault.asm's 4 MiB page

PAGE_FAULTS = """\
paging on
#PF cr2=0x00300000 code=0x00000000
#PF cr2=0x00300004 code=0x00000002
#PF cr2=0x00301008 code=0x00000003
#PF cr2=0x0030000C code=0x00000002
#PF cr2=0x00300010 code=0x00000000
4 MiB page reads 0x600DF00D
WP off: ring 0 wrote 0x0000002A
#PF cr2=0x00302000 code=0x00000005
#PF cr2=0x00302004 code=0x00000007
#PF cr2=0x0030100C code=0x00000007
#PF cr2=0x00300014 code=0x00000004
#PF cr2=0x003000FC code=0x00000006
#PF cr2=0x00302020 code=0x00000005
done
"""


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])  # pv: unported = trap
def test_an_unmapped_stack_page_makes_int3_triple_fault(mode):
    report = run_guest(load_guest(str(GUESTS / "paging_stack.asm")), mode)
    assert report.exit.reason == "crashed", report.exit
    assert "triple fault" in report.exit.detail
    assert "page fault at 0x003fffe0 while delivering #DF" in report.exit.detail


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])  # pv: unported = trap
def test_page_fault_handler_sees_cr2_and_the_error_code(mode):
    """Not present, write, user, read-only with CR0.WP, fetch, read-modify-write (a write,
    as Intel's CPUs report it; QEMU says read), 4 MiB pages, in ring 0 and ring 3; under
    trap and bt through shadow page tables, the same (under bt the kernel's fetch fault
    is found by the translator, its data faults by translated code on the shadows)."""
    report = run_guest(load_guest(str(GUESTS / "pagefault.asm")), mode)
    assert report.exit.reason == "debug_exit" and report.exit.status == 0, report.exit
    assert report.console == PAGE_FAULTS


@needs_nasm
def test_cr2_survives_the_end_of_every_slice():
    """Unicorn sets CR2 as it leaves a run with paging on: stopping the CPU every few
    instructions must change nothing the handler sees."""
    vm = Vm(load_guest(str(GUESTS / "pagefault.asm")), "native")
    while vm.run(7).reason == "budget":
        pass
    assert vm.console.decode() == PAGE_FAULTS


PAGING_INC = f'%include "{GUESTS / "paging.inc"}"\n'  # the paging guests' macros
IDENTITY_MAP = (
    PAGING_INC
    + """
    ; The page table at 0x201000 maps 0-4 MiB to itself, present | writable.
    identity_map 0x201000, 0x3
"""
)

FRAME_THROUGH_PAGES = (
    IDENTITY_MAP
    + """
    ; Except that the stack page 0x3FF000 shows physical 0x300000, and the linear page
    ; 0x800000 shows the code page 0x100000.
    mov dword [0x201000 + 0x3FF * 4], 0x300003
    mov dword [0x202000], 0x100003
    mov dword [0x200000], 0x201003
    mov dword [0x200008], 0x202003
    small_idt_gate 3, handler
    lidt [idtr]
    paging_on 0x200000, 0x80000000
    mov esp, 0x3FFFF0
    pushfd                          ; under trap a hole: the real IF shows, on a remapped page
    popfd
    int3
after:
    mov al, 2
    cmp dword [0x300FE4], after     ; the saved EIP, in the frame the CPU pushed
    jne exit
    mov eax, alias - 0x100000 + 0x800000
    jmp eax                         ; run on from the second mapping of this code
alias:
    mov al, 1
exit:
    mov dx, 0x501
    out dx, al
    hlt
handler:
    iretd
align 8
idt:    times 4 * 8 db 0
idtr:   dw 4 * 8 - 1
        dd idt
"""
)


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_the_interrupt_frame_is_pushed_through_the_page_tables(asm, mode):
    report = run_guest(asm(FRAME_THROUGH_PAGES), mode)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 1), report.exit


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_traced_instructions_are_decoded_at_their_linear_address(asm, mode):
    report = run_guest(asm(FRAME_THROUGH_PAGES), mode, trace=True, keep_events=True)
    assert report.recording is not None
    executed = report.recording.executed_events(report.guest)
    aliased = [e for e in executed if e.eip > 0x800000]
    assert [e.text for e in aliased][:3] == ["mov al, 1", "mov dx, 0x501", "out dx, al"]


def _paged_machine() -> Machine:
    """Paging on, at 0x200000: linear page 0x10000 -> frame 0x50000, 0x11000 not present."""
    machine = Machine()
    machine.write(0x200000, struct.pack("<I", 0x201003))
    machine.write(0x201000 + 0x10 * 4, struct.pack("<I", 0x50003))
    uc = machine.uc
    uc.reg_write(x.UC_X86_REG_CR0, 0x11)
    uc.reg_write(x.UC_X86_REG_CR3, 0x200000)
    uc.reg_write(x.UC_X86_REG_CR0, 0x80000011)
    return machine


def _entry(machine: Machine, address: int) -> int:
    return int(struct.unpack("<I", machine.read(address, 4))[0])


def test_the_cpus_own_writes_set_accessed_and_dirty_bits():
    machine = _paged_machine()
    machine.linear.write(0x10FF0, b"frame!")
    assert machine.read(0x50FF0, 6) == b"frame!"
    assert _entry(machine, 0x200000) & PTE_ACCESSED
    assert _entry(machine, 0x201040) & (PTE_ACCESSED | PTE_DIRTY) == PTE_ACCESSED | PTE_DIRTY


def test_a_frame_across_into_a_missing_page_faults_before_writing_anything():
    machine = _paged_machine()
    with pytest.raises(PageFault) as fault:
        machine.linear.write(0x10FFC, b"12345678")
    assert (fault.value.linear, fault.value.error_code) == (0x11000, 0x2)
    assert machine.read(0x50FFC, 4) == bytes(4)


def test_decoding_reads_stop_at_a_missing_page_without_side_effects():
    machine = _paged_machine()
    machine.write(0x50FFE, b"\x90\x90")
    assert machine.code(0x10FFE, 15) == b"\x90\x90"
    assert not _entry(machine, 0x201040) & PTE_ACCESSED


@needs_nasm
def test_seeking_with_paging_on_lands_where_a_straight_run_does():
    """A checkpoint restored under other page tables must not keep the old translations."""
    guest = str(GUESTS / "pagefault.asm")
    machine = TimeMachine(load_guest(guest), "native", checkpoints=CheckpointStore(interval=500))
    machine.extend(16_000)
    for target in (15_400, 6_000, 9_123, 5_990, 15_000, 200):
        machine.seek(target)
        vm = Vm(load_guest(guest), "native")
        vm.run(target)
        assert observed(machine.vm) == observed(vm), target


REMAPPED_IN_A_LOOP = (
    IDENTITY_MAP
    + """
    mov dword [0x300000], 0xA
    mov dword [0x304000], 0xB
    mov dword [0x200000], 0x201003
    paging_on 0x200000, 0x80000000
    xor ebx, ebx
    mov ecx, 30
.first:                             ; linear 0x300000 shows frame 0x300000 ...
    add ebx, [0x300000]
    loop .first
    mov dword [0x201000 + 0x300 * 4], 0x304003
    invlpg [0x300000]
    mov ecx, 30
.then:                              ; ... then frame 0x304000
    add ebx, [0x300000]
    loop .then
    mov eax, ebx
    mov dx, 0x501
    out dx, al
    hlt
"""
)


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_a_seek_forgets_the_translations_of_the_present(asm, mode):
    image = asm(REMAPPED_IN_A_LOOP)
    machine = TimeMachine(image, mode, checkpoints=CheckpointStore(interval=20))
    machine.extend(6_000)
    assert machine.vm.exit is not None and machine.vm.exit.status == (30 * 0x15) & 0xFF
    for target in (5_250, 5_150, 5_240, 5_165):
        machine.seek(target)
        vm = Vm(image, mode)
        vm.run(target)
        assert observed(machine.vm) == observed(vm), target


@needs_nasm
def test_shadow_paging_tells_hidden_faults_from_true_ones():
    """Under trap the shadow fills on demand: hidden faults the guest never sees, and the
    true ones, each reflected with its CR2 (the 11 the guest's handler prints)."""
    report = run_guest(load_guest(str(GUESTS / "pagefault.asm")), "trap", keep_events=True)
    faults = [e for e in report.events if isinstance(e, PageFaultHandled)]
    true = [(e.address, e.error_code) for e in faults if e.outcome == "true"]
    assert true == [
        (0x300000, 0),
        (0x300004, 2),
        (0x301008, 3),
        (0x30000C, 2),
        (0x300010, 0),
        (0x302000, 5),
        (0x302004, 7),
        (0x30100C, 7),
        (0x300014, 4),
        (0x3000FC, 6),
        (0x302020, 5),
    ]
    hidden = [e.address for e in faults if e.outcome == "hidden"]
    assert len(hidden) >= 5  # code, data, stack and the 4 MiB page, at least
    assert any(ALIAS_4M <= address < ALIAS_4M + 0x400000 for address in hidden)


MAPPINGS_OUTSIDE_RAM = (
    IDENTITY_MAP
    + """
    ; Linear 0x3FE000 shows frame 0x800000 (beyond 4 MiB of RAM); 0x3FD000 the frame at
    ; 0xFFC00000, where a monitor keeps its shadow GDT. Both must read as open bus.
    mov dword [0x201000 + 0x3FE * 4], 0x800003
    mov dword [0x201000 + 0x3FD * 4], 0xFFC00003
    mov dword [0x200000], 0x201003
    paging_on 0x200000, 0x80000000
    mov dword [0x3FD008], 0x12345678  ; dropped
    mov al, 2
    cmp dword [0x3FE000], 0xFFFFFFFF
    jne .out
    cmp dword [0x3FD008], 0xFFFFFFFF
    jne .out
    mov al, 1
.out:
    mov dx, 0x501
    out dx, al
    hlt
"""
)


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_frames_outside_ram_and_in_the_monitor_window_are_open_bus(asm, mode):
    report = run_guest(asm(MAPPINGS_OUTSIDE_RAM), mode, keep_events=True)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 1), report.exit
    kinds = {e.kind for e in report.events if isinstance(e, IsolationViolation)}
    assert {"open_bus_read", "open_bus_write"} <= kinds
    assert ("monitor_mapping" in kinds) == (mode != "native")


@needs_nasm
def test_paging_guests_share_a_host_with_others(asm):
    """Shadow paging per VM: each VM's own pool in its own window, side by side."""
    pagefault = load_guest(str(GUESTS / "pagefault.asm"))
    outside = asm(MAPPINGS_OUTSIDE_RAM)
    report = run_host(
        [(pagefault, "trap"), ("hello", "trap"), (outside, "trap"), (pagefault, "native")],
        quantum=2_000,
    )
    runs = report.vms
    assert runs[0].console == runs[3].console == PAGE_FAULTS
    assert runs[1].console == run_guest("hello", "trap").console
    assert (runs[2].exit.reason, runs[2].exit.status) == ("debug_exit", 1)


def test_page_fault_events_read_as_one_line_in_the_ui_and_the_trace():
    true = PageFaultHandled("vm", 7, 0x100CEE, 0x300000, 0x2, "true")
    hidden = PageFaultHandled("vm", 7, 0x100CEE, 0x3FFFFC, 0, "hidden")
    assert describe(true) == (
        "true page fault at 00300000 from 00100cee, error code 0x2: to the guest"
    )
    assert describe(hidden) == "hidden page fault at 003ffffc from 00100cee"
    assert (trace_line(hidden) or "").endswith("└ hidden page fault at 0x003ffffc")


def test_holes_are_judged_on_guest_memory_through_its_page_tables(asm):
    report = run_guest(asm(FRAME_THROUGH_PAGES), "trap", trace=True)
    assert report.holes.get("pushfd") == 1


HIGHER_HALF_GDT = (
    PAGING_INC
    + """
    ; Linear 0xC0000000 shows physical 0-4 MiB too (a 4 MiB page); the GDT is then loaded
    ; at its higher-half address, as a higher-half kernel does.
    mov dword [0x200000], 0x00000083
    mov dword [0x200000 + 0x300 * 4], 0x00000083
    paging_on 0x200000, 0x80000000, 0x10
    lgdt [gdtr + 0xC0000000]
    jmp 0x08:(.reload + 0xC0000000)
.reload:
    mov ax, 0x10
    mov ds, ax
    mov al, 1
    mov dx, 0x501
    out dx, al
    hlt
align 4
gdtr:   dw 0x2F
        dd 0xC0000800
"""
)


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_a_higher_half_gdt_is_no_isolation_event(asm, mode):
    report = run_guest(asm(HIGHER_HALF_GDT), mode, keep_events=True)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 1), report.exit
    assert not [e for e in report.events if isinstance(e, IsolationViolation)]
