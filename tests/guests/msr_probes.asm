; msr_probes.asm - a multiboot kernel that checks the model-specific registers a kernel
; touches at start-up, as a one-CPU PC answers them: one line per check on COM1, "pass" or
; "FAIL"; the exit status (port 0xF4, QEMU's isa-debug-exit) is the number of failures.
; A #GP handler notes the fault and skips the 2-byte RDMSR/WRMSR. Checks marked "(hw)"
; are where vmlab follows the hardware and QEMU's TCG does not (it reads 0 from an MSR it
; lacks, holds no TSC in the MSR, and a globally disabled APIC's page still answers):
; tests/test_msr.py expects QEMU to fail just those.
%include "multiboot.inc"

%include "report.inc"

%macro RDMSR 1                                  ; EDX:EAX = MSR %1, [faulted] = 1 on #GP
    mov ecx, %1
    mov byte [faulted], 0
    xor eax, eax
    xor edx, edx
    rdmsr
%endmacro

%macro WRMSR 3                                  ; MSR %1 = %2:%3, [faulted] = 1 on #GP
    mov ecx, %1
    mov edx, %2
    mov eax, %3
    mov byte [faulted], 0
    wrmsr
%endmacro

%macro IS 2                                     ; ZF: no fault and EDX:EAX == %1:%2
    cmp byte [faulted], 0
    jne %%done
    cmp edx, %1
    jne %%done
    cmp eax, %2
%%done:
%endmacro

%macro FAULTED 0                                ; ZF: the last RDMSR/WRMSR raised #GP
    cmp byte [faulted], 1
%endmacro

entry:
    mov esp, stack_top
    mov dword [tss + 4], stack_top - 512        ; ESP0, SS0: ring 0's stack for user faults
    mov dword [tss + 8], 0x10
    lgdt [gdt_pointer]                          ; our own GDT and IDT, the same on QEMU
    FLAT_SEGMENTS
    GATE 6, on_ud, 0x8E                         ; #UD
    GATE 13, on_gp, 0x8E                        ; #GP
    GATE 0x80, to_kernel, 0xEE                  ; user code's way back
    lidt [idt_pointer]
    mov eax, tss                                ; the TSS: ring 0's stack for a user fault
    mov [gdt + 0x28 + 2], ax
    shr eax, 16
    mov [gdt + 0x28 + 4], al
    mov [gdt + 0x28 + 7], ah
    mov ax, 0x28
    ltr ax

    mov eax, 1
    cpuid
    test edx, 1 << 5
    setnz al
    cmp al, 1
    CHECK "cpuid says rdmsr and wrmsr exist"

    RDMSR 0x1B
    IS 0, 0xFEE00900
    CHECK "apic base 0xfee00000, enabled, bootstrap processor"
    WRMSR 0x1B, 0, 0xFEE00100                   ; the APIC globally off (bit 11 clear)
    RDMSR 0x1B
    IS 0, 0xFEE00100
    jne .apic_off
    cmp dword [0xFEE00030], 0xFFFFFFFF          ; its page: nothing answers
.apic_off:
    CHECK "(hw) apic base: a global disable turns the apic off"
    WRMSR 0x1B, 0, 0xFEE00900
    mov eax, [0xFEE00030]                       ; the version register answers again
    and eax, 0xFF
    cmp eax, 0x14
    CHECK "apic base: enabled again"
    RDMSR 0x277
    IS 0x00070406, 0x00070406
    CHECK "pat reset value"
    RDMSR 0x1A0
    IS 0, 1
    CHECK "misc enable: fast strings"
    RDMSR 0x17
    IS 0, 0
    CHECK "platform id 0"
    WRMSR 0x8B, 0, 0                            ; as Linux reads the microcode revision
    mov eax, 1
    cpuid
    RDMSR 0x8B
    IS 1, 0
    CHECK "bios sign id: microcode revision 1"
    RDMSR 0xFE
    IS 0, 0
    CHECK "mtrrcap 0: no mtrr feature"
    RDMSR 0x2FF
    IS 0, 0
    CHECK "mtrr default type 0"
    RDMSR 0x250
    IS 0, 0
    CHECK "fixed mtrr 0"
    RDMSR 0x201
    IS 0, 0
    CHECK "variable mtrr mask 0"

    WRMSR 0x174, 0, 0x08
    WRMSR 0x175, 0, 0x12345678
    WRMSR 0x176, 0, 0x9ABCDEF0
    RDMSR 0x174
    IS 0, 0x08
    CHECK "sysenter cs written and read back"
    RDMSR 0x175
    IS 0, 0x12345678
    CHECK "sysenter esp written and read back"
    RDMSR 0x176
    IS 0, 0x9ABCDEF0
    CHECK "sysenter eip written and read back"
    WRMSR 0x174, 0, 0x12340008                  ; a 16-bit selector: the rest is dropped
    RDMSR 0x174
    IS 0, 0x08
    CHECK "sysenter cs keeps 16 bits"
    WRMSR 0x175, 1, 0x12345678                  ; a 32-bit CPU's stack pointer
    RDMSR 0x175
    IS 0, 0x12345678
    CHECK "sysenter esp keeps 32 bits"
    WRMSR 0x277, 0x00000106, 0x00070406         ; WB WT UC- UC, then WC and WB
    RDMSR 0x277
    IS 0x00000106, 0x00070406
    CHECK "pat written and read back"
    WRMSR 0x277, 0x00070406, 0x00070406         ; the reset value again
    WRMSR 0x1A0, 0, 1
    RDMSR 0x1A0
    IS 0, 1
    CHECK "misc enable written and read back"

    RDMSR 0x12345
    FAULTED
    CHECK "(hw) rdmsr of a missing msr raises #gp"
    WRMSR 0x12345, 0, 1
    FAULTED
    CHECK "(hw) wrmsr of a missing msr raises #gp"
    RDMSR 0xC0000080
    FAULTED
    CHECK "(hw) no efer without nx or long mode: #gp"
    WRMSR 0xFE, 0, 0
    FAULTED
    CHECK "(hw) mtrrcap is read-only: #gp"
    WRMSR 0x277, 0, 0x02                        ; memory type 2 is reserved
    FAULTED
    CHECK "(hw) pat with a reserved type raises #gp"

    WRMSR 0x10, 1, 0                            ; the TSC = 2^32
    rdtsc
    cmp edx, 1
    jne .tsc_written
    cmp eax, 100
    setb al
    cmp al, 1
.tsc_written:
    CHECK "(hw) rdtsc counts on from a written tsc"
    rdtsc
    mov ebx, eax
    mov ecx, 0x10
    rdmsr                                       ; 3 instructions after the RDTSC
    sub eax, ebx
    cmp eax, 3
    CHECK "(hw) rdmsr of the tsc is rdtsc's counter"

    mov byte [faulted], 0
    rdtscp                                      ; CPUID offers no RDTSCP: #UD
    FAULTED
    CHECK "rdtscp raises #ud"
    call user_rdtsc
    FAULTED
    setne al
    cmp al, 1
    CHECK "rdtsc in ring 3"
    mov eax, cr4
    or eax, 1 << 2                              ; CR4.TSD: RDTSC for ring 0 only
    mov cr4, eax
    mov byte [faulted], 0
    rdtsc
    FAULTED
    setne al
    cmp al, 1
    CHECK "rdtsc in ring 0 with cr4.tsd"
    call user_rdtsc
    FAULTED
    CHECK "rdtsc in ring 3 with cr4.tsd raises #gp"

    mov al, [failures]
    out 0xf4, al                                ; QEMU's isa-debug-exit (vmlab has one too)
    cli
    hlt

user_rdtsc:                                     ; RDTSC in ring 3; back by INT 0x80
    mov [kernel_esp], esp
    mov byte [faulted], 0
    push 0x23                                   ; user SS
    push user_stack_top
    push 0x002                                  ; EFLAGS: interrupts off
    push 0x1B                                   ; user CS
    push .user
    iretd
.user:
    rdtsc
    int 0x80
to_kernel:                                      ; INT 0x80 from ring 3: back where we left
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov esp, [kernel_esp]
    ret

on_ud:                                          ; note the fault, skip the 3-byte RDTSCP
    mov byte [faulted], 1
    add dword [esp], 3
    iretd

on_gp:                                          ; note the fault, skip the 2-byte instruction
    mov byte [faulted], 1
    add esp, 4                                  ; the error code
    add dword [esp], 2
    iretd


section .data
align 8
gdt:        dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF  ; ring 0 code, data
            dq 0x00CFFA000000FFFF, 0x00CFF2000000FFFF     ; ring 3 code, data
            dq 0x0000890000000067                         ; the TSS (base filled in)
gdt_pointer:
    dw 6 * 8 - 1
    dd gdt
idt_pointer:
    dw 0x81 * 8 - 1
    dd idt
faulted:    db 0
load_end:

section .bss
align 8
idt:        resq 0x81
kernel_esp: resd 1
tss:        resd 1                              ; the previous task link
            resd 1                              ; ESP0, set at entry
            resd 24
            resb 1024
user_stack_top:
    resb 4096
stack_top:
bss_end:
