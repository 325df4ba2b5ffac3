; apic.asm - a multiboot kernel that checks the local APIC (0xFEE00000) and the I/O APIC
; (0xFEC00000) register by register, and prints one "name: pass" or "name: FAIL" line per
; check on COM1; the exit status (port 0xF4, QEMU's isa-debug-exit) is the number of
; failures. The 8259 is masked first, so every interrupt here comes through the APICs.
; Timing-dependent behaviour is checked so that it holds at any speed: a count that
; decreased, a timer that fired before a loop waiting for it ended, one that did not fire
; again. The same image prints the same under vmlab's modes and under qemu-system-i386.
%include "multiboot.inc"                    ; loaded at 1 MiB, the multiboot header
%include "report.inc"                       ; CHECK: one pass/fail line per check

APIC        equ 0xFEE00000
A_ID        equ APIC + 0x020
A_VERSION   equ APIC + 0x030
A_TPR       equ APIC + 0x080
A_PPR       equ APIC + 0x0A0
A_EOI       equ APIC + 0x0B0
A_LDR       equ APIC + 0x0D0
A_DFR       equ APIC + 0x0E0
A_SVR       equ APIC + 0x0F0
A_ISR       equ APIC + 0x100                    ; + 0x10 per 32 vectors
A_IRR       equ APIC + 0x200
A_ESR       equ APIC + 0x280
A_ICR       equ APIC + 0x300
A_TIMER     equ APIC + 0x320
A_INITIAL   equ APIC + 0x380
A_CURRENT   equ APIC + 0x390
A_DIVIDE    equ APIC + 0x3E0
IOREGSEL    equ 0xFEC00000
IOWIN       equ 0xFEC00010
SELF        equ 1 << 18                         ; ICR destination shorthand: self
TIMER_VEC   equ 0x30
KEY_VEC     equ 0x31
IPI_VEC     equ 0x40
LOW_VEC     equ 0x50
HIGH_VEC    equ 0x60

%macro GATE 2                                   ; IDT entry %1 -> handler %2
    mov eax, %2
    mov edi, idt + %1 * 8
    call set_gate
%endmacro

%macro IOAPIC_WRITE 2                           ; I/O APIC register %1 = %2
    mov dword [IOREGSEL], %1
    mov dword [IOWIN], %2
%endmacro

%macro IOAPIC_READ 1                            ; EAX = I/O APIC register %1
    mov dword [IOREGSEL], %1
    mov eax, [IOWIN]
%endmacro

entry:
    mov esp, stack_top
    mov al, 0xFF                                ; mask both 8259s: the APICs alone deliver
    out 0x21, al
    out 0xA1, al
    mov ecx, 256
    mov edi, idt
.gates:
    mov eax, unexpected
    call set_gate
    add edi, 8
    loop .gates
    GATE TIMER_VEC, on_timer
    GATE KEY_VEC, on_key
    GATE IPI_VEC, on_ipi
    GATE LOW_VEC, on_low
    GATE HIGH_VEC, on_high
    lidt [idt_pointer]

; --- identification and the state the firmware leaves -----------------------------------------
    mov eax, [A_ID]
    shr eax, 24
    cmp eax, 0
    CHECK "lapic id 0"
    cmp dword [A_VERSION], 0x50014
    CHECK "lapic version 0x14, 6 lvt entries"
    mov eax, [A_SVR]
    and eax, 0x100
    cmp eax, 0x100
    CHECK "lapic software-enabled at boot"
    mov dword [A_SVR], 0x1FF                    ; enabled, spurious vector 0xFF
    cmp dword [A_SVR], 0x1FF
    CHECK "svr reads back"

; --- priorities and the logical destination registers ------------------------------------------
    mov dword [A_TPR], 0x25
    cmp dword [A_TPR], 0x25
    CHECK "tpr reads back"
    cmp dword [A_PPR], 0x25
    CHECK "ppr is the tpr with nothing in service"
    mov dword [A_TPR], 0
    mov dword [A_DFR], 0xFFFFFFFF
    cmp dword [A_DFR], 0xFFFFFFFF
    CHECK "dfr flat model reads back"
    mov dword [A_LDR], 0x01000000
    cmp dword [A_LDR], 0x01000000
    CHECK "ldr reads back"
    mov dword [A_ESR], 0
    cmp dword [A_ESR], 0
    CHECK "esr reads 0 after a write"

; --- a self-IPI: requested while IF=0, taken when IF=1, held back by the TPR ---------------------
    mov dword [A_ICR], SELF | IPI_VEC           ; fixed, edge, to itself
    mov eax, [A_IRR + 0x20]                     ; vectors 0x40-0x5f
    and eax, 1
    cmp eax, 1
    CHECK "self-ipi waits in irr while IF=0"
    mov eax, [A_ICR]
    and eax, 1 << 12
    cmp eax, 0
    CHECK "icr delivery status idle"
    sti
    nop
    cli
    cmp dword [ipis], 1
    CHECK "self-ipi delivered when IF=1"
    mov dword [A_TPR], 0x50                     ; class 5 and below held back
    mov dword [A_ICR], SELF | IPI_VEC
    sti
    nop
    nop
    cli
    cmp dword [ipis], 1
    CHECK "tpr 0x50 holds back vector 0x40"
    mov dword [A_TPR], 0
    sti
    nop
    nop
    cli
    cmp dword [ipis], 2
    CHECK "lowering the tpr delivers it"

; --- nesting: a higher class interrupts a handler, a lower one waits for its EOI ----------------
    mov dword [A_ICR], SELF | HIGH_VEC
    sti
    nop
    nop
    cli
    mov eax, [order]
    cmp eax, 'HhLH'
    CHECK "lower class waits, higher class nests"
    cmp dword [order + 4], 'hl'
    CHECK "eoi order: inner first"
    cmp dword [nested_ppr], HIGH_VEC
    CHECK "ppr in the nested handler is its class"
    mov eax, [A_ISR + 0x20]                     ; 0x40-0x5f
    or eax, [A_ISR + 0x30]                      ; 0x60-0x7f
    cmp eax, 0
    CHECK "isr empty after the eois"

; --- the timer -----------------------------------------------------------------------------------
    mov dword [A_DIVIDE], 0xB                   ; divide by 1
    cmp dword [A_DIVIDE], 0xB
    CHECK "divide configuration reads back"
    mov dword [A_TIMER], 0x10000 | TIMER_VEC    ; masked, one-shot
    mov dword [A_INITIAL], 0x40000000
    cmp dword [A_INITIAL], 0x40000000
    CHECK "initial count reads back"
    mov ebx, [A_CURRENT]
    mov ecx, 1000
.spin1:
    loop .spin1
    cmp [A_CURRENT], ebx
    setb al
    cmp al, 1
    CHECK "current count decreases"
    mov dword [A_INITIAL], 0
    cmp dword [A_CURRENT], 0
    CHECK "initial count 0 stops the timer"
    mov dword [A_TIMER], TIMER_VEC              ; one-shot, unmasked
    mov dword [A_INITIAL], 1000000              ; 1 ms at 1 GHz
    sti
.oneshot:
    hlt
    cmp dword [ticks], 0
    je .oneshot
    mov ecx, 300000                             ; long past another millisecond
.spin2:
    loop .spin2
    cli
    cmp dword [ticks], 1
    CHECK "one-shot fires once"
    cmp dword [A_CURRENT], 0
    CHECK "one-shot count stays 0"
    mov dword [A_DIVIDE], 0x3                   ; divide by 16
    mov dword [A_TIMER], 0x20000 | TIMER_VEC    ; periodic
    mov dword [A_INITIAL], 62500                ; 1 ms
    sti
.periodic:
    hlt
    cmp dword [ticks], 4
    jb .periodic
    cli
    cmp dword [ticks], 4                        ; (the loop ended: it fired three times)
    CHECK "periodic timer fires again and again"
    mov eax, [A_CURRENT]
    cmp eax, 62500
    setbe al
    cmp al, 1
    CHECK "periodic count reloads within the initial count"
    mov eax, [A_TIMER]
    cmp eax, 0x20000 | TIMER_VEC
    CHECK "lvt timer reads back periodic"
    or dword [A_TIMER], 0x10000                 ; masked: counts on, requests nothing
    sti                                         ; (a request made before the mask: taken now)
    nop
    mov ebx, [ticks]
    mov ecx, 300000
.spin3:
    loop .spin3
    cli
    cmp [ticks], ebx
    CHECK "masked timer interrupts no one"
    mov dword [A_INITIAL], 0

; --- the I/O APIC --------------------------------------------------------------------------------
    IOAPIC_READ 1
    cmp eax, 0x170020
    CHECK "ioapic version 0x20, 24 entries"
    IOAPIC_READ 0
    cmp eax, 0
    CHECK "ioapic id 0"
    IOAPIC_READ 0x12                            ; pin 1 (the keyboard), low half
    cmp eax, 0x10000
    CHECK "redirection entry masked at reset"
    IOAPIC_WRITE 0x13, 0                        ; destination: APIC 0
    IOAPIC_WRITE 0x12, KEY_VEC                  ; fixed, physical, edge, unmasked
    IOAPIC_READ 0x12
    cmp eax, KEY_VEC
    CHECK "redirection entry reads back"
    mov dword [IOREGSEL], 0x13
    cmp dword [IOREGSEL], 0x13
    CHECK "ioregsel reads back"
    mov al, 0x1E                                ; the 8042 "types" scan code 0x1E: IRQ 1
    call type_key
    cmp dword [keys], 1
    CHECK "keyboard irq 1 through the ioapic"
    cmp byte [last_key], 0x1E
    CHECK "the handler read the scan code"
    IOAPIC_WRITE 0x12, 0x10000 | KEY_VEC        ; masked
    mov al, 0x30
    call type_key
    in al, 0x60                                 ; take the byte the masked IRQ left
    cmp dword [keys], 1
    CHECK "masked pin delivers nothing"
    IOAPIC_WRITE 0x12, 0x8000 | KEY_VEC         ; level-triggered
    mov al, 0x2E
    call type_key
    cmp dword [keys], 2
    CHECK "level entry delivers"
    mov eax, [key_entry]
    and eax, 1 << 14
    cmp eax, 1 << 14
    CHECK "remote irr set until the eoi"
    IOAPIC_READ 0x12
    and eax, 1 << 14
    cmp eax, 0
    CHECK "eoi clears remote irr"

    mov al, [failures]
    out 0xf4, al                                ; QEMU's isa-debug-exit (vmlab has one too)
    cli
    hlt

; --- interrupt handlers (interrupt gates: IF=0 inside) ------------------------------------------
on_ipi:
    inc dword [ipis]
    mov dword [A_EOI], 0
    iretd

on_high:                                        ; the first time, ask for a lower class
    push eax
    push edx
    call record_h
    mov eax, [A_PPR]
    mov [nested_ppr], eax
    cmp byte [sent_low], 0
    jne .done
    mov byte [sent_low], 1
    mov dword [A_ICR], SELF | LOW_VEC           ; class 5 < 6: must wait for our EOI
    sti
    nop
    nop
    cli
.done:
    mov edx, [order_at]
    mov byte [order + edx], 'h'
    inc dword [order_at]
    mov dword [A_EOI], 0
    pop edx
    pop eax
    iretd

on_low:                                         ; ask for a higher class: it nests here
    push edx
    mov edx, [order_at]
    mov byte [order + edx], 'L'
    inc dword [order_at]
    mov dword [A_ICR], SELF | HIGH_VEC
    sti
    nop
    nop
    cli
    mov edx, [order_at]
    mov byte [order + edx], 'l'
    inc dword [order_at]
    mov dword [A_EOI], 0
    pop edx
    iretd

record_h:
    mov edx, [order_at]
    mov byte [order + edx], 'H'
    inc dword [order_at]
    ret

on_timer:
    inc dword [ticks]
    mov dword [A_EOI], 0
    iretd

on_key:
    push eax
    inc dword [keys]
    in al, 0x60
    mov [last_key], al
    mov dword [IOREGSEL], 0x12
    mov eax, [IOWIN]
    mov [key_entry], eax                        ; the entry as the handler sees it
    mov dword [A_EOI], 0
    pop eax
    iretd

unexpected:
    inc byte [failures]
    iretd

; --- helpers --------------------------------------------------------------------------------------
type_key:                                       ; the 8042 puts AL in its output buffer (0xD2)
    mov ah, al
    call kbc_ready
    mov al, 0xD2
    out 0x64, al
    call kbc_ready
    mov al, ah
    out 0x60, al
    sti
    mov ecx, 100000                             ; time for the IRQ to arrive
.wait:
    loop .wait
    cli
    ret

kbc_ready:                                      ; until the 8042's input buffer is empty
    in al, 0x64
    test al, 2
    jnz kbc_ready
    ret

set_gate:                                       ; IDT entry at EDI: interrupt gate to EAX
    mov [edi], ax
    mov word [edi + 2], cs
    mov word [edi + 4], 0x8E00
    shr eax, 16
    mov [edi + 6], ax
    ret


section .data
sent_low:    db 0
last_key:    db 0
align 4
idt_pointer: dw 256 * 8 - 1
             dd idt
ipis:        dd 0
ticks:       dd 0
keys:        dd 0
key_entry:   dd 0
nested_ppr:  dd 0
order_at:    dd 0
order:       dd 0, 0
load_end:

section .bss
align 8
idt:        resb 256 * 8
    resb 4096
stack_top:
bss_end:
