; higher_store - one store through a higher-half mapping, as a kernel linked at 0xC0000000
; writes its own data once paging is on.
;
; Two 4 MiB pages (CR4.PSE): linear 0-4 MiB onto itself (the code runs there) and linear
; 0xC0000000-0xC03FFFFF onto physical 0-4 MiB too. The kernel stores to linear 0xC0200000
; (physical 0x200000) and ends through the debug exit (status 0). The step's recorded write
; is at the linear address the instruction names, as the CPU sees it; the UI's page tables
; pane walks that address.
%include "multiboot.inc"             ; loaded at 1 MiB, the multiboot header
%include "paging.inc"

DIRECTORY equ 0x110000          ; the page directory, 4 KiB aligned, above the kernel
HIGH equ 0xC0000000

entry:
    mov edi, DIRECTORY          ; an empty directory...
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [DIRECTORY], 0x83                    ; ...PDE 0: 4 MiB page at 0, present, writable
    mov dword [DIRECTORY + (HIGH >> 22) * 4], 0x83 ; PDE 0x300: the same frames at 3 GiB
    paging_on DIRECTORY, 0x80000000, 0x10
    mov dword [HIGH + 0x200000], 0x12345678        ; the store: linear 0xC0200000
    mov dx, 0xF4                ; debug exit, status 0
    xor al, al
    out dx, al
load_end:
bss_end:
