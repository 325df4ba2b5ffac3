"""Direct paging under pv (docs/paging.md, "Direct paging (pv)"): a ported kernel's own page
tables are the CPU's, read-only to it once pinned, changed only through validated hypercalls."""

from __future__ import annotations

import ctypes
import re
import zlib
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hypervisor.encap.state import capture, restore
from hypervisor.events import Event, Hypercall, PageFaultHandled, WorldSwitch
from hypervisor.guest.image import GuestImage, load_guest
from hypervisor.session import RunReport, run_guest, run_host
from hypervisor.trace.checkpoints import CheckpointStore
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.costs import MMU_ROWS, PENTIUM4, PV_MMU_ROWS, cycles
from hypervisor.vmm.host import Host
from hypervisor.vmm.mmu.introspect import PagingKind
from hypervisor.vmm.pv.errors import E_FAULT, E_PERM
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm
from tests.test_checkpoints import observed
from tests.test_shadow_paging import CACHED, OPERATIONS, guest_source

GUESTS = Path(__file__).parent / "guests"
HOSTILE = "pv_paging_hostile"
PT = 0x201000
SPARE_PTE = PT + (0x300000 >> 12) * 4


@cache
def hostile() -> GuestImage:
    return load_guest(str(GUESTS / f"{HOSTILE}.asm"))


@cache
def hostile_run() -> RunReport:
    return run_guest(hostile(), "pv", keep_events=True)


def _hex(value: int) -> str:
    return f"0x{value & 0xFFFFFFFF:08X}\n"


@needs_nasm
def test_each_refused_update_gets_its_code_and_the_kernel_goes_on():
    report = hostile_run()
    refused = [E_PERM, E_FAULT, E_PERM, E_PERM, E_FAULT]
    expected = _hex(0) + "".join(_hex(code) for code in refused)
    expected += f"#PF 0x{SPARE_PTE:08X} 0x00000003\n" + _hex(1) + "0x12345678\nstill running\n"
    assert report.console == expected
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)


@needs_nasm
def test_each_refusal_is_logged_with_its_reason():
    events = [e for e in hostile_run().events if isinstance(e, Hypercall) and e.error]
    assert [(e.name, e.result) for e in events] == [
        ("new_baseptr", E_PERM),
        ("mmu_update", E_FAULT),
        ("mmu_update", E_PERM),
        ("mmu_update", E_PERM),
        ("mmu_update", E_FAULT),
    ]
    reasons = [e.error for e in events]
    assert "mapped writable: it cannot become a page directory" in reasons[0]
    assert "outside the VM's 4096 KiB of RAM" in reasons[1]
    assert "map page table 0x200000 writable" in reasons[2]
    assert "monitor's window" in reasons[3]
    assert "0xffc00000 is outside" in reasons[4]
    assert hostile_run().isolation["by_kind"]["page_table"] == len(events)


@needs_nasm
def test_a_direct_write_to_a_pinned_table_faults_and_is_an_event():
    report = hostile_run()
    faults = [e for e in report.events if isinstance(e, PageFaultHandled)]
    assert [(e.address, e.error_code, e.outcome) for e in faults] == [(SPARE_PTE, 3, "pinned")]
    assert report.traps["#PF pinned"] == 1


@needs_nasm
def test_the_hostile_kernel_changes_nothing_outside_its_ram_on_a_shared_host():
    """Host RAM outside its slice is byte-identical around each of its quanta (nobody else
    runs then), beside a well-behaved pv guest."""
    host = Host(quantum=500)
    sums: list[tuple[int, int]] = []
    before: list[int] = []

    def outside() -> int:
        ram = host[HOSTILE].vm.machine.ram
        low = ctypes.string_at(host.ram.base_address, ram.start)
        high = ctypes.string_at(host.ram.base_address + ram.end, host.ram.size - ram.end)
        return zlib.crc32(high, zlib.crc32(low))

    def watch(event: Event) -> None:
        if not isinstance(event, WorldSwitch):
            return
        if event.previous == HOSTILE and before:
            sums.append((before.pop(), outside()))
        if event.vm == HOSTILE:
            before.append(outside())

    host.events.subscribe(watch)
    report = run_host([(hostile(), "pv"), ("hello", "pv")], host=host)
    assert len(sums) > 3
    assert all(a == b for a, b in sums)
    by_name = {r.hosted.name: r for r in report.vms if r.hosted}
    assert by_name[HOSTILE].console.endswith("still running\n")
    assert by_name["hello"].console == run_guest("hello", "native").console


def test_each_pv_mmu_hypercall_is_priced_by_its_own_row():
    base = cycles(PENTIUM4, guest_instructions=100, cpu_instructions=100)
    for call, row in PV_MMU_ROWS.items():
        priced = cycles(PENTIUM4, guest_instructions=100, cpu_instructions=100, pv_mmu={call: 2})
        assert priced.virtual - base.virtual == priced.mmu == 2 * getattr(PENTIUM4, row)
    assert PENTIUM4.mmu_update > PENTIUM4.hypercall


def test_the_ported_kernel_pays_for_its_mmu_in_hypercalls():
    vm = Vm(load_guest("course", paravirtual=True, cmdline="exit"), "pv")
    vm.run(10**6)
    stats, cost = vm.stats, vm.cycles()
    expected = sum(
        n * PENTIUM4.pv_mmu_price(c) for c, n in stats.hypercalls.items() if c in PV_MMU_ROWS
    )
    expected += sum(n * PENTIUM4.mmu_price(t) for t, n in stats.traps.items() if t in MMU_ROWS)
    assert stats.hypercalls["mmu_update"] == 2 and stats.traps["#PF true"] == 1
    assert cost.mmu == expected and 0 < cost.mmu_share_pct < 100


def test_seeking_across_the_switch_to_direct_paging_equals_a_straight_run():
    """Checkpoints keep the pinned tables (the machine keeps the tables and CR3)."""
    image = load_guest("course", paravirtual=True, cmdline="exit")
    machine = TimeMachine(image, "pv", checkpoints=CheckpointStore(interval=5000))
    machine.extend(70_000)
    for target in (69_000, 20_000, 60_000):
        machine.seek(target)
        vm = Vm(image, "pv")
        vm.run(target)
        assert observed(machine.vm) == observed(vm)


MOV_CR_PORT = """\
%define PARAVIRT
bits 32
org 0x100000
%include "vmlab.inc"
%include "paging.inc"
; A half-ported kernel: hypercalls for its console, MOV for CR3 and CR0.PG (they trap).
start:
    identity_map 0x201000, 0x3
    and dword [0x201000 + (0x200000 >> 12) * 4], ~2 ; the tables read-only
    and dword [0x201000 + (0x201000 >> 12) * 4], ~2
    mov dword [0x200000], 0x201003
    mov eax, 0x200000
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax                    ; pinned and validated like new_baseptr
    println "paging on"
    mov dword [0x202000], 0x201003  ; a directory its table maps writable
    mov eax, 0x202000
    mov cr3, eax                    ; refused: the VM stops unsupported
    println "not reached"
"""


@needs_nasm
def test_a_mov_to_cr3_under_direct_paging_is_validated_too(tmp_path):
    source = tmp_path / "movcr.asm"
    source.write_text(MOV_CR_PORT)
    (tmp_path / "paging.inc").write_text((GUESTS / "paging.inc").read_text())
    report = run_guest(load_guest(str(source)), "pv")
    assert report.console == "paging on\n"
    assert report.exit.reason == "unsupported"
    assert "MOV to CR3 under direct paging" in report.exit.detail
    assert "cannot become a page directory" in report.exit.detail


@pytest.mark.parametrize(("mode", "ported"), [("pv", True), ("trap", False), ("bt", False)])
def test_a_vm_suspended_while_paging_resumes_paging(mode, ported):
    """The resumed monitor pages as the suspended one did: pv pins the directory in CR3
    again (its tables are in the resumed RAM), trap and bt start an empty shadow of it."""
    image = load_guest("course", paravirtual=ported, cmdline="exit")
    vm = Vm(image, mode)
    mmu = vm.executor.paging_mmu()
    assert mmu is not None
    while not mmu.active:
        vm.run(2000)
    vm.run(3000)
    resumed = restore(capture(vm))
    resumed_mmu = resumed.executor.paging_mmu()
    assert resumed_mmu is not None and resumed_mmu.active
    resumed.run(10**6)
    vm.run(10**6)
    assert resumed.console == vm.console and resumed.exit == vm.exit
    assert vm.exit is not None and vm.exit.status == 0


# ---------------------------------------------------------------------------- against bare metal
# test_shadow_paging's random guests, ported: each privileged line becomes its hypercall, and
# the page tables (0x200000-0x204fff) are mapped read-only before paging is turned on.
PV_MARK = 'jmp near start\ndb "VMLAB-PV"\nstart:\n'
HYPERCALL = "    mov eax, {number}\n    int 0x82"
_PORT = (
    (  # paging on: the tables read-only, then new_baseptr
        r"    paging_on 0x200000, .*",
        "    and dword [0x201000 + 4 * 0x200], ~2\n    and dword [0x201000 + 4 * 0x201], ~2\n"
        "    and dword [0x201000 + 4 * 0x202], ~2\n    and dword [0x201000 + 4 * 0x203], ~2\n"
        "    and dword [0x201000 + 4 * 0x204], ~2\n"
        "    mov ebx, 0x200000\n" + HYPERCALL.format(number=18),
    ),
    (  # new rights for an entry of the test region's tables: read, then mmu_update
        r"    and dword \[(0x20[23][0-9a-f]{3})\], ~0x7\n    or dword \[\1\], (0x[0-9a-f]+)",
        r"    mov eax, [\1]\n    and eax, ~0x7\n    or eax, \2\n    mov dword [request], \1\n"
        r"    mov [request + 4], eax\n    mov ebx, request\n    mov ecx, 1\n"
        + HYPERCALL.format(number=17),
    ),
    (  # an entry of the test region's tables: mmu_update
        r"    mov dword \[(0x20[23][0-9a-f]{3})\], (0x[0-9a-f]+)",
        r"    mov dword [request], \1\n    mov dword [request + 4], \2\n"
        r"    mov ebx, request\n    mov ecx, 1\n" + HYPERCALL.format(number=17),
    ),
    (r"    invlpg \[(0x[0-9a-f]+)\]", r"    mov ebx, \1\n" + HYPERCALL.format(number=19)),
    (
        r"    mov eax, (0x20[04]000)\n    mov cr3, eax",
        r"    mov ebx, \1\n" + HYPERCALL.format(number=18),
    ),
)


def ported(source: str) -> str:
    for pattern, replacement in _PORT:
        source = re.sub(pattern, replacement, source)
    privileged = r"cr3|invlpg|cr0|paging_on|dword \[0x20[23]"
    assert not re.search(privileged, source), "a privileged line left"
    return PV_MARK + source + "\nrequest: dd 0, 0\n"


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=8))
@example(operations=CACHED)
def test_every_read_under_direct_paging_is_what_bare_metal_reads(asm, operations):
    """A pinned table changed by mmu_update while the other space runs, a switch back to a
    pinned directory, INVLPG by hypercall: every page reads as on bare metal."""
    source = guest_source(operations)
    native = run_guest(asm(source, "native"), "native")
    assert native.exit.reason == "debug_exit", native.exit
    image = asm(ported(source), "ported")
    assert image.paravirtual
    pv = run_guest(image, "pv", keep_events=True)
    assert (pv.console, pv.exit.status) == (native.console, native.exit.status)
    assert not [e for e in pv.events if isinstance(e, Hypercall) and e.error]
    updates = sum(op[0] in ("map", "unmap", "protect") for op in operations)
    assert pv.hypercalls.get("mmu_update", 0) == updates and pv.hypercalls["new_baseptr"] >= 1


def test_the_page_tables_pane_sees_direct_paging():
    """What the pane shows for a ported kernel: the guest's own tables, no shadow, the walk
    ending in the VM's slice of host RAM."""
    vm = Vm(load_guest("course", paravirtual=True, cmdline="exit"), "pv")
    assert vm.executor.paging().view(0x100000, "asked for").kind is PagingKind.OFF
    while not vm.executor.paging().enabled:
        vm.run(2000)
    view = vm.executor.paging().view(0xC0100000, "asked for")  # the higher-half alias
    assert view.kind is PagingKind.DIRECT and view.shadow is None
    assert view.guest_physical == 0x100000
    assert view.host_physical == vm.machine.ram.start + 0x100000
