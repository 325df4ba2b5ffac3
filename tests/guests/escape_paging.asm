; escape_paging.asm - escape.asm's idea with paging on: a hostile kernel that builds page
; tables aimed at memory it does not own, and writes through them.
;
;  1. 256 pages mapped to frames beyond its RAM, one every 256 KiB from 4 MiB up to 68 MiB:
;     where the other VMs' RAM lies in host memory. It writes a pattern through each, then
;     counts the ones that kept it.
;  2. 256 pages mapped to the first 1 MiB of frames from 0xFFC00000, where a monitor keeps
;     its window: the same writes, the same count.
;  3. A page directory entry whose page table lies outside RAM (so the walk itself reads
;     open bus, all ones: a "present, writable" entry for frame 0xFFFFF000), and a 4 MiB
;     page (CR4.PSE) on the window frame: a write and a read through each.
;  4. Its own page directory mapped writable, then PDE 0x3FF (linear 0xFFC00000 up) pointed
;     at its own RAM, and a write there.
;
; What to expect:
;   native - 1 to 3 are open bus: nothing kept (count 0), reads all ones. 4 is its own RAM
;            now: the pattern is kept ("window write kept: 1").
;   trap   - 1 to 3 the same (each frame outside RAM is open bus, a window frame is
;            redirected to open bus: isolation events). In 4 the guest's mapping of the
;            window is ignored: the monitor's window stays there, read-only to the guest, so
;            the write lands nowhere ("window write kept: 0").
;   Either way nothing outside its own slice of host RAM changes (tests/test_host_paging.py).

bits 32
org 0x100000

%include "../../sample_guests/vmlab.inc"
%include "paging.inc"

PD          equ 0x200000
PT_LOW      equ 0x201000            ; 0-4 MiB identity-mapped
PT_PROBE    equ 0x202000            ; linear 0x400000.. (PDE 1): the probes of 1 and 2
PROBES      equ 0x400000
OUTSIDE_PT  equ 0x01000000          ; a page table frame at 16 MiB: no RAM there
WALK_PAGE   equ 0x800000            ; linear (PDE 2), through OUTSIDE_PT
BIG_PAGE    equ 0xC00000            ; linear (PDE 3): a 4 MiB page on the window frame
PD_ALIAS    equ 0x3FF000            ; linear: the page directory, mapped writable
WINDOW      equ 0xFFC00000
PATTERN     equ 0x5EC0DE5A
CR0_PG      equ 0x80000000
CR4_PSE     equ 0x10
PTE_RW      equ 0x3

start:
    kernel_tables kernel_stack_top
    call idt_load

    identity_map PT_LOW, PTE_RW
    mov dword [PT_LOW + (PD_ALIAS >> 12) * 4], PD | PTE_RW   ; the directory, writable
    xor ecx, ecx
.probe_table:                       ; 0-255: beyond RAM; 256-511: the window's frames
    mov eax, ecx
    shl eax, 18                     ; every 256 KiB ...
    add eax, 0x400000 | PTE_RW      ; ... from 4 MiB
    cmp ecx, 256
    jb .entry
    lea eax, [ecx - 256]
    shl eax, 12
    add eax, WINDOW | PTE_RW
.entry:
    mov [PT_PROBE + ecx * 4], eax
    inc ecx
    cmp ecx, 512
    jb .probe_table
    mov dword [PD], PT_LOW | PTE_RW
    mov dword [PD + 4], PT_PROBE | PTE_RW
    mov dword [PD + 8], OUTSIDE_PT | PTE_RW
    mov dword [PD + 12], WINDOW | 0x80 | PTE_RW             ; PS: a 4 MiB page
    paging_on PD, CR0_PG, CR4_PSE
    println "escape_paging: page tables aimed at what I do not own"

    ; 1 and 2: write through every probe, then count the pages that kept the pattern.
    xor ecx, ecx
.smash:
    mov edi, ecx
    shl edi, 12
    mov dword [PROBES + edi], PATTERN
    inc ecx
    cmp ecx, 512
    jb .smash
    xor ecx, ecx
    xor ebx, ebx                    ; kept beyond RAM
    xor edx, edx                    ; kept in the window
.count:
    mov edi, ecx
    shl edi, 12
    cmp dword [PROBES + edi], PATTERN
    jne .next
    cmp ecx, 256
    jb .beyond
    inc edx
    jmp .next
.beyond:
    inc ebx
.next:
    inc ecx
    cmp ecx, 512
    jb .count
    print "kept beyond RAM: "
    mov eax, ebx
    call print_hex32
    print ", kept in the window's frames: "
    mov eax, edx
    call print_hex32
    call newline

    ; 3: a walk through a page table that is not RAM, and a 4 MiB page on the window.
    mov dword [WALK_PAGE], PATTERN
    mov dword [BIG_PAGE + 0x10], PATTERN
    print "through a table outside RAM: "
    mov eax, [WALK_PAGE]
    call print_hex32
    print ", through a 4 MiB window page: "
    mov eax, [BIG_PAGE + 0x10]
    call print_hex32
    call newline

    ; 4: take linear 0xFFC00000 for itself (PDE 0x3FF -> its own table), then write there.
    mov dword [PD_ALIAS + 0x3FF * 4], PT_LOW | PTE_RW
    mov eax, PD
    mov cr3, eax                    ; flush: the new PDE is in force
    mov dword [WINDOW + 0x100], PATTERN
    xor eax, eax
    cmp dword [WINDOW + 0x100], PATTERN
    sete al
    print "window write kept: "
    call print_hex32
    call newline

    mov al, EXIT_SUCCESS
    jmp exit

align 16
    times 1024 db 0
kernel_stack_top:
