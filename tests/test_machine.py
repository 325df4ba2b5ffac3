"""The physical machine and the guest contract, observed through small guests."""

from __future__ import annotations

import pytest

from hypervisor.events import IsolationViolation, Trap
from hypervisor.guest.image import load_guest
from hypervisor.machine.machine import EntryError
from hypervisor.session import run_guest
from hypervisor.vmm.vm import Vm

MODES = ["native", "trap"]

EXIT_WITH_EAX = """
    mov dx, 0x501
    out dx, al
    hlt
"""
# exit status 0, or 1 from a jump to .bad
PASSED_OR_BAD = (
    """
    mov al, 0
    jmp .out
.bad:
    mov al, 1
.out:
"""
    + EXIT_WITH_EAX
)


@pytest.mark.parametrize("mode", MODES)
def test_entry_state_follows_the_contract(asm, mode):
    image = asm(
        """
    ; EAX = 1 if ESP is the top of RAM, DS/SS hold the kernel data selector, IF is off
    xor ebx, ebx
    cmp esp, 0x400000
    jne .bad
    mov ax, ds
    cmp ax, 0x10
    jne .bad
    sgdt [gdtr]
    cmp dword [gdtr + 2], 0x800
    jne .bad
    cmp word [gdtr], 0x2f
    jne .bad
    mov al, 1
    jmp .out
.bad:
    mov al, 2
.out:
"""
        + EXIT_WITH_EAX
        + "gdtr: dq 0\n"
    )
    report = run_guest(image, mode)
    # Under trap the SGDT check fails (the real GDTR is the monitor's): that is a hole.
    expected = 1 if mode == "native" else 2
    assert (report.exit.reason, report.exit.status) == ("debug_exit", expected)


@pytest.mark.parametrize("mode", MODES)
def test_open_bus_reads_all_ones_and_drops_writes(asm, mode):
    image = asm(
        """
    mov dword [0x00500000], 0x12345678   ; beyond 4 MiB of RAM: dropped
    mov eax, [0x00500000]               ; open bus: all ones
    cmp eax, 0xffffffff
    jne .bad
    mov eax, [0x80000000]
    cmp eax, 0xffffffff
    jne .bad
"""
        + PASSED_OR_BAD
    )
    report = run_guest(image, mode, keep_events=True)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)
    kinds = [(e.kind, e.address) for e in report.events if isinstance(e, IsolationViolation)]
    assert ("open_bus_write", 0x00500000) in kinds
    assert ("open_bus_read", 0x80000000) in kinds


@pytest.mark.parametrize("mode", MODES)
def test_fetch_outside_ram_crashes_the_vm(asm, mode):
    report = run_guest(asm("    jmp 0x08:0x00900000\n"), mode)
    assert report.exit.reason == "crashed"
    assert "outside RAM" in report.exit.detail


@pytest.mark.parametrize("mode", MODES)
def test_fault_without_idt_is_a_triple_fault(asm, mode):
    report = run_guest(asm("    xor ecx, ecx\n    div ecx\n"), mode)
    assert report.exit.reason == "crashed"
    assert "triple fault" in report.exit.detail


@pytest.mark.parametrize("mode", MODES)
def test_hlt_with_interrupts_off_halts(asm, mode):
    report = run_guest(asm("    cli\n    hlt\n"), mode)
    assert report.exit.reason == "halted"


@pytest.mark.parametrize("mode", MODES)
def test_budget_stops_an_endless_loop(asm, mode):
    report = run_guest(asm("spin: inc eax\n    jmp spin\n"), mode, max_insns=12_345)
    assert report.exit.reason == "budget"
    assert report.instructions["total"] == 12_345


@pytest.mark.parametrize("mode", MODES)
def test_a_spin_with_interrupts_off_halts_as_cli_hlt_does(asm, mode):
    """A tutorial kernel's last `while (1);` with interrupts never on: nothing can reach it,
    so the run ends there (status 0, as after `cli; hlt`) within a slice, not at the end
    of the budget."""
    report = run_guest(asm("    cli\nspin: jmp spin\n"), mode, max_insns=20_000_000)
    assert report.exit.reason == "halted" and "interrupts off" in report.exit.detail
    assert report.instructions["total"] < 1_100_000
    report = run_guest(asm("    sti\nspin: jmp spin\n"), mode, max_insns=2_000_000)
    assert report.exit.reason == "budget"  # with interrupts on, a key or a timer may come


def test_unsupported_privileged_operation_stops_cleanly(asm):
    report = run_guest(asm("    mov eax, cr0\n    and eax, ~1\n    mov cr0, eax\n"), "trap")
    assert report.exit.reason == "unsupported"
    assert "mov cr0, eax" in report.exit.detail and "protected mode" in report.exit.detail


def test_monitor_memory_is_read_only_to_the_guest(asm):
    image = asm(
        """
    sgdt [gdtr]
    mov ebx, [gdtr + 2]          ; the monitor's real GDT, seen through the SGDT hole
    mov eax, [ebx + 8]
    mov dword [ebx + 8], 0       ; try to smash it
    cmp eax, [ebx + 8]
    jne .changed
    mov al, 0
    jmp .out
.changed:
    mov al, 1
.out:
"""
        + EXIT_WITH_EAX
        + "gdtr: dq 0\n"
    )
    report = run_guest(image, "trap", keep_events=True)
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)
    assert any(
        isinstance(e, IsolationViolation) and e.kind == "monitor_write" for e in report.events
    )


def test_the_cpu_sees_the_shadow_gdt_the_monitor_writes(asm):
    """The monitor writes its read-only tables past unicorn (write_monitor): a descriptor
    the guest adds to its GDT is in the real one, ring-compressed, once a trap re-enters."""
    image = asm(
        """
    sgdt [gdtr]
    mov ebx, [gdtr + 2]             ; the real (shadow) GDT, through the SGDT hole
    mov esi, [ebx + 0x2c]           ; entry 0x28, null in the guest's GDT: null there too
    mov dword [0x800 + 0x28], 0x0000ffff
    mov dword [0x800 + 0x2c], 0x00cf9200  ; now a DPL 0 data segment, not accessed
    cli                             ; a trap: the monitor syncs the shadow on re-entry
    mov eax, [ebx + 0x2c]
    cmp esi, 0
    jne .bad
    cmp eax, 0x00cfb300             ; DPL 1 and accessed: ring compression
    jne .bad
"""
        + PASSED_OR_BAD
        + "gdtr: dq 0\n"
    )
    report = run_guest(image, "trap")
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)


def test_runs_are_deterministic(asm):
    image = asm("    mov ecx, 1000\nl: cli\n    sti\n    loop l\n" + EXIT_WITH_EAX)
    first = run_guest(image, "trap", keep_events=True, trace=True)
    second = run_guest(image, "trap", keep_events=True, trace=True)
    assert first.events == second.events
    assert list(first.recording.executed_events("a")) == list(second.recording.executed_events("a"))
    assert sum(isinstance(e, Trap) for e in first.events) == 2000  # cli + sti, 1000 times


def test_a_vm_can_continue_after_its_budget(asm):
    vm = Vm(asm("    mov ecx, 50000\nl: loop l\n" + EXIT_WITH_EAX), "trap")
    assert vm.run(10_000).reason == "budget"
    assert vm.run(1_000_000).reason == "debug_exit"
    assert vm.stats.total == 1 + 50_000 + 2  # mov ecx; 50000 loops; mov dx; out


def test_a_world_switch_nulls_a_refused_data_selector_and_refuses_a_bad_cs():
    """Entry writes every register in one call; where the CPU refuses one, it goes one by
    one: an unusable data selector becomes null (as an IRET to an outer ring makes it), a
    refused CS is an EntryError."""
    vm = Vm(load_guest("hello"), "trap")
    machine = vm.machine
    state = machine.state()
    wanted = state.copy()
    wanted.eax, wanted.esi, wanted.ds, wanted.fs = 0x1234, 0x5678, 0x7FF8, 0x7FF8
    machine.enter(wanted, machine.cpl)
    after = machine.state()
    assert (after.eax, after.esi, after.ds, after.fs) == (0x1234, 0x5678, 0, 0)
    assert (after.cs, after.ss, after.es) == (state.cs, state.ss, state.es)
    wanted.cs = 0x7FF8
    with pytest.raises(EntryError, match="refused"):
        machine.enter(wanted, machine.cpl)
