; apic_paging.asm - the APICs under the guest's own paging: the first 4 MiB identity-mapped,
; the 4 MiB holding both APICs (0xFEC00000-0xFEFFFFFF) mapped twice with PSE pages: where
; it is and at 0xC0000000. A monitor's shadow page tables must take both to the devices.
; One pass/fail line per check on COM1; the exit status is the number of failures.
%include "multiboot.inc"                    ; loaded at 1 MiB, the multiboot header
%include "report.inc"                       ; CHECK: one pass/fail line per check

%include "paging.inc"

ALIAS       equ 0xC0000000 + (0xFEE00000 - 0xFEC00000)   ; the local APIC through the alias

entry:
    mov esp, stack_top
    identity_map low_table, 3
    mov dword [directory], low_table + 3
    mov dword [directory + (0xFEC00000 >> 22) * 4], 0xFEC00000 | 0x83   ; 4 MiB, writable
    mov dword [directory + (0xC0000000 >> 22) * 4], 0xFEC00000 | 0x83
    paging_on directory, 0x80000000, 0x10
    cmp dword [0xFEE00030], 0x50014
    CHECK "lapic version where it is"
    cmp dword [ALIAS + 0x30], 0x50014
    CHECK "lapic version through the alias"
    mov dword [ALIAS + 0x80], 0x35              ; TPR, through the alias
    cmp dword [0xFEE00080], 0x35
    CHECK "tpr written through the alias"
    mov dword [0xFEE00080], 0
    mov dword [0xFEC00000], 1                   ; I/O APIC version
    cmp dword [0xFEC00010], 0x170020
    CHECK "ioapic version under paging"
    mov dword [0xC0000000], 1
    cmp dword [0xC0000010], 0x170020
    CHECK "ioapic through the alias"
    mov al, [failures]
    out 0xf4, al
    cli
    hlt


section .data
load_end:

section .bss
alignb 4096
directory:  resb 4096
low_table:  resb 4096
    resb 4096
stack_top:
bss_end:
