; fpu_faults.asm - the FPU's own exception as a kernel meets it: with CR0.NE an unmasked
; x87 exception raises #MF (vector 16) at the next x87 instruction that waits, in every
; mode (a monitor's world switch in between must keep the pending exception). (An unmasked
; SSE exception raises no #XM here, as under QEMU's TCG: docs/platform.md.) The handler
; counts its vector and goes on at [return_to]. One pass/fail line per check on COM1; the
; exit status (port 0xF4) is the number of failures. The same under QEMU.
%include "multiboot.inc"
%include "report.inc"
%include "fpu.inc"

%macro HANDLER 1                                ; vector %1: count it, resume at [return_to]
vector_%1:
    inc dword [seen + %1 * 4]
    push eax
    mov eax, [return_to]
    mov [esp + 4], eax                          ; the return EIP
    pop eax
    iretd
%endmacro

entry:
    mov esp, 0x90000
    GATE 16, vector_16, 0x8E
    lidt [idt_pointer]
    FPU_ON
    fninit
    fldcw [x87_unmasked]                        ; zero divide unmasked
    fld1
    fldz
    mov dword [return_to], .x87_done
    fdivp                                       ; 1 / 0: pending
    mov eax, cr0                                ; (a trap under a monitor, in between)
    fwait                                       ; #MF here
.x87_done:
    fnclex
    cmp dword [seen + 16 * 4], 1
    CHECK "x87 zero divide raises #mf"
    FINISH

    HANDLER 16

section .data
align 16
x87_unmasked: dw 0x037B                         ; FNINIT's, ZM clear
return_to:    dd 0
seen:         times 17 dd 0
idt_pointer:  dw 17 * 8 - 1
              dd idt
load_end:

section .bss
alignb 8
idt:          resq 17
bss_end:
