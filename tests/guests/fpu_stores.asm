; fpu_stores.asm - the FPU and SSE instructions whose stores unicorn makes in a helper
; (FNSAVE, FNSTENV, FSTP m80, FBSTP, MASKMOVQ, MASKMOVDQU), each storing into the page of
; the code that runs it, as a small kernel's data shares its code's page. Under bt that page
; holds translated code and is write-protected: the first store of each faults, and it must
; not be lost (a helper's store cannot be restarted). Each check looks at the bytes of the
; instruction's first store. One pass/fail line per check on COM1; the exit status (port
; 0xF4) is the number of failures. The same under QEMU.
%include "multiboot.inc"
%include "report.inc"
%include "fpu.inc"

entry:
    mov esp, 0x90000
    FPU_ON
    fninit
    fnsave [save_area]                          ; (and FNINIT again)
    cmp word [save_area], 0x037F                ; its first store: the control word
    CHECK "fnsave"
    fnstenv [env_area]
    cmp word [env_area], 0x037F
    CHECK "fnstenv"
    fld1
    fstp tword [extended]                       ; 1.0: mantissa 1 << 63, exponent 0x3FFF
    cmp dword [extended + 4], 0x80000000        ; (the mantissa is the first store)
    CHECK "fstp m80"
    fild dword [decimal_in]
    fbstp [decimal]                             ; packed BCD: -1234
    cmp byte [decimal + 9], 0x80                ; the sign (the first store)
    jne .fbstp
    cmp dword [decimal], 0x1234                 ; the digits
.fbstp:
    CHECK "fbstp"
    movq mm0, [pattern]
    pcmpeqb mm1, mm1                            ; every byte selected
    mov edi, masked_q
    maskmovq mm0, mm1                           ; one store per byte, to [EDI]
    emms
    mov eax, [pattern]
    cmp [masked_q], eax
    CHECK "maskmovq"
    movdqu xmm0, [pattern]
    pcmpeqb xmm1, xmm1
    mov edi, masked_dq
    maskmovdqu xmm0, xmm1
    mov eax, [pattern]
    cmp [masked_dq], eax
    CHECK "maskmovdqu"
    FINISH

section .data
align 16
pattern:    dd 0x01234567, 0x89ABCDEF, 0xFEDCBA98, 0x76543210
decimal_in: dd -1234
save_area:  times 108 db 0                      ; FNSAVE's image
env_area:   times 28 db 0                       ; FNSTENV's
extended:   times 10 db 0
decimal:    times 10 db 0
masked_q:   times 8 db 0
masked_dq:  times 16 db 0
load_end:
bss_end:
