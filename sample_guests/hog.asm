; hog.asm - a kernel that takes the CPU and never gives it back.
;
; What it demonstrates: why a host's scheduler must preempt. After one line it turns
; interrupts off and spins in a two-instruction loop: no HLT, no I/O, no system call, nothing
; that would ever hand the CPU to anyone. On a host with other VMs the monitor takes the CPU
; back anyway at the end of every quantum (counted in guest instructions); the others get
; their turns and finish as if the hog were not there. The hog itself only stops when its
; instruction budget runs out.
;
; What to expect: the line below, then exit reason "budget" (the run's instruction limit).

bits 32
org 0x100000

%include "vmlab.inc"

start:
    println "hog: spinning with interrupts off, forever. Nobody else gets the CPU... right?"
    irq_disable                     ; not even a timer could take it from me
    xor eax, eax
.spin:
    inc eax                         ; count, forever (the count itself is never looked at)
    jmp .spin
