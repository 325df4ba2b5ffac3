; apic_paging.asm - the APICs under the guest's own paging: the first 4 MiB identity-mapped,
; the 4 MiB holding both APICs (0xFEC00000-0xFEFFFFFF) mapped twice with PSE pages: where
; it is and at 0xC0000000. A monitor's shadow page tables must take both to the devices.
; One pass/fail line per check on COM1; the exit status is the number of failures.
bits 32
org 0x100000
load_start:
    jmp short entry
align 4
header:
    dd 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
    dd header, load_start, load_end, bss_end, entry

%include "paging.inc"

ALIAS       equ 0xC0000000 + (0xFEE00000 - 0xFEC00000)   ; the local APIC through the alias

%macro CHECK 1
    [section .data]
%%name: db %1, 0
    __?SECT?__
    mov esi, %%name
    call report
%endmacro

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

report:
    pushfd
    call puts
    popfd
    mov esi, pass
    jz .print
    inc byte [failures]
    mov esi, fail
.print:
    jmp puts

puts:
    lodsb
    test al, al
    jz .end
    mov dx, 0x3fd
    mov ah, al
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    mov al, ah
    mov dx, 0x3f8
    out dx, al
    jmp puts
.end:
    ret

section .data
pass:     db ": pass", 10, 0
fail:     db ": FAIL", 10, 0
failures: db 0
load_end:

section .bss
alignb 4096
directory:  resb 4096
low_table:  resb 4096
    resb 4096
stack_top:
bss_end:
