; pge.asm - global pages as a kernel uses them when CPUID offers PGE: it maps itself with
; the G flag and sets CR4.PGE, so that a CR3 load (a task switch) keeps its own
; translations. CR4.PGE stays set across CR3 loads; a global page whose entry changes is
; seen anew after INVLPG, and after CR4.PGE is cleared (which empties the TLB, global
; entries too). A page table entry's PAT flag (CPUID PAT) picks a memory type only.
; One pass/fail line per check on COM1; the exit status (port 0xF4) is the number of
; failures. The same under QEMU.
%include "multiboot.inc"
%include "report.inc"
%include "paging.inc"

CPUID_PGE equ 1 << 13                           ; leaf 1 EDX
CR4_PGE   equ 1 << 7
PTE_G     equ 0x100                            ; page table entry flag G
PTE_PAT   equ 0x80                             ; its PAT flag (a memory type only: CPUID PAT)
WINDOW    equ 0x300000                          ; a linear page whose frame the guest moves

%macro MAP 1                                    ; WINDOW -> frame %1, global (no flush)
    mov dword [page_table + (WINDOW >> 12) * 4], %1 + (PTE_G | 3)
%endmacro

entry:
    mov esp, 0x90000
    mov eax, 1
    cpuid
    and edx, CPUID_PGE
    cmp edx, CPUID_PGE
    CHECK "cpuid: pge"
    identity_map page_table, PTE_G | 3         ; the first 4 MiB: global, writable
    mov dword [directory], page_table + 3
    mov dword [frame_a], 0xAAAAAAAA
    mov dword [frame_b], 0xBBBBBBBB
    paging_on directory, 0x80000000, CR4_PGE
    mov eax, cr4
    test eax, CR4_PGE
    setnz al
    cmp al, 1
    CHECK "cr4.pge is set"
    mov eax, cr3
    mov cr3, eax                                ; a task switch's CR3 load
    mov eax, cr4
    test eax, CR4_PGE
    setnz al
    cmp al, 1
    CHECK "cr4.pge survives a cr3 load"
    MAP frame_a
    cmp dword [WINDOW], 0xAAAAAAAA
    CHECK "a global page maps its frame"
    MAP frame_b
    invlpg [WINDOW]                             ; a global entry goes with INVLPG
    cmp dword [WINDOW], 0xBBBBBBBB
    CHECK "invlpg drops a global entry"
    MAP frame_a
    mov eax, cr4
    and eax, ~CR4_PGE                           ; clearing PGE empties the whole TLB
    mov cr4, eax
    cmp dword [WINDOW], 0xAAAAAAAA
    CHECK "clearing cr4.pge drops global entries"
    mov dword [page_table + (WINDOW >> 12) * 4], frame_b + (PTE_PAT | 3)
    invlpg [WINDOW]
    cmp dword [WINDOW], 0xBBBBBBBB
    CHECK "a page with the pat flag maps its frame"
    FINISH

section .data
load_end:

section .bss
alignb 4096
directory:  resb 4096
page_table: resb 4096
frame_a:    resb 4096
frame_b:    resb 4096
bss_end:
