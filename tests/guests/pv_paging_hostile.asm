; pv_paging_hostile.asm - a paravirtual kernel that pages directly and tries every update the
; pv monitor must refuse (docs/paging.md, "Direct paging"). Each attempt prints the hypercall's
; result (an error code) or, for a store straight into a pinned table, the page fault the
; read-only mapping gives; then the kernel goes on. A good update, last, shows paging works.
;
;   1. new_baseptr of a directory that a pinned table maps writable   E_PERM
;   2. a page mapped to a frame outside the VM's RAM                  E_FAULT
;   3. a writable mapping of the pinned page directory                E_PERM
;   4. directory entry 1023: the monitor's window                     E_PERM
;   5. a 4 MiB page on the monitor's memory (a frame outside RAM)     E_FAULT
;   6. mov [page table], eax: a direct write to a pinned table        #PF, error 3
;   7. a good update: 0x300000 -> frame 0x180000, written, read back

%define PARAVIRT
bits 32
org 0x100000
%include "vmlab.inc"
%include "paging.inc"

PD      equ 0x200000                ; the page directory
PT      equ 0x201000                ; the page table for 0-4 MiB
PD2     equ 0x202000                ; a would-be directory the identity map leaves writable
WINDOW  equ 1023                    ; the directory entry of the monitor's window
SPARE   equ 0x300000                ; a linear page the updates point somewhere

start:
    call gdt_install
    mov eax, esp
    call tss_install
    call idt_install_exceptions
    set_gate 14, page_fault, INTERRUPT_GATE
    call idt_load

    identity_map PT, 0x3            ; 0-4 MiB present, writable...
    and dword [PT + (PD >> 12) * 4], ~2 ; ...but the tables themselves read-only
    and dword [PT + (PT >> 12) * 4], ~2
    mov dword [PD], PT | 0x3
    mov ebx, PD
    hypercall HC_NEW_BASEPTR
    call report                     ; 0: paging on, the tables pinned

    mov dword [PD2], PT | 0x3       ; PT maps PD2 writable: no directory
    mov ebx, PD2
    hypercall HC_NEW_BASEPTR
    call report

    mov dword [request + 4], 0x500000 | 0x3     ; frame 0x500000: past 4 MiB of RAM
    call update_spare
    mov dword [request + 4], PD | 0x3           ; the directory, writable
    call update_spare
    mov dword [request], PD + WINDOW * 4        ; the window's slot
    mov dword [request + 4], PT | 0x3
    call update
    mov dword [request], PD + 4                 ; a 4 MiB page on the monitor's memory
    mov dword [request + 4], 0xFFC00000 | 0x83
    call update

    mov dword [PT + (SPARE >> 12) * 4], 0x500003 ; no hypercall: the page table is read-only
after_store:

    mov dword [request + 4], 0x180000 | 0x3     ; a good one
    call update_spare
    mov ebx, SPARE
    hypercall HC_INVLPG
    mov dword [SPARE], 0x12345678
    mov eax, [0x180000]             ; the same frame, through the identity map
    call print_hex32
    call newline
    println "still running"
    mov al, EXIT_SUCCESS
    jmp exit

; update_spare - mmu_update of the PTE of SPARE to [request + 4]; update - of [request].
update_spare:
    mov dword [request], PT + (SPARE >> 12) * 4
update:
    mov ebx, request
    mov ecx, 1
    hypercall HC_MMU_UPDATE
report:                             ; print EAX and a newline
    call print_hex32
    jmp newline

page_fault:                         ; print "#PF" CR2 and the error code; skip the store
    mov eax, cr2
    print "#PF "
    call print_hex32
    print " "
    mov eax, [esp]
    call print_hex32
    call newline
    add esp, 4                      ; the error code
    mov dword [esp], after_store
    interrupt_return

align 4
request: dd 0, 0                    ; one (entry address, value) pair
