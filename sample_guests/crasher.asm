; crasher.asm - a kernel that works for a while and then takes the whole machine down.
;
; What it demonstrates: fault containment. It never installs an IDT (the loader leaves IDTR
; with base 0 and limit 0), counts for a while, printing as it goes, and then divides by
; zero. The CPU looks up vector 0 (#DE) in an empty IDT: that is a #GP; delivering the #GP
; fails the same way: a double fault (#DF); delivering that fails too: a triple fault. A
; real PC resets; vmlab stops this machine as crashed.
;
; What to expect, alone or beside other VMs on one host:
;   every mode - the counting lines, then "crashed" with the triple fault as the reason.
;   On a host, the VMs next to it go on running and print exactly what they print alone:
;   a guest's crash is its own VM's business, never the host's.

bits 32
org 0x100000

%include "vmlab.inc"

ROUNDS          equ 5               ; lines of counting before the crash
WORK            equ 20000           ; loop iterations per line

start:
    println "crasher: I count for a while, then divide by zero with no IDT at all."
    mov ecx, ROUNDS
    xor ebx, ebx                    ; the running sum of the work
.round:
    mov edx, WORK
.work:
    add ebx, edx                    ; some ordinary work: sum the loop counter
    rol ebx, 1
    dec edx
    jnz .work
    print "  still alive, sum "
    mov eax, ebx
    call print_hex32
    call newline
    loop .round

    println "crasher: now 1 / 0. There is no handler for #DE, nor for #GP, nor for #DF..."
    xor ecx, ecx
    mov eax, 1
    div ecx                         ; #DE -> #GP -> #DF -> triple fault
    println "crasher: still here? That is not what a CPU does."
    mov al, EXIT_PANIC
    jmp exit
