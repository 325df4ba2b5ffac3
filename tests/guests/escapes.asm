; a guest whose console output is a terminal escape attack: it retitles the terminal (OSC 0),
; clears the screen (CSI 2J) and rings the bell. A terminal must show these bytes, not obey
; them: vmlab prints them with their control characters made visible.
bits 32
org 0x100000
start:
    mov esi, message
    mov dx, 0x3f8
.next:
    lodsb
    test al, al
    jz .done
    out dx, al              ; COM1 transmit
    jmp .next
.done:
    mov al, 0
    mov dx, 0x501
    out dx, al
    cli
    hlt
message: db 27, "]0;owned", 7, 27, "[2J", "hello", 13, 10, 0
