; pcdevices - checks the registers of the PC devices a text-mode kernel touches, and says so.
;
; For each documented behaviour of the VGA (CRTC, input status 1, attribute controller,
; sequencer, graphics controller, misc output, the text buffer), the 8042 keyboard controller
; and its keyboard (status, config byte, self-test, port test, keyboard commands, IRQ 1) and
; the 16550 UART (divisor latch, scratch, loopback, FIFO, IER, IIR, IRQ 4) it prints "ok NAME", or
; "FAIL NAME got XX" with the byte it read, on COM1; then "failures: N" and it exits with
; status N. The same image runs on vmlab (a flat image entered at 0x100000) and under
; `qemu-system-i386 -kernel` (a multiboot image, a.out kludge, entered at `start`), so the
; test suite compares the two line by line. Interrupts are on only around the checks of
; the UART's receive interrupt (IRQ 4, in loopback) and the 8042's IRQ 1.
bits 32
org 0x100000
    jmp short start             ; vmlab enters at the first byte; multiboot at `start`
align 4
mbh: dd 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)     ; magic, a.out kludge, checksum
     dd mbh, 0x100000, image_end, image_end, start              ; header, load, end, bss, entry

COM1        equ 0x3F8
VGA_CRTC    equ 0x3D4
KBC_DATA    equ 0x60
KBC_STATUS  equ 0x64

; check NAME, EXPECTED: compare AL with EXPECTED and report.
%macro check 2
    mov esi, %%name
    mov ah, %2
    call report
    jmp %%done
%%name: db %1, 0
%%done:
%endmacro

; inb PORT / outb PORT, VALUE (through DX, so any port works)
%macro inb 1
    mov dx, %1
    in al, dx
%endmacro
%macro outb 2
    mov dx, %1
    mov al, %2
    out dx, al
%endmacro
; crtc INDEX, VALUE: write a CRTC register
%macro crtc 2
    outb VGA_CRTC, %1
    outb VGA_CRTC + 1, %2
%endmacro

start:
    mov esp, 0x90000
    xor ebp, ebp                ; failures

    ; ---------------------------------------------------------------- VGA
    outb VGA_CRTC, 0x0E
    inb VGA_CRTC
    check "crtc index reads back", 0x0E
    crtc 0x0E, 0x01
    crtc 0x0F, 0x23
    outb VGA_CRTC, 0x0F
    inb VGA_CRTC + 1
    check "cursor location low", 0x23
    outb VGA_CRTC, 0x0E
    inb VGA_CRTC + 1
    check "cursor location high", 0x01
    crtc 0x0A, 0x0E
    crtc 0x0B, 0x0F
    outb VGA_CRTC, 0x0A
    inb VGA_CRTC + 1
    check "cursor start", 0x0E
    outb VGA_CRTC, 0x0B
    inb VGA_CRTC + 1
    check "cursor end", 0x0F
    crtc 0x0C, 0x00
    crtc 0x0D, 0x00
    outb VGA_CRTC, 0x0D
    inb VGA_CRTC + 1
    check "start address low", 0x00
    crtc 0x13, 0x28
    outb VGA_CRTC, 0x13
    inb VGA_CRTC + 1
    check "offset register stored", 0x28
    inb 0x3DA                   ; input status 1: the retrace bit toggles from read to read
    mov bl, al
    inb 0x3DA
    xor al, bl
    and al, 0x08
    check "status 1 retrace toggles", 0x08
    inb 0x3CC
    check "misc output (colour, mode 3)", 0x67
    inb 0x3B4                   ; the monochrome CRTC is not decoded in colour mode
    check "mono CRTC absent", 0xFF
    outb 0x3C4, 0x02
    inb 0x3C5
    check "sequencer map mask", 0x03
    outb 0x3CE, 0x06
    inb 0x3CF
    check "graphics misc (text at B8000)", 0x0E
    inb 0x3DA                   ; reset the attribute flip-flop: next 0x3C0 write is an index
    outb 0x3C0, 0x30            ; mode control, palette address source kept on
    inb 0x3C1                   ; (reading data does not move the flip-flop)
    and al, 0x08
    check "attribute blink enabled", 0x08
    inb 0x3DA                   ; flip-flop back to index: 0x3C0 reads the index
    inb 0x3C0
    check "attribute index reads back", 0x30
    mov word [0xB8000 + 2 * (24 * 80 + 79)], 0x1F21   ; a '!' in the last cell, white on blue
    mov al, [0xB8000 + 2 * (24 * 80 + 79)]
    check "text buffer is memory", 0x21

    ; ---------------------------------------------------------------- 8042
    inb KBC_STATUS
    and al, 0x04
    check "8042 system flag", 0x04
    mov bl, 0x20                ; read the config byte
    call kbc_command
    call kbc_read
    and al, 0xFE                ; keyboard interrupt off: nothing here takes IRQ 1
    mov bh, al
    mov bl, 0x60
    call kbc_command
    mov al, bh
    out KBC_DATA, al
    mov bl, 0x20
    call kbc_command
    call kbc_read
    check "8042 config byte written", bh
    mov bl, 0xAA
    call kbc_command
    call kbc_read
    check "8042 self-test", 0x55
    mov bl, 0xAB
    call kbc_command
    call kbc_read
    check "8042 keyboard port test", 0x00
    mov bl, 0xD0
    call kbc_command
    call kbc_read
    and al, 0x03
    check "8042 output port: A20, no reset", 0x03
    mov al, 0xFF                ; keyboard reset: ACK, then BAT passed
    call kbd_command
    check "keyboard reset ack", 0xFA
    call kbc_read
    check "keyboard self-test passed", 0xAA
    mov al, 0xF5
    call kbd_command
    check "keyboard disable scanning", 0xFA
    mov al, 0xED
    call kbd_command
    check "keyboard LED command", 0xFA
    mov al, 0x02
    call kbd_command
    check "keyboard LED value", 0xFA
    mov al, 0xF0
    call kbd_command
    check "keyboard scan code set command", 0xFA
    mov al, 0x00
    call kbd_command
    check "keyboard scan code set query", 0xFA
    call kbc_read
    check "keyboard set 2, translated", 0x41
    mov al, 0xF4
    call kbd_command
    check "keyboard enable scanning", 0xFA
    inb KBC_STATUS
    and al, 0x01
    check "8042 output buffer empty", 0x00

    ; ---------------------------------------------------------------- UART
    ; With DLAB or loopback on, printing would go to the divisor or come back to the
    ; receiver: read everything first into `seen`, print the checks after.
    mov edi, seen
    outb COM1 + 3, 0x83         ; DLAB on: ports +0/+1 are the divisor latch
    outb COM1 + 0, 0x0C
    outb COM1 + 1, 0x00
    inb COM1 + 0
    stosb
    inb COM1 + 3
    stosb
    outb COM1 + 3, 0x03         ; DLAB off, 8N1
    outb COM1 + 4, 0x1F         ; loopback, all modem outputs on
    inb COM1 + 6
    stosb
    outb COM1 + 0, 'Z'
    inb COM1 + 5
    stosb
    inb COM1 + 0
    stosb
    inb COM1 + 5
    stosb
    outb COM1 + 4, 0x03         ; loopback off: output goes out again
    mov al, [seen + 0]
    check "uart divisor low", 0x0C
    mov al, [seen + 1]
    check "uart LCR reads back", 0x83
    mov al, [seen + 2]
    and al, 0xF0
    check "uart loopback MSR", 0xF0
    mov al, [seen + 3]
    and al, 0x01
    check "uart loopback data ready", 0x01
    mov al, [seen + 4]
    check "uart loopback byte", 'Z'
    mov al, [seen + 5]
    and al, 0x01
    check "uart receiver empty again", 0x00
    outb COM1 + 7, 0x5A
    inb COM1 + 7
    check "uart scratch", 0x5A
    outb COM1 + 1, 0x00
    inb COM1 + 1
    check "uart IER", 0x00
    outb COM1 + 2, 0x07         ; FIFOs on (and cleared)
    inb COM1 + 2
    and al, 0xC0
    check "uart FIFOs shown in IIR", 0xC0
    outb COM1 + 2, 0x00

    ; ---------------------------------------------------------------- interrupts
    outb COM1 + 1, 0x02         ; IER: THR empty interrupt. THR is empty: one is pending
    inb COM1 + 2
    mov bl, al
    inb COM1 + 2                ; (before printing: sending a byte would make THR empty again)
    mov bh, al
    outb COM1 + 1, 0x00
    mov al, bl
    and al, 0x0F
    check "uart IIR: THR empty pending", 0x02
    mov al, bh
    and al, 0x0F
    check "uart reading IIR acknowledges it", 0x01
    call interrupts_setup       ; IRQ 1 and IRQ 4 unmasked, at vectors 0x21 and 0x24
    outb COM1 + 4, 0x10         ; loopback: the byte sent comes back, and interrupts
    outb COM1 + 1, 0x01         ; IER: received data available
    sti
    outb COM1, 'Q'
    mov esi, uart_count
    call wait_for_interrupt
    outb COM1 + 1, 0x00
    outb COM1 + 4, 0x03
    mov al, [uart_count]
    check "uart receive interrupt on IRQ 4", 1
    mov al, [uart_iir]
    and al, 0x0F
    check "uart IIR in the handler: data", 0x04
    mov al, [uart_byte]
    check "uart byte read in the handler", 'Q'
    mov bl, 0x20                ; 8042: keyboard interrupt on, then a byte as if typed
    call kbc_command
    call kbc_read
    or al, 0x01
    mov bh, al
    mov bl, 0x60
    call kbc_command
    mov al, bh
    out KBC_DATA, al
    sti
    mov bl, 0xD2                ; write the keyboard output buffer
    call kbc_command
    mov al, 0x5A
    out KBC_DATA, al
    mov esi, kbd_count
    call wait_for_interrupt
    mov al, [kbd_count]
    check "8042 IRQ 1 for a byte to read", 1
    mov al, [kbd_byte]
    check "8042 byte read in the handler", 0x5A

    ; ---------------------------------------------------------------- the end
    mov esi, failures
    call puts
    mov eax, ebp
    add al, '0'
    call putc
    mov al, 10
    call putc
    mov eax, ebp
    out 0xF4, al                ; QEMU's isa-debug-exit (status (N << 1) | 1)
    mov dx, 0x501
    out dx, al                  ; vmlab's debug exit (status N)
    cli
    hlt

; report: AL the byte read, AH the byte expected, ESI the check's name.
report:
    mov cl, al
    cmp al, ah
    jne .fail
    push esi
    mov esi, ok
    call puts
    pop esi
    call puts
    jmp .end
.fail:
    inc ebp
    push esi
    mov esi, fail
    call puts
    pop esi
    call puts
    mov esi, got
    call puts
    mov al, cl
    shr al, 4
    call hexdigit
    mov al, cl
    call hexdigit
.end:
    mov al, 10
    jmp putc

hexdigit:                       ; the low nibble of AL as a hex digit
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe putc
    add al, 'A' - '9' - 1
%include "com1.inc"

kbc_command:                    ; BL to the 8042's command register, once it takes input
    in al, KBC_STATUS
    test al, 0x02
    jnz kbc_command
    mov al, bl
    out KBC_STATUS, al
    ret

kbc_read:                       ; AL = the next byte of the output buffer
    in al, KBC_STATUS
    test al, 0x01
    jz kbc_read
    in al, KBC_DATA
    ret

kbd_command:                    ; AL to the keyboard; AL = its first reply
    push eax
.wait:
    in al, KBC_STATUS
    test al, 0x02
    jnz .wait
    pop eax
    out KBC_DATA, al
    jmp kbc_read

interrupts_setup:               ; the PICs at 0x20/0x28, IRQ 1 and 4 on; an IDT for 0x20-0x2F
    mov al, 0x11                ; ICW1: initialise, ICW4 follows
    out 0x20, al
    out 0xA0, al
    mov al, 0x20                ; ICW2: vector bases
    out 0x21, al
    mov al, 0x28
    out 0xA1, al
    mov al, 0x04                ; ICW3: the slave on IRQ 2
    out 0x21, al
    mov al, 0x02
    out 0xA1, al
    mov al, 0x01                ; ICW4: 8086 mode
    out 0x21, al
    out 0xA1, al
    mov al, 0xED                ; OCW1: only IRQ 1 and IRQ 4 unmasked
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al
    mov ecx, 0x20
.gate:
    mov eax, spurious_irq
    cmp ecx, 0x21
    jne .not_keyboard
    mov eax, keyboard_irq
.not_keyboard:
    cmp ecx, 0x24
    jne .set
    mov eax, serial_irq
.set:                           ; interrupt gate: offset, CS 0x08, present DPL 0
    mov [idt + 8 * ecx], ax
    mov word [idt + 8 * ecx + 2], 0x08
    mov word [idt + 8 * ecx + 4], 0x8E00
    shr eax, 16
    mov [idt + 8 * ecx + 6], ax
    inc ecx
    cmp ecx, 0x30
    jb .gate
    lidt [idt_pointer]
    ret

wait_for_interrupt:             ; until the byte at ESI is set, or long enough; then CLI
    mov ecx, 100000             ; (an interrupt takes a moment to arrive: under QEMU, at the
.wait:                          ; end of a translated block)
    cmp byte [esi], 0
    jne .done
    loop .wait
.done:
    cli
    ret

keyboard_irq:
    push eax
    in al, KBC_DATA
    mov [kbd_byte], al
    inc byte [kbd_count]
    jmp eoi
serial_irq:
    push eax
    push edx
    mov dx, COM1 + 2
    in al, dx
    mov [uart_iir], al
    mov dx, COM1
    in al, dx
    mov [uart_byte], al
    inc byte [uart_count]
    pop edx
    jmp eoi
spurious_irq:
    push eax
eoi:
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd

ok: db "ok ", 0
fail: db "FAIL ", 0
got: db " got ", 0
failures: db "failures: ", 0
seen: times 8 db 0
kbd_count: db 0
kbd_byte: db 0
uart_count: db 0
uart_iir: db 0
uart_byte: db 0
align 8
idt: times 0x30 dq 0
idt_pointer:
    dw 0x30 * 8 - 1
    dd idt
image_end:
