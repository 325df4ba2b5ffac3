; pagingloop - a kernel's hot loop, with paging on (-DPAGING) or off: the same instructions.
; The loop walks a 64 KiB buffer (16 pages) with loads and stores, so every iteration goes
; through unicorn's TLB; with paging on, the page walks on TLB misses are unicorn's own.
; With -DTOUCH it reads one word of each of the 1024 pages of the first 4 MiB instead, once:
; under a monitor, each first touch is a hidden page fault (the shadow fills).
; Used by benchmarks/bench_paging.py.
bits 32
org 0x100000

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
    paging_on PD, 0x80000000
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
