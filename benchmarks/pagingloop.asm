; pagingloop - a kernel's hot loop, with paging on (-DPAGING) or off: the same instructions.
; The loop walks a 64 KiB buffer (16 pages) with loads and stores, so every iteration goes
; through unicorn's TLB; with paging on, the page walks on TLB misses are unicorn's own.
; With -DTOUCH it reads one word of each of the 1024 pages of the first 4 MiB instead, once:
; under a monitor, each first touch is a hidden page fault (the shadow fills).
; -DPARAVIRT ports it to pv's direct paging: the tables read-only, new_baseptr for CR3.
; Used by benchmarks/bench_paging.py and bench_pv_paging.py.
bits 32
org 0x100000

%ifdef PARAVIRT
    jmp near start
    db "VMLAB-PV"                   ; the paravirtual mark (a ported kernel)
%endif

%include "../tests/guests/paging.inc"

%ifndef ITERATIONS
%define ITERATIONS 2000000
%endif

PD      equ 0x200000
PT      equ 0x201000
BUFFER  equ 0x280000

start:
%ifdef PAGING
    identity_map PT, 0x3            ; 0-4 MiB, present | writable, 4 KiB pages
    mov dword [PD], PT | 0x3
%ifdef PARAVIRT
    and dword [PT + (PD >> 12) * 4], ~2 ; the tables read-only to the kernel
    and dword [PT + (PT >> 12) * 4], ~2
    mov ebx, PD
    mov eax, 18                     ; new_baseptr: pinned, and paging on
    int 0x82
%else
    paging_on PD, 0x80000000
%endif
%endif
%ifdef TOUCH
    xor esi, esi
touch:
    add eax, [esi]
    add esi, 0x1000
    cmp esi, 0x400000
    jb touch
%else
    mov ecx, ITERATIONS
    xor esi, esi
    xor eax, eax
loop_start:
    mov ebx, [BUFFER + esi]
    add ebx, eax
    mov [BUFFER + esi + 4], ebx
    add esi, 0x404                  ; next page (and a little further), wrapping in 64 KiB
    and esi, 0xFFFC
    inc eax
    dec ecx
    jnz loop_start
%endif
    mov dx, 0x501
    xor al, al
    out dx, al
    hlt
