; timer.asm - two tasks in ring 3, switched by the timer: preemptive round robin.
;
; What it demonstrates: how a kernel shares one CPU between tasks that never give it up.
; The PIT interrupts every 5000 instructions; the handler parks the running task (its
; registers, saved on its own kernel stack) and resumes the other one. Neither task knows:
; each just computes, then tells the kernel it is done with `int 0x80`. Its result is only
; right if every switch saved and restored every register.
;   task A: the sum of i*i for i = 1..20000 (mod 2^32)
;   task B: 20000 rounds of the xorshift32 random number generator
;
; Each task has its own kernel stack. A task that is not running is parked there exactly as
; an interrupt left it: the frame the CPU pushed (EIP, CS, EFLAGS, ESP, SS), then DS, ES and
; PUSHAD's eight registers. Switching is changing ESP to the other task's parked frame and
; popping it. The TSS's ESP0 always names the running task's kernel stack, so its next
; interrupt parks it in the right place.
;
; What to expect (nothing printed depends on exactly when the timer fires):
;   native - both results, each marked correct, "both tasks had run before the first one
;            finished: yes", "switches observed: yes"; exit status 0.
;   trap   - the same text and status. Every timer interrupt now goes through the monitor,
;            which delivers it through the guest's virtual IDT, and every IRETD back to ring 3
;            traps: about one `iretd` trap per 5000 instructions.

bits 32
org 0x100000

%include "vmlab.inc"

TIMER_RELOAD    equ 5000            ; instructions between timer interrupts
SYS_DONE        equ 1               ; the only system call: eax = SYS_DONE, ebx = result
ROUNDS          equ 20000           ; work of each task

; The results the tasks must reach (worked out beforehand, in Python:
;   sum(i * i for i in range(1, 20001)) % 2**32, and xorshift32 from the seed below).
XORSHIFT_SEED   equ 2463534242
EXPECTED_A      equ 0xEDA3F9B0
EXPECTED_B      equ 0x7E2CA476

start:
    println "timer: two tasks in ring 3, switched by the timer (preemptive round robin)"

    call gdt_install
    mov eax, task_a_kstack_top      ; task A runs first
    call tss_install
    call idt_install_exceptions
    set_gate IRQ0_VECTOR, timer_interrupt, INTERRUPT_GATE
    set_gate SYSCALL_VECTOR, syscall_entry, INTERRUPT_GATE | GATE_DPL3
    call idt_load
    mov ax, 0xFFFE                  ; unmask IRQ 0 (the timer) only
    call pic_remap
    mov ax, TIMER_RELOAD
    call pit_start

    println "kernel: starting task A; the timer switches tasks every 5000 instructions"
    ; The kernel itself runs with interrupts off (it came up that way, and both gates are
    ; interrupt gates). The tasks run with IF = 1: their parked EFLAGS say so.
    xor ecx, ecx                    ; task 0 = A
    jmp switch_to

; ---------------------------------------------------------------------------- scheduling

; switch_to - run task ECX (0 = A, 1 = B) from where it was parked. Does not return.
switch_to:
    mov [current], ecx
    inc dword [turns + ecx*4]
    mov eax, [kstack_top + ecx*4]
    mov [tss.esp0], eax             ; its next interrupt must land on its own kernel stack
    mov esp, [parked + ecx*4]       ; its parked frame ...
resume:                             ; ... popped in the reverse order it was pushed
    popad
    pop es
    pop ds
    interrupt_return                ; iretd: EIP, CS, EFLAGS, ESP, SS - back in ring 3

; The timer (IRQ 0), always taken from ring 3: the CPU switched to the running task's kernel
; stack and pushed its SS, ESP, EFLAGS, CS, EIP. Park it and run the other task.
timer_interrupt:
    push ds
    push es
    pushad
    mov ax, KERNEL_DS
    mov ds, ax
    mov es, ax
    send_eoi
    mov ebx, [current]
    mov ecx, ebx
    xor ecx, 1                      ; the other task
    cmp dword [done + ecx*4], 0
    jne resume                      ; it has finished: keep running this one
    mov [parked + ebx*4], esp       ; park this one, right here on its kernel stack
    inc dword [switches]
    jmp switch_to

; int 0x80 from a task: SYS_DONE, with its result in EBX.
syscall_entry:
    push ds
    push es
    pushad
    mov dx, KERNEL_DS               ; (not AX: it holds the call number)
    mov ds, dx
    mov es, dx
    cmp eax, SYS_DONE
    je .done
    mov dword [esp + 28], -1        ; an unknown call: return -1 in the task's EAX
    jmp resume
.done:
    mov ecx, [current]
    mov [result + ecx*4], ebx
    mov dword [done + ecx*4], 1     ; this task never runs again
    xor ecx, 1
    cmp dword [done + ecx*4], 0
    jne all_done
    ; The first task to finish. Had the other one had a turn already? Only if the timer
    ; took the CPU away from this one before it was done.
    cmp dword [turns + ecx*4], 0
    je switch_to
    mov dword [interleaved], 1
    jmp switch_to

all_done:
    println "kernel: both tasks are done"
    print "task A: sum of i*i for i = 1..20000 = "
    mov eax, [result]
    mov ebx, EXPECTED_A
    call report_result
    print "task B: xorshift32 after 20000 rounds = "
    mov eax, [result + 4]
    mov ebx, EXPECTED_B
    call report_result

    print "both tasks had run before the first one finished: "
    mov eax, [interleaved]
    call yes_no
    print "switches observed: "
    xor eax, eax
    cmp dword [switches], 2         ; at least two: from A to B and back again
    setae al
    call yes_no

    mov al, EXIT_SUCCESS
    cmp dword [failures], 0
    je .exit
    mov al, 1
.exit:
    jmp exit

; report_result - print EAX and whether it equals EBX.
report_result:
    call print_hex32
    cmp eax, ebx
    je .correct
    println " (WRONG)"
    inc dword [failures]
    ret
.correct:
    println " (correct)"
    ret

; yes_no - print "yes" if EAX is not 0, else "no", which also counts as a failure.
yes_no:
    test eax, eax
    jz .no
    println "yes"
    ret
.no:
    println "no"
    inc dword [failures]
    ret

current:        dd 0                ; the running task
done:           dd 0, 0             ; per task: has it called SYS_DONE?
result:         dd 0, 0             ; per task: what it passed to SYS_DONE
turns:          dd 0, 0             ; per task: how many times it was given the CPU
parked:         dd task_a_parked, task_b_parked     ; per task: ESP of its parked frame
kstack_top:     dd task_a_kstack_top, task_b_kstack_top
switches:       dd 0                ; timer-driven switches
interleaved:    dd 0
failures:       dd 0

; ---------------------------------------------------------------------------- the tasks' stacks

KSTACK_SIZE     equ 1024
PARKED_SIZE     equ 15 * 4          ; PUSHAD (8), ES, DS, and the CPU's 5 dwords

; A task that has never run is born parked: its frame is written here by hand, as if it had
; been interrupted just before its first instruction.
; born_parked ENTRY, USER_STACK_TOP
%macro born_parked 2
    times KSTACK_SIZE - PARKED_SIZE db 0
    dd 0, 0, 0, 0, 0, 0, 0, 0       ; PUSHAD: EDI, ESI, EBP, (ESP), EBX, EDX, ECX, EAX
    dd USER_DS, USER_DS             ; ES, DS
    dd %1, USER_CS                  ; EIP, CS: the task's first instruction, in ring 3
    dd EFLAGS_BASE | EFLAGS_IF      ; EFLAGS: interrupts on, so the timer can preempt it
    dd %2, USER_DS                  ; ESP, SS: its user stack
%endmacro

align 16
task_a_kstack:
    born_parked task_a, task_a_stack_top
task_a_kstack_top:
task_a_parked   equ task_a_kstack_top - PARKED_SIZE

task_b_kstack:
    born_parked task_b, task_b_stack_top
task_b_kstack_top:
task_b_parked   equ task_b_kstack_top - PARKED_SIZE

; ---------------------------------------------------------------------------- the tasks (ring 3)

task_a:
    xor ebx, ebx                    ; the sum
    mov ecx, 1                      ; i
.next:
    mov eax, ecx
    mul eax                         ; EDX:EAX = i * i
    add ebx, eax
    inc ecx
    cmp ecx, ROUNDS
    jbe .next
    mov eax, SYS_DONE
    int SYSCALL_VECTOR
    jmp $                           ; never reached

task_b:
    mov eax, XORSHIFT_SEED          ; the generator's state
    mov ecx, ROUNDS
.next:
    mov edx, eax                    ; x ^= x << 13
    shl edx, 13
    xor eax, edx
    mov edx, eax                    ; x ^= x >> 17
    shr edx, 17
    xor eax, edx
    mov edx, eax                    ; x ^= x << 5
    shl edx, 5
    xor eax, edx
    loop .next
    mov ebx, eax
    mov eax, SYS_DONE
    int SYSCALL_VECTOR
    jmp $                           ; never reached

align 16
    times 256 db 0
task_a_stack_top:
    times 256 db 0
task_b_stack_top:
