; fpu_switch.asm - the FPU state belongs to the kernel that computes with it: it is as the
; CPU comes out of reset before the kernel touches it, and an interrupt, a trapped
; privileged instruction or a port access in the middle of a computation leaves it alone
; (a monitor's world switch must not reset it). Checked through FXSAVE's image. One
; pass/fail line per check on COM1; the exit status (port 0xF4) is the number of
; failures. The same under QEMU.
%include "multiboot.inc"
%include "report.inc"
%include "fpu.inc"

AT_FCW  equ 0                                   ; FXSAVE image offsets (Intel SDM, FXSAVE)
AT_FSW  equ 2
AT_FTW  equ 4                                   ; abridged: one bit per register, 1 = valid
AT_MXCSR equ 24
AT_XMM3 equ 160 + 3 * 16

entry:
    mov esp, 0x90000
    GATE 0x30, ignore, 0x8E
    lidt [idt_pointer]
    FPU_ON
    fxsave [area]                               ; the state out of reset, untouched
    cmp word [area + AT_FCW], 0x037F
    CHECK "reset: control word 0x037f"
    cmp byte [area + AT_FTW], 0
    CHECK "reset: the x87 stack is empty"
    cmp dword [area + AT_MXCSR], 0x1F80
    CHECK "reset: mxcsr 0x1f80"

    fninit                                      ; a computation: its own control words,
    fldcw [x87_control]                             ; two values on the stack, an XMM register
    ldmxcsr [sse_control]
    fld1
    fldpi
    movups xmm3, [pattern]
    int 0x30                                    ; an interrupt (handled through the IDT)
    mov eax, cr3                                ; a privileged instruction (a trap)
    in al, 0x61                                 ; a port
    fxsave [area]
    cmp word [area + AT_FCW], 0x027F
    CHECK "the control word survives"
    mov ax, [area + AT_FSW]
    and ax, 0x3800                              ; TOP: two loads from 0 leave 6
    cmp ax, 6 << 11
    CHECK "the stack top survives"
    cmp byte [area + AT_FTW], 0xC0                 ; registers 6 and 7 hold values
    CHECK "the tags survive"
    cmp dword [area + AT_MXCSR], 0x9F80
    CHECK "mxcsr survives"
    mov esi, pattern
    lea edi, [area + AT_XMM3]
    mov ecx, 4
    repe cmpsd
    CHECK "xmm3 survives"
    faddp                                       ; pi + 1, rounded to nearest: 4
    fistp dword [sum]
    cmp dword [sum], 4
    CHECK "the x87 stack's values survive"
    FINISH

ignore:
    iretd

section .data
align 8
idt_pointer: dw 0x31 * 8 - 1
             dd idt
x87_control: dw 0x027F                          ; 53-bit precision, exceptions masked
sse_control: dd 0x9F80                          ; flush to zero, exceptions masked
align 16
pattern:     dd 0x01234567, 0x89ABCDEF, 0xFEDCBA98, 0x76543210
sum:         dd 0
align 16
area:        times 512 db 0                     ; FXSAVE's image: 16-byte aligned
load_end:

section .bss
alignb 8
idt:         resq 0x31
bss_end:
