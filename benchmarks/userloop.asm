; userloop — a guest that spends its life in one user-mode loop and rarely traps.
; The kernel sets up a TSS and a system-call gate, drops to ring 3 with IRETD, and the user
; task runs LOOP_KIND's loop ITERATIONS times, then asks the kernel to exit (int 0x80).
; Used by benchmarks/bench_trap.py: the loop between the labels `loop_start` and `loop_end`
; is also run on raw unicorn, so the two speeds compare the same instructions.
bits 32
org 0x100000

%ifndef ITERATIONS
%define ITERATIONS 2000000
%endif

start:
    lgdt [gdt_pointer]
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    ; TSS descriptor base = tss
    mov eax, tss
    mov [gdt + 0x28 + 2], ax
    shr eax, 16
    mov [gdt + 0x28 + 4], al
    mov [gdt + 0x28 + 7], ah
    mov ax, 0x28
    ltr ax
    ; int 0x80 gate, DPL 3
    mov eax, syscall
    mov [idt + 0x80 * 8], ax
    shr eax, 16
    mov [idt + 0x80 * 8 + 6], ax
    lidt [idt_pointer]
    ; enter ring 3
    mov ax, 0x23
    mov ds, ax
    mov es, ax
    push dword 0x23          ; SS
    push dword 0x300000      ; ESP
    push dword 0x002         ; EFLAGS: interrupts off, nothing will come
    push dword 0x1b          ; CS
    push dword user
    iretd

user:
    mov ecx, ITERATIONS
    mov esi, buffer
loop_start:
%ifdef ALU
    add eax, ebx
    xor ebx, eax
    rol eax, 1
%else
    mov ebx, [buffer]
    mov [buffer + 4], ebx
%endif
    dec ecx
    jnz loop_start
loop_end:
    int 0x80

syscall:
    mov al, 0
    mov dx, 0x501
    out dx, al
    hlt

align 8
gdt:
    dq 0
    dq 0x00CF9B000000FFFF
    dq 0x00CF93000000FFFF
    dq 0x00CFFB000000FFFF
    dq 0x00CFF3000000FFFF
    dq 0x0000890000000067     ; TSS (base filled in)
gdt_end:
gdt_pointer:
    dw gdt_end - gdt - 1
    dd gdt
tss:
    dd 0
    dd 0x3ff000               ; esp0
    dd 0x10                   ; ss0
    times 23 dd 0
idt:
    times 256 dq 0x0000EE0000080000   ; present, DPL 3, 32-bit interrupt gate, cs 0x08
idt_end:
idt_pointer:
    dw idt_end - idt - 1
    dd idt
buffer:
    dd 0, 0
