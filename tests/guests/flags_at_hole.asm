; Flags set by an ALU instruction right before the first access to the local APIC. The block
; clock leaves MMIO unmapped until the guest first touches it (machine/mmio.py): unicorn stops
; before the access, and the clock runs the instruction again with MMIO mapped. PUSHFD after
; the access must show the ALU instruction's flags, as on bare metal, however the run is
; sliced and traced (docs/clock.md, lazy flags at a hole hit). Ends by debug exit 0.
bits 32
org 0x100000
start:
    mov ecx, 0x80000000
    add ecx, ecx            ; carry out and overflow: CF PF ZF OF (EFLAGS 0x847)
    mov edx, [0xfee00030]   ; the local APIC's version register
    pushfd
    pop esi                 ; ESI = the flags the APIC read left
    mov al, 0
    mov dx, 0x501           ; debug exit, status 0
    out dx, al
    cli
    hlt
