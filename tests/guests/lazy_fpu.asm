; lazy_fpu.asm - lazy FPU switching, as kernels with tasks do it: at a task switch the kernel
; sets CR0.TS instead of saving the FPU; the next FPU instruction raises #NM (vector 7), whose
; handler runs CLTS (and would restore the task's FPU state) and returns, and the faulting
; instruction runs again. One pass/fail line per check on COM1; the exit status (port 0xF4)
; is the number of failures. The same under QEMU.
%include "multiboot.inc"
%include "report.inc"

entry:
    mov esp, 0x90000
    GATE 7, device_not_available, 0x8E
    lidt [idt_pointer]
    mov eax, cr0
    and eax, ~0x4                               ; EM off: the FPU is there
    or eax, 0x22                                ; MP, NE
    mov cr0, eax
    fninit
    mov eax, cr0
    or eax, 0x8                                 ; TS: "the FPU holds another task's state"
    mov cr0, eax
    fld1                                        ; #NM; the handler clears TS; it runs again
    fistp dword [one]
    cmp dword [faults], 1
    CHECK "the first fpu instruction after ts raises #NM"
    cmp dword [one], 1
    CHECK "it runs again after clts"
    smsw ax
    test al, 0x8
    CHECK "clts cleared ts"
    mov eax, cr0
    or eax, 0x8
    mov cr0, eax
    fnsave [area]                               ; a save with TS set traps too
    cmp dword [faults], 2
    CHECK "fnsave with ts raises #NM"
    mov al, [failures]
    out 0xF4, al                                ; QEMU's isa-debug-exit
    cli
    hlt

device_not_available:                           ; #NM: take the FPU back (no state to load)
    inc dword [faults]
    clts
    iretd

section .data
align 8
idt_pointer: dw 8 * 8 - 1
             dd idt
one:         dd 0
faults:      dd 0
area:        times 108 db 0                     ; FNSAVE's image
load_end:

section .bss
alignb 8
idt:         resq 8
bss_end:
