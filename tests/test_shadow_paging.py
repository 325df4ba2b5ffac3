"""Shadow paging against bare metal: random map/unmap/protect/CR3 switch/INVLPG sequences.

Each example is a guest built from a random sequence of page-table operations on 16 linear
pages (0x400000-0x40FFFF) in two address spaces. After each operation the guest reads (and
sometimes writes) every one of those pages and prints what it saw: the value, or the page
fault's error code and CR2. Under a monitor the CPU runs on the monitor's shadow of those
tables; every byte printed must be what bare metal prints. A change to an entry is followed
by INVLPG of its page (without it the architecture lets a stale TLB entry be used, and a
TLB and a shadow may differ there), and INVLPG also comes alone, of any page.

Modes: trap, and bt (translated loads and stores on the same shadows).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hypervisor.events import PageFaultHandled
from hypervisor.session import run_guest

PAGES = 16
FRAMES = 8  # data frames at 0x300000 + 4 KiB * i, each starting with its own number
TABLES = (0x202000, 0x203000)  # the test region's page table in address space 0 and 1
DIRECTORIES = (0x200000, 0x204000)

PROLOGUE = f"""
%include "{Path(__file__).parent / "guests" / "paging.inc"}"
    ; The first 4 MiB identity-mapped (kernel, stack, tables) in both address spaces, by one
    ; shared page table at 0x201000; the test region (PDE 1) has a table per space.
    identity_map 0x201000, 0x3
    mov dword [0x200000], 0x201003
    mov dword [0x200004], 0x202007
    mov dword [0x204000], 0x201003
    mov dword [0x204004], 0x203007
    mov ecx, 0
.frames:
    mov eax, ecx
    shl eax, 12
    mov [0x300000 + eax], ecx
    inc ecx
    cmp ecx, 8
    jb .frames
    small_idt_gate 14, page_fault
    lidt [idtr]
    paging_on 0x200000, 0x80010000  ; PG, WP
"""

EPILOGUE = """
    mov dx, 0x501
    mov al, 0
    out dx, al
    hlt

; print EAX as 4 raw bytes
put32:
    push ecx
    push edx
    mov dx, 0x3F8
    mov ecx, 4
.byte:
    out dx, al
    shr eax, 8
    loop .byte
    pop edx
    pop ecx
    ret

; #PF: print 'F', the error code and CR2, then go on at [resume]
page_fault:
    push eax
    mov eax, 'F'
    call put32
    mov eax, [esp + 4]
    call put32
    mov eax, cr2
    call put32
    mov eax, [resume]
    mov [esp + 8], eax
    pop eax
    add esp, 4
    iretd

resume: dd 0
align 8
idt:    times 16 * 8 db 0
idtr:   dw 16 * 8 - 1
        dd idt
"""

# Address space 1 is shadowed, then its page table changes while space 0 runs.
CACHED = [("map", 1, 0, 1, 3), ("switch", 1), ("switch", 0), ("map", 1, 0, 2, 3), ("switch", 1)]

OPERATIONS = st.one_of(
    st.tuples(
        st.just("map"),
        st.integers(0, 1),
        st.integers(0, PAGES - 1),
        st.integers(0, FRAMES - 1),
        st.sampled_from([0x1, 0x3, 0x5, 0x7]),  # present, +writable, +user
    ),
    st.tuples(st.just("unmap"), st.integers(0, 1), st.integers(0, PAGES - 1)),
    st.tuples(  # new rights for whatever the entry maps now (present or not)
        st.just("protect"),
        st.integers(0, 1),
        st.integers(0, PAGES - 1),
        st.sampled_from([0x0, 0x1, 0x3, 0x5, 0x7]),
    ),
    st.tuples(st.just("invlpg"), st.integers(0, PAGES - 1)),
    st.tuples(st.just("switch"), st.integers(0, 1)),
    st.tuples(st.just("write"), st.integers(0, PAGES - 1), st.integers(1, 0xFFFF)),
)


def guest_source(operations: list[tuple]) -> str:
    lines = [PROLOGUE]
    space = 0
    for n, op in enumerate(operations):
        if op[0] in ("map", "unmap"):
            table, page = TABLES[op[1]], op[2]
            entry = 0 if op[0] == "unmap" else (0x300000 + 0x1000 * op[3]) | op[4]
            lines.append(f"    mov dword [{table + 4 * page:#x}], {entry:#x}")
            lines.append(f"    invlpg [{0x400000 + 0x1000 * page:#x}]")
        elif op[0] == "protect":
            entry = TABLES[op[1]] + 4 * op[2]
            lines.append(f"    and dword [{entry:#x}], ~0x7")
            lines.append(f"    or dword [{entry:#x}], {op[3]:#x}")
            lines.append(f"    invlpg [{0x400000 + 0x1000 * op[2]:#x}]")
        elif op[0] == "invlpg":
            lines.append(f"    invlpg [{0x400000 + 0x1000 * op[1]:#x}]")
        elif op[0] == "switch":
            space = op[1]
            lines.append(f"    mov eax, {DIRECTORIES[space]:#x}\n    mov cr3, eax")
        else:
            address = 0x400000 + 0x1000 * op[1] + 8
            lines.append(f"    mov dword [resume], .w{n}")
            lines.append(f"    mov dword [{address:#x}], {op[2]:#x}")
            lines.append(f".w{n}:")
        for page in range(PAGES):  # what every page of the region shows now
            label = f".r{n}_{page}"
            lines.append(f"    mov dword [resume], {label}")
            lines.append(f"    mov eax, [{0x400000 + 0x1000 * page:#x}]")
            lines.append(f"    add eax, [{0x400000 + 0x1000 * page + 8:#x}]")
            lines.append("    call put32")
            lines.append(f"{label}:")
    lines.append(EPILOGUE)
    return "\n".join(lines)


@pytest.mark.parametrize("mode", ["trap", "bt"])
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=8))
@example(
    operations=[
        ("map", 1, 0, 1, 3),
        ("switch", 1),
        ("switch", 0),
        ("map", 1, 0, 2, 3),
        ("switch", 1),
    ]
)
@example(  # rights taken away and given back, a stale-looking INVLPG in between
    operations=[
        ("map", 0, 3, 2, 7),
        ("protect", 0, 3, 0x1),
        ("write", 3, 0x55),
        ("invlpg", 3),
        ("protect", 0, 3, 0x0),
        ("switch", 1),
        ("switch", 0),
        ("protect", 0, 3, 0x3),
        ("write", 3, 0x66),
    ]
)
def test_every_read_under_shadow_paging_is_what_bare_metal_reads(asm, mode, operations):
    image = asm(guest_source(operations))
    native = run_guest(image, "native")
    monitored = run_guest(image, mode)
    assert native.exit.reason == "debug_exit", native.exit
    assert (monitored.console, monitored.exit.status) == (native.console, native.exit.status)


@pytest.mark.parametrize("mode", ["trap", "bt"])
def test_a_write_to_a_shadowed_page_table_is_a_ptemod(asm, mode):
    """Space 1's table is written while space 0 runs: the write faults on the traced page
    (a ptemod event, counted as a trap), then goes ahead."""
    report = run_guest(asm(guest_source(CACHED)), mode, keep_events=True)
    outcomes = [e.outcome for e in report.events if isinstance(e, PageFaultHandled)]
    assert "ptemod" in outcomes
    assert report.traps["ptemod"] == outcomes.count("ptemod")
    assert report.traps["#PF hidden"] == outcomes.count("hidden")
