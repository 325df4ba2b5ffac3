; Port writes among ALU code, in a loop: a POST code to port 0x80 and a character to COM1,
; a line at a time. Each write is an event dated by its step; under binary translation the
; kernel's OUTs run in translated code, and their steps must be those of bare metal and
; trap-and-emulate (tests/test_bt.py). Ends by debug exit 0.
bits 32
org 0x100000
start:
    mov ecx, 12             ; characters to print
    mov ebx, 0
.next:
    add ebx, ecx            ; ALU work between the writes
    xor eax, ebx
    mov al, cl
    out 0x80, al            ; the POST port: an event, nothing else
    imul eax, ebx, 7
    rol eax, 3
    mov al, 'a'
    add al, cl
    mov dx, 0x3f8           ; COM1's transmit register
    out dx, al
    inc ebx
    test cl, 3
    jnz .same_line
    mov al, 10              ; a line every fourth character: a console event
    out dx, al
.same_line:
    dec ecx
    jnz .next
    mov al, 0
    mov dx, 0x501           ; debug exit, status 0
    out dx, al
    cli
    hlt
