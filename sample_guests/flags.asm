; flags.asm - the critical-section idiom `pushfd ; cli ; ... ; popfd`, and what POPF does
; to it under a trap-and-emulate monitor.
;
; What it demonstrates: real kernels protect short critical sections from their own
; interrupt handlers by saving EFLAGS, disabling interrupts, doing the work, and restoring
; EFLAGS - whatever the interrupt flag was before, it is again after. (Linux calls the pair
; local_irq_save / local_irq_restore; here they are irq_save = `pushfd ; cli` and
; irq_restore = `popfd`, from vmlab.inc.) The kernel runs a timer at a fast rate and, after
; each critical section, waits a bounded while to see whether timer ticks still arrive.
;
; What to expect:
;   native - ticks arrive before and after every critical section; the verdict line says
;            the interrupt flag was restored every time; exit status 0.
;   trap   - the kernel runs in ring 1. CLI is privileged: it faults and the monitor clears
;            the *virtual* interrupt flag. POPFD is not privileged: at CPL 1 it silently
;            leaves IF alone, so the monitor never learns that the kernel turned interrupts
;            back on. From critical section 1 on, no tick is ever delivered again; the kernel
;            notices and exits with status 1. Note also what PUSHFD shows the kernel: IF = 1,
;            even while its interrupts are off - PUSHF reads the real flags, another hole.
;   pv     - the paravirtual build (-DPARAVIRT): irq_save, irq_restore, irq_enable and the
;            handler's return are hypercalls, so the monitor always knows the virtual IF;
;            everything prints as on bare metal, exit status 0.
;
; Nothing printed depends on when exactly a tick arrives: a tick period is 2000 instructions
; and the kernel waits up to 50000 loop rounds (150000 instructions, 75 periods) for one.

bits 32
org 0x100000

%include "vmlab.inc"

TIMER_RELOAD    equ 2000            ; PIT ticks (= guest instructions) between timer interrupts
WAIT_ROUNDS     equ 50000           ; how long to wait for a tick before calling it lost
SECTIONS        equ 3               ; critical sections to run
EXIT_LOST       equ 1               ; our status when interrupts were lost

start:
    println "flags: saving and restoring the interrupt flag around critical sections"

    call idt_install_exceptions
    set_gate IRQ0_VECTOR, timer_interrupt, INTERRUPT_GATE
    call idt_load
    mov ax, 0xFFFE                  ; unmask IRQ 0 (the timer) only
    call pic_remap
    mov ax, TIMER_RELOAD
    call pit_start
    irq_enable                      ; sti: from now on the timer interrupts us

    print "before any critical section: "
    call report_ticks

    mov ebx, 1                      ; number of the critical section
.section:
    irq_save                        ; pushfd ; cli - save IF, then keep interrupts out
    ; The critical section: move one unit from account A to account B. Between the two
    ; instructions the books do not balance; the timer handler checks that they do, and
    ; with interrupts off it can never look in the middle.
    dec dword [account_a]
    inc dword [account_b]
    irq_restore                     ; popfd - IF back to what it was before irq_save

    print "after critical section "
    mov eax, ebx
    call print_dec32
    print ":    "
    call report_ticks
    test eax, eax
    jnz .next
    cmp dword [first_lost], 0       ; remember the first section after which ticks stopped
    jne .next
    mov [first_lost], ebx
.next:
    inc ebx
    cmp ebx, SECTIONS
    jbe .section

    irq_disable
    print "unbalanced books seen by the timer handler: "
    mov eax, [torn]
    call print_dec32
    call newline

    mov eax, [first_lost]
    test eax, eax
    jnz .lost
    println "verdict: the timer kept ticking after every popfd: the interrupt flag was restored."
    mov al, EXIT_SUCCESS
    jmp exit
.lost:
    print "verdict: timer interrupts stopped after critical section "
    call print_dec32
    println ": popfd did not"
    println "         turn them back on. (In ring 1, POPF leaves IF alone: is a monitor running me?)"
    mov al, EXIT_LOST
    jmp exit

; report_ticks - print what PUSHFD says IF is, then wait for a timer tick and print whether
; one came. Returns EAX = 1 if a tick arrived, 0 if not.
report_ticks:
    push ecx
    push edx
    print "EFLAGS.IF reads "
    read_flags                      ; look at our own flags (pushfd ; pop eax)
    shr eax, 9                      ; IF is bit 9
    and eax, 1
    call print_dec32
    print ", timer ticks: "
    mov edx, [ticks]
    mov ecx, WAIT_ROUNDS
.wait:
    cmp [ticks], edx                ; has the handler counted a new tick?
    jne .ticking
    loop .wait
    println "no"
    xor eax, eax
    jmp .done
.ticking:
    println "yes"
    mov eax, 1
.done:
    pop edx
    pop ecx
    ret

; The timer interrupt (IRQ 0). Count the tick, check the books, acknowledge the PIC.
timer_interrupt:
    push eax
    inc dword [ticks]
    mov eax, [account_a]
    add eax, [account_b]
    cmp eax, BOOKS_TOTAL
    je .balanced
    inc dword [torn]
.balanced:
    send_eoi
    pop eax
    interrupt_return                ; iretd: also restores the interrupted code's IF

BOOKS_TOTAL     equ 1000
ticks:          dd 0                ; timer interrupts handled
account_a:      dd BOOKS_TOTAL      ; the shared data the critical sections protect
account_b:      dd 0
torn:           dd 0                ; times the handler saw the books unbalanced
first_lost:     dd 0                ; first critical section after which no tick came
