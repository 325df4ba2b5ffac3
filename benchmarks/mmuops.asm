; mmuops - one MMU operation N times, for benchmarks/bench_paging.py's cost table.
;   -DTRUE_FAULT  read a page that is not mapped; the #PF handler skips the read
;   -DPTEMOD      write a page-table entry (and read through it, so a monitor traces it again)
;   -DCR3_SWITCH  switch between two address spaces, reading a page in each
; Paging is on in all three, with two page directories sharing one identity-mapped table.
; -DPARAVIRT ports it to pv's direct paging (benchmarks/bench_pv_paging.py): the tables are
; read-only, the entry write and the CR3 loads are mmu_update and new_baseptr hypercalls.
bits 32
org 0x100000

%ifdef PARAVIRT
    jmp near start
    db "VMLAB-PV"                   ; the paravirtual mark (a ported kernel)
%macro hypercall 1
    mov eax, %1
    int 0x82
%endmacro
%macro load_cr3 1                   ; new_baseptr: the directory pinned (once) and loaded
    mov ebx, %1
    hypercall 18
%endmacro
%else
%macro load_cr3 1
    mov eax, %1
    mov cr3, eax
%endmacro
%endif

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
%ifdef PARAVIRT
    and dword [PT + (PD_A >> 12) * 4], ~2   ; the tables read-only to the kernel
    and dword [PT + (PT >> 12) * 4], ~2
    and dword [PT + (PD_B >> 12) * 4], ~2
    load_cr3 PD_A                   ; and paging on
%else
    paging_on PD_A, 0x80000000
%endif
    mov ecx, COUNT
again:
%ifdef TRUE_FAULT
    mov eax, [MISSING]              ; 5 bytes: the handler skips them
%elifdef PTEMOD
%ifdef PARAVIRT
    push ecx
    mov ebx, update
    mov ecx, 1
    hypercall 17                    ; mmu_update
    mov ebx, 0x300000
    hypercall 19                    ; invlpg
    pop ecx
%else
    mov dword [PT + 0x300 * 4], 0x300003
    invlpg [0x300000]
%endif
    mov eax, [0x300000]
%elifdef CR3_SWITCH
    load_cr3 PD_B
    mov eax, [0x300000]
    load_cr3 PD_A
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
%ifdef PARAVIRT
update: dd PT + 0x300 * 4, 0x300003 ; the mmu_update request: (entry, value)
%endif
idt:    times 16 * 8 db 0
idtr:   dw 16 * 8 - 1
        dd idt
