; busyidle - waits for keys in a busy loop, as tutorial kernels do: `sti` then `jmp $`.
;
; Many OS-tutorial kernels (a keyboard-echo kernel of the "kernel 201" kind among them) end
; their main function in `while (1);` with interrupts on: the CPU never halts and never polls
; a device, it only spins until an interrupt comes. Here the spin is the instruction just
; after STI, so its EIP always follows an STI byte, though the STI shadow lasted one
; instruction only. The keyboard handler prints each make code on COM1 in hex and, after
; three keys, ends the run through the debug exit (status 0).
; A flat image for vmlab (entered at 0x100000) and a multiboot image for QEMU (at `entry`).
; Built with TICKING defined (tickidle.asm) its PIT also fires 100 times a second.
%include "multiboot.inc"             ; loaded at 1 MiB, the multiboot header

COM1 equ 0x3F8
KEYS equ 3                      ; make codes to print before the run ends

entry:
    mov esp, 0x90000
    mov al, 0x11                ; ICW1 to both 8259s: edge triggered, cascade, ICW4 follows
    out 0x20, al
    out 0xA0, al
    mov al, 0x20                ; ICW2: IRQ 0-7 at vectors 0x20-0x27, IRQ 8-15 at 0x28-0x2F
    out 0x21, al
    mov al, 0x28
    out 0xA1, al
    mov al, 0x04                ; ICW3: the slave on IRQ 2 / its cascade identity 2
    out 0x21, al
    mov al, 0x02
    out 0xA1, al
    mov al, 0x01                ; ICW4: 8086 mode
    out 0x21, al
    out 0xA1, al
%ifdef TICKING
    mov al, 0xFC                ; IRQ 0 (the PIT) and IRQ 1 (the keyboard) unmasked
%else
    mov al, 0xFD                ; only IRQ 1 (the keyboard) unmasked
%endif
    out 0x21, al
    mov al, 0xFF
    out 0xA1, al
%ifdef TICKING
    mov al, 0x36                ; PIT channel 0: low then high byte, mode 3 (square wave)
    out 0x43, al
    mov ax, 11932               ; 1,193,182 Hz / 100: it fires every 10 ms
    out 0x40, al
    mov al, ah
    out 0x40, al
    GATE 0x20, timer, 0x8E
%endif
    mov eax, keyboard           ; an interrupt gate for vector 0x21
    mov [idt + 0x21*8], ax
    mov word [idt + 0x21*8 + 2], 0x08
    mov word [idt + 0x21*8 + 4], 0x8E00
    shr eax, 16
    mov [idt + 0x21*8 + 6], ax
    lidt [idt_pointer]
%ifdef TICKING
    sti
.settle:                        ; timer_wait(2), as a kernel waits for its clock to run
    cmp dword [ticks], 2
    jb .settle
    mov esi, ready
    call puts
%else
    mov esi, ready
    call puts
    sti
%endif
    jmp $                       ; idle: spin here until a key's interrupt comes

%ifdef TICKING
timer:                          ; IRQ 0: count the tick
    inc dword [ticks]
    push eax
    mov al, 0x20                ; non-specific EOI to the master 8259
    out 0x20, al
    pop eax
    iretd
ticks: dd 0
%endif

keyboard:                       ; IRQ 1: read the scan code, print make codes
    pushad
    in al, 0x60
    test al, 0x80               ; a break code (key released): nothing to print
    jnz .eoi
    call puthex
    mov al, ' '
    call putc
    inc byte [keys]
    cmp byte [keys], KEYS
    jne .eoi
    mov al, 10
    call putc
    mov dx, 0x501               ; done: debug exit, status 0
    xor al, al
    out dx, al
.eoi:
    mov al, 0x20                ; non-specific EOI to the master 8259
    out 0x20, al
    popad
    iretd

puthex:                         ; AL as two hex digits
    push eax
    shr al, 4
    call .digit
    pop eax
.digit:
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe putc
    add al, 'a' - '0' - 10
%include "com1.inc"             ; putc, puts

ready: db "keys> ", 0
keys: db 0
align 8
idt_pointer: dw 256*8 - 1
             dd idt
idt: times 256*8 db 0
load_end:
bss_end:
