; hello.asm - the smallest vmlab kernel: print a few lines on the serial console and stop.
;
; What it demonstrates: how a guest talks to the (virtual) hardware at all. Every character
; is a byte written to the COM1 UART's transmit register, port 0x3F8, after polling its line
; status register; the run ends with a write to the debug-exit port 0x501.
;
; What to expect:
;   native - the text below, exit status 0.
;   trap   - exactly the same text and status. Nothing here is sensitive: the only "special"
;            instructions are IN and OUT, and the monitor intercepts every one of them and
;            forwards it to the same emulated UART. Watch the trace: on bare metal the port
;            accesses are plain instructions; under the monitor each one is a trap.

bits 32
org 0x100000

%include "vmlab.inc"

start:
    mov ebx, esp                    ; the loader left ESP at the top of RAM: keep it to show

    println "Hello from a vmlab guest kernel!"
    call newline
    print "I was loaded at "
    mov eax, KERNEL_LOAD
    call print_hex32
    print " and my stack starts at "
    mov eax, ebx
    call print_hex32
    println " (the top of RAM)."
    println "There is no BIOS and no operating system under me. To print a character I"
    println "wait for the COM1 UART to be ready (IN from its status port, 0x3FD) and"
    println "then hand it the byte (OUT to port 0x3F8): one IN and one OUT per character."
    println "Now I write 0 to the debug-exit port 0x501, which stops the machine. Bye!"

    mov al, EXIT_SUCCESS
    jmp exit
