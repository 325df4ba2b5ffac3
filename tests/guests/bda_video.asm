; bda_video - what the BIOS data area says about the screen, and a cursor moved through it.
;
; Text-mode kernels that want to know their screen ask the BIOS data area, as the video BIOS
; left it: the equipment word's bits 4-5 (10b: 80x25 colour), the mode at 0x449, columns at
; 0x44A, the page size at 0x44C, the CRT controller's index port at 0x463, rows - 1 at 0x484
; and the character height at 0x485. This guest prints each on COM1 as "name=hex", then moves
; the hardware cursor to row 2, column 5 through the port it found at 0x463 and ends (debug
; exit 0 at 0x501, or QEMU's isa-debug-exit at 0xF4).
; A flat image for vmlab (entered at 0x100000) and a multiboot image for QEMU (at `entry`).
%include "multiboot.inc"             ; loaded at 1 MiB, the multiboot header

COM1 equ 0x3F8

%macro field 3-4 0xFFFF         ; name, address, size in bytes (1 or 2)[, mask]
    mov esi, %%name
    call puts
%if %3 == 1
    movzx eax, byte [%2]
%else
    movzx eax, word [%2]
%endif
    and eax, %4
    call puthex
    jmp %%done
%%name: db %1, "=", 0
%%done:
%endmacro

entry:
    mov esp, 0x90000
    field "video", 0x410, 2, 0x30  ; the equipment word's bits 4-5: the initial video mode
    field "mode", 0x449, 1
    field "columns", 0x44A, 2
    field "page", 0x44C, 2
    field "crtc", 0x463, 2
    field "rows-1", 0x484, 1
    field "charheight", 0x485, 2
    movzx edx, word [0x463]     ; the CRTC as the BIOS data area names it
    mov ebx, 2 * 80 + 5         ; row 2, column 5
    mov al, 0x0F                ; cursor location low
    out dx, al
    inc edx
    mov al, bl
    out dx, al
    dec edx
    mov al, 0x0E                ; cursor location high
    out dx, al
    inc edx
    mov al, bh
    out dx, al
    mov esi, done
    call puts
    mov dx, 0x501               ; debug exit, status 0 (nothing there under QEMU)
    xor al, al
    out dx, al
    out 0xF4, al                ; QEMU's isa-debug-exit (process status (0 << 1) | 1)
    cli
    hlt

puthex:                         ; EAX (16 bits) as four hex digits and a space
    mov ecx, 4
.digit:
    rol ax, 4
    push eax
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe .out
    add al, 'a' - '0' - 10
.out:
    call putc
    pop eax
    loop .digit
    mov al, ' '
%include "com1.inc"             ; putc, puts

done: db 10, "cursor moved", 10, 0
load_end:
bss_end:
