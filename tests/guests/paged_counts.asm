; paged_counts.asm - code whose bytes are not where its linear address says, with the same
; block (address and size) holding a different number of instructions over time.
;
; The block clock counts a translated block's instructions from its bytes (keyed by the
; block's linear address and size, checked against the code on each use). With paging on,
; those bytes must be read through the page tables in force: this guest fails that if the
; clock reads RAM at the linear address, trusts a count made in another address space, or
; misses a rewrite through a second mapping of the code's frame.
;
; Both spaces identity-map 0-4 MiB (the kernel, its tables, the frames). Above it:
;   space A: CODE 0x400000 -> frame 0x300000 ("inc eax" five times; ret: 6 instructions)
;            ALIAS 0x401000 -> frame 0x300000 again (writable)
;   space B: CODE 0x400000 -> frame 0x301000 ("add eax, 5; nop; nop; ret": 4 instructions)
; Both add 5 to EAX in 6 bytes: only the clock can tell them apart.

bits 32
org 0x100000

%include "../../sample_guests/vmlab.inc"
%include "paging.inc"

PD_A        equ 0x200000
PD_B        equ 0x201000
PT_LOW      equ 0x202000
PT_A        equ 0x203000
PT_B        equ 0x204000
FRAMES      equ 0x300000
CODE        equ 0x400000
ALIAS       equ 0x401000
ROUNDS      equ 30
CR0_PG      equ 0x80000000

start:
    copy incs, FRAMES, 6
    copy add5, FRAMES + 0x1000, 6

    identity_map PT_LOW, 0x3
    mov dword [PT_A], FRAMES | 0x3
    mov dword [PT_A + 4], FRAMES | 0x3
    mov dword [PT_B], (FRAMES + 0x1000) | 0x3
    mov dword [PD_A], PT_LOW | 0x3
    mov dword [PD_A + 4], PT_A | 0x3
    mov dword [PD_B], PT_LOW | 0x3
    mov dword [PD_B + 4], PT_B | 0x3
    paging_on PD_A, CR0_PG
    xor eax, eax                    ; what CODE adds up

    ; 1. One block, two address spaces: 6 instructions in A, 4 in B.
    call rounds
    ; 2. A's frame rewritten through its second mapping: 4 instructions in A too.
    mov esi, add5
    mov edi, ALIAS
    mov ecx, 6
    rep movsb
    call rounds
    ; 3. And back (a rewrite that keeps the block's address and size).
    mov esi, incs
    mov edi, ALIAS
    mov ecx, 6
    rep movsb
    call rounds
    print "CODE added "
    call print_hex32                ; 3 * ROUNDS * 2 * 5 = 0x384
    call newline
    mov al, EXIT_SUCCESS
    jmp exit

; ROUNDS calls of CODE in each space, alternately (EAX += 10 a round)
rounds:
    mov ecx, ROUNDS
.round:
    mov ebx, PD_A
    mov cr3, ebx
    call CODE
    mov ebx, PD_B
    mov cr3, ebx
    call CODE
    loop .round
    mov ebx, PD_A                   ; back in space A, where ALIAS is mapped
    mov cr3, ebx
    ret

incs:
    inc eax
    inc eax
    inc eax
    inc eax
    inc eax
    ret
add5:
    add eax, byte 5
    nop
    nop
    ret
