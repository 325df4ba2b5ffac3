; pagefault.asm - a kernel turns paging on and makes page faults on purpose, in ring 0 and
; ring 3; its #PF handler prints what the CPU tells it: CR2 and the error code.
;
; The address space (one page directory at PD, one page table at PT for the first 4 MiB):
;   0x000000-0x3FFFFF  identity-mapped, user, writable (the kernel, its data, the user task)
;     except NOTHERE   0x300000  not present
;            READONLY  0x301000  present, user, read-only
;            KERNEL    0x302000  present, supervisor only, writable
;   0x400000-0x7FFFFF  one 4 MiB page (CR4.PSE) showing physical 0-4 MiB again
;
; Each probe names where to go on after its fault (`resume`); the handler prints one line,
; "#PF cr2=... code=...", and returns there. Error code bits: 1 present (a protection
; fault), 2 write, 4 user (CPL 3).

bits 32
org 0x100000

%include "../../sample_guests/vmlab.inc"
%include "paging.inc"

PD          equ 0x200000
PT          equ 0x201000
NOTHERE     equ 0x300000
READONLY    equ 0x301000
KERNEL      equ 0x302000
ALIAS_4M    equ 0x400000
CR0_PG      equ 0x80000000
CR0_WP      equ 0x00010000
CR4_PSE     equ 0x10

; probe INSTRUCTION... - run it, expecting a #PF; go on after it either way.
%macro probe 1-2
    mov dword [resume], %%next
    %1
  %if %0 > 1
    %2
  %endif
%%next:
%endmacro

start:
    kernel_tables kernel_stack_top
    set_gate 14, page_fault, INTERRUPT_GATE
    set_gate SYSCALL_VECTOR, user_done, INTERRUPT_GATE | GATE_DPL3
    call idt_load

    ; The page table: 1024 entries, frame i at linear i * 4 KiB, present | writable | user.
    identity_map PT, 0x7
    mov dword [PT + (NOTHERE >> 12) * 4], 0
    mov dword [PT + (READONLY >> 12) * 4], READONLY | 0x5
    mov dword [PT + (KERNEL >> 12) * 4], KERNEL | 0x3
    mov dword [PD], PT | 0x7
    mov dword [PD + 4], 0x00000087   ; a 4 MiB page (PS) at physical 0: user, writable

    paging_on PD, CR0_PG | CR0_WP, CR4_PSE
    println "paging on"

    ; Ring 0.
    probe {mov eax, [NOTHERE]}                  ; read, not present: code 0
    probe {mov dword [NOTHERE + 4], 1}          ; write, not present: code 2
    probe {mov dword [READONLY + 8], 1}         ; write, read-only, CR0.WP = 1: code 3
    probe {add [NOTHERE + 0xC], eax}            ; read-modify-write counts as a write: code 2
    probe {mov eax, NOTHERE + 0x10}, {jmp eax}  ; fetch, not present: code 0

    mov eax, [ALIAS_4M + LINEAR(marker)]        ; through the 4 MiB page
    print "4 MiB page reads "
    call print_hex32
    call newline

    mov eax, cr0
    and eax, ~CR0_WP
    mov cr0, eax
    mov dword [READONLY + 8], 0x2A              ; CR0.WP = 0: ring 0 may write
    print "WP off: ring 0 wrote "
    mov eax, [READONLY + 8]
    call print_hex32
    call newline

    ; Ring 3.
    mov ax, USER_DS
    mov ds, ax
    mov es, ax
    push USER_DS
    push user_stack_top
    push EFLAGS_BASE
    push USER_CS
    push user_main
    iretd

user_main:
    probe {mov eax, [KERNEL]}                   ; read of a supervisor page: code 5
    probe {mov dword [KERNEL + 4], 1}           ; write to it: code 7
    probe {mov dword [READONLY + 0xC], 1}       ; write to a read-only page: code 7
    probe {mov eax, [NOTHERE + 0x14]}           ; read, not present: code 4
    probe {mov esp, NOTHERE + 0x100}, {push eax}  ; push to a missing stack: code 6
    mov esp, user_stack_top
    probe {mov eax, KERNEL + 0x20}, {jmp eax}   ; fetch from a supervisor page: code 5
    int SYSCALL_VECTOR

user_done:
    mov ax, KERNEL_DS
    mov ds, ax
    println "done"
    mov al, EXIT_SUCCESS
    jmp exit

; #PF: the CPU pushed the error code on top of EIP, CS, EFLAGS (and ESP, SS from ring 3).
page_fault:
    push eax
    push ds
    mov ax, KERNEL_DS
    mov ds, ax
    print_page_fault [esp + 8]
    mov eax, [resume]
    mov [esp + 12], eax             ; the saved EIP: go on after the probe
    pop ds
    pop eax
    add esp, 4                      ; drop the error code
    iretd

marker: dd 0x600DF00D
resume: dd 0

align 16
    times 1024 db 0
kernel_stack_top:
    times 1024 db 0
user_stack_top:
