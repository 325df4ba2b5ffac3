; keyecho - reads a line from COM1 by polling, then keys by interrupt, echoing both.
;
; The two ways an OS-course kernel waits for input, one after the other:
;   1. "serial> ": poll the UART's line status until a byte is there, read it from RBR,
;      echo it on COM1, until Enter (CR or LF);
;   2. keys: remap the PICs, unmask IRQ 1, STI, say "keys> " (on the screen, then COM1),
;      and sleep with HLT; the keyboard interrupt handler reads a scan code from port 0x60,
;      turns make codes into characters
;      (letters, digits, space, Enter, '.'), and echoes each on COM1 and on the VGA screen,
;      moving the hardware cursor after it. A '.' ends the run (exit status 0).
; A flat image for vmlab (entered at 0x100000) and a multiboot image for QEMU (at `entry`).
%include "multiboot.inc"             ; loaded at 1 MiB, the multiboot header

COM1    equ 0x3F8
SCREEN  equ 0xB8000
ATTR    equ 0x1E                ; yellow on blue

entry:
    mov esp, 0x90000
    mov esi, serial_prompt
    call puts
.poll:                          ; 1. a line from COM1, by polling LSR bit 0 (data ready)
    mov dx, COM1 + 5
    in al, dx
    test al, 0x01
    jz .poll
    mov dx, COM1
    in al, dx
    cmp al, 13
    je .line
    cmp al, 10
    je .line
    call putc
    jmp .poll
.line:
    mov al, 10
    call putc
    call pic_remap              ; 2. keys, by interrupt
    lidt [idt_pointer]
.drain:                         ; a byte left in the 8042 (by the BIOS, or a key typed early)
    in al, 0x64                 ; raised IRQ 1 before the PIC was set up: that edge is gone,
    test al, 0x01               ; and no other comes while the byte waits. Read it away.
    jz .drained
    in al, 0x60
    jmp .drain
.drained:
    sti                         ; ready: now say so, on the screen and then on COM1
    mov esi, keys_prompt
.prompt:
    lodsb
    test al, al
    jz .prompted
    call screen_putc
    jmp .prompt
.prompted:
    mov esi, keys_prompt
    call puts
.sleep:
    hlt
    jmp .sleep

keyboard_irq:                   ; IRQ 1: one scan code
    pushad
    in al, 0x60
    test al, 0x80
    jnz .done                   ; a break code: a key went up
    movzx eax, al
    cmp eax, keymap_end - keymap
    jae .done
    mov al, [keymap + eax]
    test al, al
    jz .done                    ; a key this kernel does not know
    cmp al, '.'
    je .bye
    push eax
    call screen_putc            ; the screen first: once COM1 shows a key, so does the screen
    pop eax
    call putc
.done:
    mov al, 0x20                ; EOI to the master PIC
    out 0x20, al
    popad
    iretd
.bye:
    mov al, 10
    call putc
    xor eax, eax
    out 0xF4, al                ; QEMU's isa-debug-exit
    mov dx, 0x501
    out dx, al                  ; vmlab's debug exit
    cli
    hlt

screen_putc:                    ; AL at the screen's cursor (Enter: the next line)
    mov ebx, [cursor]
    cmp al, 10
    je .newline
    mov ah, ATTR
    mov [SCREEN + 2 * ebx], ax
    inc ebx
    jmp .move
.newline:
    add ebx, 80
    mov eax, ebx
    xor edx, edx
    mov ecx, 80
    div ecx
    sub ebx, edx
.move:
    mov [cursor], ebx
    mov dx, 0x3D4               ; CRTC cursor location high (0x0E) and low (0x0F)
    mov al, 0x0E
    out dx, al
    inc dx
    mov al, bh
    out dx, al
    dec dx
    mov al, 0x0F
    out dx, al
    inc dx
    mov al, bl
    out dx, al
    ret

pic_remap:                      ; IRQ 0-7 at vectors 0x20-0x27, only IRQ 1 unmasked
    mov al, 0x11
    out 0x20, al
    out 0xA0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xA1, al
    mov al, 0x04
    out 0x21, al
    mov al, 0x02
    out 0xA1, al
    mov al, 0x01
    out 0x21, al
    out 0xA1, al
    mov al, 0xFD
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al
    ret

%include "com1.inc"

; Set 1 make codes to characters (0: a key this kernel ignores).
keymap:
    db 0, 0, "1234567890", 0, 0, 0, 0       ; 0x00-0x0F
    db "qwertyuiop", 0, 0, 10, 0, "as"      ; 0x10-0x1F
    db "dfghjkl", 0, 0, 0, 0, 0, "zxcv"     ; 0x20-0x2F
    db "bnm", 0, ".", 0, 0, 0, 0, " "       ; 0x30-0x39
keymap_end:

serial_prompt: db "serial> ", 0
keys_prompt: db "keys> ", 0
cursor: dd 0

align 8
idt:                            ; vector 0x21 (IRQ 1) only; the table ends there
    times 0x21 dq 0
    dw keyboard_irq - $$ + 0x100000 & 0xFFFF, 0x08, 0x8E00, (keyboard_irq - $$ + 0x100000) >> 16
idt_end:
idt_pointer:
    dw idt_end - idt - 1
    dd idt
load_end:
bss_end:
