; trapstorm.asm - 100 privileged instructions in a row, and nothing else in between.
;
; What it demonstrates: the cost model of trap-and-emulate. A kernel executes privileged
; instructions all the time (interrupt flag, control registers); on bare metal each is one
; instruction, under a trap-and-emulate monitor each is a fault, a world switch into the
; monitor, an emulation and a world switch back. Here there are 100 of them back to back.
; (It is also a test for the monitor: every one of the 100 must arrive as its own #GP and be
; emulated - unicorn's habit of escalating a second unacknowledged fault into #DF must not
; bite. See DESIGN.md, unicorn fact 3.)
;
; CLI and STI go through vmlab.inc's macros, MOV CR0 is used raw: in the paravirtual build
; (-DPARAVIRT) the interrupt flag is a hypercall, and CR0 - which no hypercall replaces - is
; still trapped and emulated (pv is trap-and-emulate for whatever the port left alone).
;
; What to expect:
;   native - "100 privileged instructions in a row", CR0 = 0x00000011, exit status 0,
;            and no traps (there is no monitor).
;   trap   - the same text and status. The run's trap counts show the storm: 25 sti,
;            25 cli and 50 mov cr0 (51 with the final read of CR0), besides the IN and OUT
;            of the console.
;   pv     - the paravirtual build: the same text and status; 50 irq_enable/irq_disable
;            hypercalls instead of the STI/CLI traps, and still 51 trapped mov cr0.

bits 32
org 0x100000

%include "vmlab.inc"

GROUPS equ 25                       ; 4 privileged instructions per group

start:
    println "trapstorm: a kernel doing nothing but privileged instructions for a while"

    ; The STIs below open the interrupt window for one instruction at a time. Mask every
    ; IRQ at both PICs first, so that no device interrupt can slip in and break the row.
    outb PIC1_DATA, 0xFF
    outb PIC2_DATA, 0xFF

    ; The storm. Interrupts on, read CR0, write the same value back, interrupts off: harmless
    ; on bare metal, and not one of these may run unprivileged. Interrupts end up off.
%assign privileged 0
%rep GROUPS
    irq_enable                      ; sti
    mov eax, cr0
    mov cr0, eax
    irq_disable                     ; cli
  %assign privileged privileged + 4
%endrep

    print "executed "
    mov eax, privileged
    call print_dec32
    println " privileged instructions in a row"

    ; Writing CR0 back 25 times must not have changed it. (Had one of the writes been lost or
    ; garbled, a real kernel would now be running with caching or protection changed.)
    print "CR0 = "
    mov eax, cr0
    call print_hex32
    call newline

    mov al, EXIT_SUCCESS
    jmp exit
