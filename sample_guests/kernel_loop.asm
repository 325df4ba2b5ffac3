; kernel_loop.asm - a hot kernel loop full of the instructions a monitor must get between.
;
; What it demonstrates: what virtualization costs where a kernel spends its time. Kernels
; enter and leave short critical sections constantly (Linux: local_irq_save and
; local_irq_restore, around almost every lock); each is `pushfd ; cli`, a little work,
; `popfd`, and here a `sti` as well. This kernel runs 200,000 such rounds in one tight loop
; and prints what it counted. It is the speed benchmark of the execution modes: the loop
; lies between the labels `hot_loop` and `hot_loop_end`, which a benchmark finds in the
; line map (sample_guests/kernel_loop.map).
;
; No device interrupt is wanted: every IRQ is masked at both PICs, so the STI is harmless
; and the result cannot depend on interrupt timing.
;
; What to expect (the same text on every mode: 200000 rounds, the counter 200000, the mix
; 0xFFFCF2BF; exit status 0):
;   native - 1.8 million instructions (9 per round), all at full CPU speed.
;   trap   - the same instructions, but every CLI and every STI faults into the monitor and is
;            emulated: 400,000 round trips into the monitor and back. (In vmlab that takes
;            over a minute, against well under a second on bare metal.)
;            (And POPFD silently fails to restore IF in ring 1 - harmless here only because
;            the STI right after it turns interrupts back on anyway.)
;   bt     - after the first round the loop runs from the translation cache: CLI and STI
;            become stores to the virtual interrupt flag, PUSHFD and POPFD short inline
;            sequences, the backward jump is chained to the fragment itself; no trap at all.

bits 32
org 0x100000

%include "vmlab.inc"

ROUNDS          equ 200000

start:
    println "kernel_loop: 200000 critical sections in a hot kernel loop"
    call idt_install_exceptions
    call idt_load
    mov ax, 0xFFFF                  ; remap the PICs out of the exception vectors, mask all
    call pic_remap

    irq_enable                      ; interrupts on (nothing can arrive: all masked)
    mov ecx, ROUNDS
    xor ebx, ebx                    ; a running mix of the round numbers, so that the loop
                                    ; does some ordinary work besides the counter

    ; The loop: nine instructions per round, four of them sensitive. The labels sit on
    ; instruction lines (not on macro lines) so that they appear in the line map.
hot_loop:   xor ebx, ecx            ; ordinary work, outside the critical section
    irq_save                        ; pushfd ; cli - interrupts off, the old IF saved
    inc dword [counter]             ; the critical section: shared data
    irq_restore                     ; popfd - IF as it was
    irq_enable                      ; sti - and certainly on (a kernel's preempt point)
    rol ebx, 3
    dec ecx
    jnz hot_loop
hot_loop_end:   mov [mix], ebx      ; (a plain instruction: a label on a macro line
    irq_disable                     ;  would not show in the line map)

    print "rounds: "
    mov eax, ROUNDS
    call print_dec32
    print ", counter: "
    mov eax, [counter]
    call print_dec32
    print ", mix: "
    mov eax, [mix]
    call print_hex32
    call newline

    mov al, EXIT_SUCCESS
    cmp dword [counter], ROUNDS
    je .done
    mov al, 1                       ; a lost or doubled increment
.done:
    jmp exit

counter:        dd 0
mix:            dd 0
