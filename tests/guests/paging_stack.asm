; paging_stack.asm - paging on, the stack page not mapped, then INT3.
;
; On the CPU the breakpoint cannot push its frame: #PF while delivering it, the #PF cannot
; push its frame either (#DF), nor can the #DF: a triple fault, the machine shuts down. If the
; handler ever runs (status 1), something wrote the frame without walking the page tables.

bits 32
org 0x100000

%include "paging.inc"

PD          equ 0x200000
PT          equ 0x201000
STACK_PAGE  equ 0x3FF000

start:
    identity_map PT, 0x3            ; 0-4 MiB, present | writable
    mov dword [PT + (STACK_PAGE >> 12) * 4], 0
    mov dword [PD], PT | 0x3

    xor ecx, ecx                    ; every exception vector -> handler
.gates:
    mov eax, handler
    mov [idt + ecx * 8], ax
    mov word [idt + ecx * 8 + 2], 0x08
    mov word [idt + ecx * 8 + 4], 0x8E00
    shr eax, 16
    mov [idt + ecx * 8 + 6], ax
    inc ecx
    cmp ecx, 32
    jb .gates
    lidt [idtr]

    paging_on PD, 0x80000000
    mov esp, STACK_PAGE + 0xFF0     ; inside the page that is not mapped
    int3                            ; the CPU: triple fault here
    mov al, 2
    jmp exit
handler:
    mov al, 1
exit:
    mov dx, 0x501
    out dx, al
    cli
    hlt

align 8
idt:    times 32 * 8 db 0
idtr:   dw 32 * 8 - 1
        dd idt
