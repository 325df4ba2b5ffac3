; misconfig.asm - a kernel that its operator misconfigures mid-run: the universal undo.
;
; What it demonstrates: a snapshot taken before a mistake undoes it. The kernel counts 40
; timer interrupts (the PIT, every 5000 instructions), sleeping with HLT between them, and
; then ends well. At every tick it also looks at COM1 for a configuration command: '!' tells
; it to load a new interrupt table - an empty one (limit 0), the mistake. Nothing happens at
; once; the next timer interrupt finds no gate, the #GP that follows finds none either, nor
; the double fault: the CPU shuts down (a triple fault). Reverted to a snapshot taken before
; the command, the kernel runs its 40 ticks and exits with status 0, as if it never came.
;
; What to expect: with no input, "40 ticks, all well" and exit status 0. With '!' on COM1
; (`vmlab run misconfig --serial '!'`), "config: new interrupt table" and a triple fault.
; `vmlab lesson 08-snapshots` takes the snapshot, sends '!', crashes, reverts and runs on.

bits 32
org 0x100000

%include "vmlab.inc"

TIMER_RELOAD    equ 5000            ; instructions between timer interrupts
TICKS           equ 40              ; ticks to count before ending well
COM1_DATA       equ 0x3F8
COM1_LSR        equ 0x3FD           ; line status: bit 0 = a byte has arrived

start:
    println "misconfig: counting 40 timer ticks; '!' on COM1 loads a new interrupt table"
    call gdt_install
    mov eax, kstack_top
    call tss_install
    call idt_install_exceptions
    set_gate IRQ0_VECTOR, timer_interrupt, INTERRUPT_GATE
    call idt_load
    mov ax, 0xFFFE                  ; unmask IRQ 0 (the timer) only
    call pic_remap
    mov ax, TIMER_RELOAD
    call pit_start
    irq_enable
.sleep:                             ; the kernel's idle loop: sleep until the next tick
    cmp dword [ticks], TICKS
    jae .done
    halt
    jmp .sleep
.done:
    println "misconfig: 40 ticks, all well"
    xor eax, eax
    jmp exit

; The timer (IRQ 0): count the tick, then take a configuration command if one has come.
timer_interrupt:
    pushad
    send_eoi
    inc dword [ticks]
    inb COM1_LSR
    test al, 1
    jz .out
    inb COM1_DATA
    cmp al, '!'
    jne .out
    println "config: new interrupt table (it is empty: the next interrupt has no gate)"
    load_idt empty_idtr             ; the mistake
.out:
    popad
    interrupt_return

ticks:      dd 0
empty_idtr: dw 0                    ; limit 0: not one gate
            dd idt

align 16
            times 1024 db 0
kstack_top:
