; fpu_state.asm - the FPU and SSE state as a kernel sets them up and saves them at a task
; switch: CR0.EM off and MP/NE on, CR4.OSFXSR, FNINIT, an x87 sum, an SSE sum, and FXSAVE,
; whose image starts with the control word FNINIT left (0x037F). (CPUID advertises FXSR and
; SSE: simd.asm checks it.) One pass/fail line per check on COM1; the exit status (port
; 0xF4) is the number of failures. The same under QEMU.
%include "multiboot.inc"
%include "report.inc"
%include "fpu.inc"

entry:
    mov esp, 0x90000
    FPU_ON
    fninit
    fld1
    fadd st0, st0
    fistp dword [sum]
    cmp dword [sum], 2
    CHECK "x87 1 + 1"
    movaps xmm0, [ones]
    addps xmm0, [ones]
    movaps [twos], xmm0
    cmp dword [twos], 0x40000000                ; 2.0f
    CHECK "sse addps"
    fxsave [area]
    cmp word [area], 0x037F                     ; FCW as FNINIT left it
    CHECK "fxsave saves the control word"
    cmp byte [area + 4], 0                      ; abridged tag word: the x87 stack is empty
    CHECK "fxsave saves an empty stack"
    FINISH

section .data
align 16
ones:   dd 1.0, 1.0, 1.0, 1.0
twos:   times 4 dd 0
sum:    dd 0
align 16
area:   times 512 db 0                          ; FXSAVE's image: 16-byte aligned
load_end:
bss_end:
