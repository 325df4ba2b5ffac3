; tsc_msr_delta.asm - RDMSR of IA32_TSC 6 instructions after an RDTSC, the RDMSR right
; after a jump (where bare metal stops before it at a block's start): on vmlab's
; instruction clock the difference is exactly 6 in every mode; it is the exit status.
bits 32
org 0x100000
    nop
    nop
    rdtsc
    mov ebx, eax
    nop
    nop
    jmp .next
.next:
    mov ecx, 0x10
    rdmsr                                       ; 6 instructions after the RDTSC
    sub eax, ebx
    mov dx, 0x501
    out dx, al
