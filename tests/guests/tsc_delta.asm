; tsc_delta.asm - two RDTSCs 12 instructions apart (the first RDTSC, MOV, ten NOPs): on vmlab's
; instruction clock the difference is exactly 12 in every mode; it is the exit status.
bits 32
org 0x100000
    rdtsc
    mov ebx, eax
    times 10 nop
    rdtsc
    sub eax, ebx
    mov dx, 0x501
    out dx, al
