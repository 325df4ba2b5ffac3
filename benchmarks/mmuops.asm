; mmuops - one MMU operation N times, for benchmarks/bench_paging.py's cost table.
;   -DTRUE_FAULT  read a page that is not mapped; the #PF handler skips the read
;   -DPTEMOD      write a page-table entry (and read through it, so a monitor traces it again)
;   -DCR3_SWITCH  switch between two address spaces, reading a page in each
; Paging is on in all three, with two page directories sharing one identity-mapped table.
bits 32
org 0x100000

%include "../tests/guests/paging.inc"

%ifndef COUNT
%define COUNT 2000
%endif

PD_A    equ 0x200000
PD_B    equ 0x202000
PT      equ 0x201000
MISSING equ 0x380000

start:
    identity_map PT, 0x3
    mov dword [PT + (MISSING >> 12) * 4], 0
    mov dword [PD_A], PT | 0x3
    mov dword [PD_B], PT | 0x3
    small_idt_gate 14, page_fault
    lidt [idtr]
    paging_on PD_A, 0x80000000
    mov ecx, COUNT
again:
%ifdef TRUE_FAULT
    mov eax, [MISSING]              ; 5 bytes: the handler skips them
%elifdef PTEMOD
    mov dword [PT + 0x300 * 4], 0x300003
    invlpg [0x300000]
    mov eax, [0x300000]
%elifdef CR3_SWITCH
    mov eax, PD_B
    mov cr3, eax
    mov eax, [0x300000]
    mov eax, PD_A
    mov cr3, eax
    mov eax, [0x300000]
%endif
    dec ecx
    jnz again
    mov dx, 0x501
    xor al, al
    out dx, al
    hlt

page_fault:
    add dword [esp + 4], 5          ; the saved EIP, past `mov eax, [MISSING]` (A1 imm32)
    add esp, 4                      ; the error code
    iretd

align 8
idt:    times 16 * 8 db 0
idtr:   dw 16 * 8 - 1
        dd idt
