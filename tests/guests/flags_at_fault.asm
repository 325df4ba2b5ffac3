; Flags set by an ALU instruction right before a page fault: the #PF frame must hold them
; (EFLAGS pushed by the delivery), as on bare metal. Unicorn's lazy flags are computed for a
; code hook after the faulting instruction began, and a fault there puts back the lazy
; state it began with (docs/clock.md, lazy flags): the count clock's hook is on every
; instruction. The handler keeps the pushed EFLAGS in ESI and ends by debug exit 0.
bits 32
org 0x100000

%include "../../sample_guests/vmlab.inc"
%include "paging.inc"

PD          equ 0x200000
PT          equ 0x201000
NOTHERE     equ 0x300000        ; not present in the page table

start:
    kernel_tables kernel_stack_top
    set_gate 14, page_fault, INTERRUPT_GATE
    call idt_load
    identity_map PT, 0x7
    mov dword [PT + (NOTHERE >> 12) * 4], 0
    mov dword [PD], PT | 0x7
    paging_on PD, 0x80000000
    mov ecx, 0x80000000
    add ecx, ecx                ; carry out and overflow: CF PF ZF OF (EFLAGS 0x847)
    mov edx, [NOTHERE]          ; #PF
    cli
    hlt

page_fault:
    mov esi, [esp + 12]         ; the EFLAGS the CPU pushed (after the error code, EIP, CS)
    mov al, 0
    jmp exit

align 16
    times 1024 db 0
kernel_stack_top:
