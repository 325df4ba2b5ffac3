; syscalls.asm - a kernel, one user task in ring 3, and system calls between them.
;
; What it demonstrates: the boundary every operating system is built on. The kernel sets up
; what the CPU needs to come back to ring 0 safely - a TSS naming the kernel stack, an IDT
; gate for `int 0x80` that ring 3 is allowed to use - and then drops to ring 3 with IRETD.
; The user task cannot touch the hardware; it asks the kernel, 1019 times:
;   eax = SYS_PUTC, ebx = character      print a character (18 calls: the greeting)
;   eax = SYS_ADD,  ebx = number         add to the kernel's running sum, which comes back
;                                        in eax (1000 calls: 1 + 2 + ... + 1000)
;   eax = SYS_EXIT                       the task is done (1 call); the kernel takes over
;
; What to expect:
;   native - the user's greeting, then the kernel's summary: 1019 system calls, sum 500500;
;            exit status 0.
;   trap   - exactly the same text and status. The kernel crosses between the rings only
;            with `int 0x80` and IRETD, and the monitor sees both: each `int 0x80` from ring 3
;            goes to the monitor, which delivers it through the guest's virtual IDT; each
;            IRETD back to ring 3 faults and the monitor emulates it.
;            The trap counts show it: one `int` and one `iretd` per system call.

bits 32
org 0x100000

%include "vmlab.inc"

SYS_PUTC        equ 1
SYS_ADD         equ 2
SYS_EXIT        equ 3
ADD_CALLS       equ 1000

start:
    println "syscalls: a kernel, a user task in ring 3, and int 0x80 between them"

    call gdt_install
    mov eax, kernel_stack_top       ; the stack for every entry from ring 3
    call tss_install
    call idt_install_exceptions
    set_gate SYSCALL_VECTOR, syscall_entry, INTERRUPT_GATE | GATE_DPL3
    call idt_load

    println "kernel: entering the user task in ring 3"
    ; There is no "call into ring 3" on the x86: we return there, with an IRETD frame built
    ; by hand. From the top: SS and ESP of the user stack, EFLAGS, then CS and EIP.
    ; The data segment registers are loaded with the user selector first: IRETD to an outer
    ; ring would null any that still held a kernel selector.
    mov ax, USER_DS
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    push USER_DS                    ; SS
    push user_stack_top             ; ESP
    push EFLAGS_BASE                ; EFLAGS: interrupts off, IOPL 0 (no port I/O in ring 3)
    push USER_CS                    ; CS, with RPL 3: this is what makes it ring 3
    push user_main                  ; EIP
    interrupt_return                ; iretd

; ---------------------------------------------------------------------------- the kernel side

; int 0x80. The CPU has switched to the TSS's kernel stack and pushed the user's SS, ESP,
; EFLAGS, CS and EIP there. Arguments come in EAX and EBX; the result goes back in EAX.
syscall_entry:
    push ds
    push es
    pushad                          ; the user's registers, EAX at [esp + 28]
    mov cx, KERNEL_DS               ; from now on, the kernel's own data segment
    mov ds, cx
    mov es, cx
    inc dword [syscall_count]

    cmp eax, SYS_PUTC
    je .putc
    cmp eax, SYS_ADD
    je .add
    cmp eax, SYS_EXIT
    je user_exited
    mov dword [esp + 28], -1        ; an unknown call: return -1
    jmp .return
.putc:
    mov al, bl
    call putc
    jmp .return
.add:
    add [sum], ebx
    mov eax, [sum]
    mov [esp + 28], eax             ; the new sum, in the user's EAX
.return:
    popad
    pop es
    pop ds
    interrupt_return                ; iretd: back to ring 3, after the `int 0x80`

; SYS_EXIT: the user task is gone; we stay in the kernel, on the kernel stack.
user_exited:
    println "kernel: the user task called exit"
    print "kernel: system calls handled: "
    mov eax, [syscall_count]
    call print_dec32
    call newline
    print "kernel: sum of 1.."
    mov eax, ADD_CALLS
    call print_dec32
    print " added up by system calls: "
    mov eax, [sum]
    call print_dec32
    call newline
    mov al, EXIT_SUCCESS
    cmp dword [sum], ADD_CALLS * (ADD_CALLS + 1) / 2
    je .done
    mov al, 1                       ; a wrong sum: a system call went astray
.done:
    jmp exit

syscall_count:  dd 0
sum:            dd 0

align 16
    times 1024 db 0
kernel_stack_top:

; ---------------------------------------------------------------------------- the user side
; Everything below runs in ring 3. A CLI or an OUT here would fault (#GP): a user task
; can only ask.

user_main:
    mov esi, greeting
.putc:
    movzx ebx, byte [esi]
    test ebx, ebx
    jz .add_up
    mov eax, SYS_PUTC
    int SYSCALL_VECTOR
    inc esi
    jmp .putc

.add_up:
    mov ecx, 1
.add:
    mov eax, SYS_ADD
    mov ebx, ecx
    int SYSCALL_VECTOR              ; EAX = the sum so far
    inc ecx
    cmp ecx, ADD_CALLS
    jbe .add

    mov eax, SYS_EXIT
    int SYSCALL_VECTOR
    jmp $                           ; never reached: the kernel does not come back

greeting:       db "hello from ring 3", 10, 0

align 16
    times 256 db 0
user_stack_top:
