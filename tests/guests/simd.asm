; simd.asm - the SIMD features a kernel finds in CPUID leaf 1 (MMX, FXSR, SSE, SSE2, SSE3)
; used as a kernel uses them: MMX works as soon as the FPU does; SSE instructions raise #UD
; until the kernel sets CR4.OSFXSR (it promises to save XMM state with FXSAVE), then run;
; FXRSTOR puts back what FXSAVE saved. One pass/fail line per check on COM1; the exit status
; (port 0xF4) is the number of failures. The same under QEMU.
%include "multiboot.inc"
%include "report.inc"

CPUID_MMX  equ 1 << 23                          ; leaf 1 EDX
CPUID_FXSR equ 1 << 24
CPUID_SSE  equ 1 << 25
CPUID_SSE2 equ 1 << 26
CPUID_SSE3 equ 1 << 0                           ; leaf 1 ECX
SIMD_EDX   equ CPUID_MMX | CPUID_FXSR | CPUID_SSE | CPUID_SSE2

entry:
    mov esp, 0x90000
    GATE 6, invalid_opcode, 0x8E
    lidt [idt_pointer]
    mov eax, 1
    cpuid
    and edx, SIMD_EDX
    cmp edx, SIMD_EDX
    CHECK "cpuid: mmx, fxsr, sse, sse2"
    and ecx, CPUID_SSE3
    cmp ecx, CPUID_SSE3
    CHECK "cpuid: sse3"
    mov eax, cr0
    and eax, ~0x4                               ; EM off: the FPU is there
    or eax, 0x22                                ; MP, NE
    mov cr0, eax
    fninit

    movq mm0, [words]                           ; MMX: no CR4 bit needed
    paddw mm0, [words]
    movq [mmx_sum], mm0
    emms
    cmp dword [mmx_sum], 0x00040002
    CHECK "mmx paddw"

    mov dword [return_to], .after_ud            ; CR4.OSFXSR clear: SSE is undefined
    addps xmm0, xmm1
.after_ud:
    cmp dword [uds], 1
    CHECK "sse without cr4.osfxsr raises #UD"

    mov eax, cr4
    or eax, 0x600                               ; OSFXSR, OSXMMEXCPT
    mov cr4, eax
    mov dword [return_to], .no_ud
    movdqu xmm0, [quads]
    paddq xmm0, [quads]                         ; SSE2: 64-bit lanes
    movdqu [sse2_sum], xmm0
.no_ud:
    cmp dword [uds], 1
    CHECK "sse runs with cr4.osfxsr"
    cmp dword [sse2_sum + 8], 4
    CHECK "sse2 paddq"
    movups xmm1, [floats]
    haddps xmm1, xmm1                           ; SSE3: 1 + 2, 3 + 4
    movups [sse3_sum], xmm1
    cmp dword [sse3_sum + 4], 0x40E00000        ; 7.0f
    CHECK "sse3 haddps"

    fxsave [area]                               ; FXRSTOR undoes what comes after FXSAVE
    fldcw [other_control]
    xorps xmm1, xmm1
    fxrstor [area]
    fnstcw [control]
    cmp word [control], 0x037F
    CHECK "fxrstor restores the control word"
    movups [sse3_sum], xmm1
    cmp dword [sse3_sum + 4], 0x40E00000
    CHECK "fxrstor restores xmm1"
    FINISH

invalid_opcode:                                 ; #UD: count it, go on at [return_to]
    inc dword [uds]
    push eax
    mov eax, [return_to]
    mov [esp + 4], eax                          ; the return EIP
    pop eax
    iretd

section .data
align 16
quads:         dq 1, 2                          ; (a 16-byte operand must be aligned)
words:         dw 1, 2, 3, 4
floats:        dd 1.0, 2.0, 3.0, 4.0
mmx_sum:       dq 0
sse2_sum:      times 16 db 0
sse3_sum:      times 16 db 0
uds:           dd 0
return_to:     dd 0
control:       dw 0
other_control: dw 0x007F
idt_pointer:   dw 7 * 8 - 1
               dd idt
align 16
area:          times 512 db 0
load_end:

section .bss
alignb 8
idt:           resq 7
bss_end:
