; Flags set by an ALU instruction, then a port write, then the first access to open bus: the
; block clock hooks the instruction after a port write (so that a stop the write asks for is
; taken there, blockclock.py), and that hook is on the access (flags_at_hole.asm says why the
; flags matter there). Ends by debug exit 0.
bits 32
org 0x100000
start:
    mov ecx, 0x80000000
    add ecx, ecx            ; carry out and overflow: CF PF ZF OF (EFLAGS 0x847)
    out 0x80, al            ; a port nothing answers
    mov eax, [0x00d00000]   ; open bus: all ones, flags untouched
    pushfd
    pop esi                 ; ESI = the flags the open-bus read left
    mov al, 0
    mov dx, 0x501           ; debug exit, status 0
    out dx, al
    cli
    hlt
