; cx8_code_page.asm - CMPXCHG8B to a quadword on the page of the code that runs it. Equal, so
; the CPU stores ECX:EBX; the guest exits with ZF | (high byte stored << 1): 207 on a CPU
; (and QEMU). Under bt the store faults on the write-protected code page and is retried.
bits 32
org 0x100000
    xor eax, eax
    xor edx, edx
    mov ebx, 0x89ABCDEF
    mov ecx, 0x01234567
    cmpxchg8b [cell]
    setz al                                     ; 1: EDX:EAX matched the quadword
    mov bl, [cell + 4]                          ; 0x67 once ECX is stored
    shl bl, 1
    or al, bl
    mov dx, 0x501
    out dx, al
align 8
cell: dq 0
