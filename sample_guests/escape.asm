; escape.asm - a hostile kernel that tries every way out of its virtual machine.
;
; What it demonstrates: isolation. A VM owns its RAM (guest-physical 0 up to the top of its
; stack), its devices and their I/O ports, and nothing else. This kernel reaches for all the
; rest and prints what it saw:
;   1. reads and writes beyond the end of its RAM, up to where other VMs' memory would lie
;      if the machine were not isolating them;
;   2. a sweep of the top 16 MiB of the address space, one read per 4 KiB page;
;   3. SGDT, to find where the CPU's descriptor table really is (a monitor hides there);
;   4. a smash: one write into every page of the top 4 MiB, where a monitor keeps its own
;      memory (shadow GDT, translation cache, ...), then a check of which writes stuck;
;   5. descriptor tricks: a GDT with segments based outside its RAM, used to read and write
;      through them, and an IDT placed outside its RAM;
;   6. I/O to ports of devices it does not have (printer port, CMOS, IDE, PCI);
;   7. finally a jump into nowhere.
;
; What to expect:
;   native - outside RAM is open bus: every read gives 0xFFFFFFFF, writes vanish; no page of
;            the sweep and no write of the smash shows anything; the jump crashes the VM.
;   trap/bt - the same outside the monitor's window (the top 4 MiB, 0xFFC00000 up). Inside
;            it the guest can read some monitor pages (see the README, "What a guest sees of
;            the monitor"), but its writes there never land. Every attempt is an isolation
;            event of the VM; the other VMs on the host never notice anything.

bits 32
org 0x100000

%include "vmlab.inc"

PATTERN         equ 0x5EC0DE5A      ; what the smash writes: easy to recognise if it stuck
OPEN_BUS        equ 0xFFFFFFFF
TOP_SWEEP       equ 0xFF000000      ; the sweep covers 0xFF000000 .. 0xFFFFFFFF
MONITOR_WINDOW  equ 0xFFC00000      ; where monitors like to live (VMware's did)

start:
    mov [ram_end], esp              ; the loader put the stack at the top of RAM
    print "escape: a hostile kernel. My RAM ends at "
    mov eax, [ram_end]
    call print_hex32
    println ". Let us see what lies beyond."

; ---------------------------------------------------------------------------- 1. beyond RAM
    println "1. beyond my RAM (read, write the pattern, read back):"
    mov ebx, probe_list
.probe:
    mov esi, [ebx]
    test esi, esi
    jnz .fixed
    mov esi, [ram_end]              ; entry 0 of the list means "the first byte past RAM"
.fixed:
    print "   "
    mov eax, esi
    call print_hex32
    print ": reads "
    mov eax, [esi]
    call print_hex32
    mov dword [esi], PATTERN
    print ", after writing the pattern reads "
    mov eax, [esi]
    call print_hex32
    call newline
    add ebx, 4
    cmp ebx, probe_list_end
    jb .probe

; ---------------------------------------------------------------------------- 2. the top
    println "2. sweep of the top 16 MiB, one read per page, per MiB:"
    mov esi, TOP_SWEEP
.region:
    xor ecx, ecx                    ; pages of this MiB that did not read as open bus
    mov edi, esi
    mov edx, 256
.page:
    cmp dword [edi], OPEN_BUS
    je .bus
    inc ecx
.bus:
    add edi, 0x1000
    dec edx
    jnz .page
    print "   "
    mov eax, esi
    call print_hex32
    print ": "
    mov eax, ecx
    call print_dec32
    println " of 256 pages not open bus"
    add esi, 0x100000
    jnz .region                     ; until the address wraps past 0xFFFFFFFF

; ---------------------------------------------------------------------------- 3. SGDT
    sgdt [gdtr_seen]                ; unprivileged: it never traps, whatever the monitor
    print "3. SGDT says the CPU's GDT is at "
    mov eax, [gdtr_seen + 2]
    call print_hex32
    print ", limit "
    movzx eax, word [gdtr_seen]
    call print_hex16
    call newline

; ---------------------------------------------------------------------------- 4. smash
    println "4. smash: the pattern into every page of the top 4 MiB, and into its GDT entries"
    mov edi, MONITOR_WINDOW
.smash:
    mov dword [edi], PATTERN
    add edi, 0x1000
    jnz .smash
    mov dword [MONITOR_WINDOW + 8], PATTERN     ; a monitor's shadow GDT would start with
    mov dword [MONITOR_WINDOW + 12], PATTERN    ; the kernel code descriptor here
    xor ecx, ecx                    ; writes that stuck
    mov edi, MONITOR_WINDOW
.check:
    cmp dword [edi], PATTERN
    jne .held
    inc ecx
.held:
    add edi, 0x1000
    jnz .check
    cmp dword [MONITOR_WINDOW + 8], PATTERN
    jne .held2
    inc ecx
.held2:
    print "   writes that stuck: "
    mov eax, ecx
    call print_dec32
    println " of 1026"

; ---------------------------------------------------------------------------- 5. descriptors
    println "5. descriptor tricks: segments based outside my RAM"
    lgdt [evil_gdt_pointer]         ; privileged: the monitor emulates it, and looks at it
    mov ax, BEYOND_SEL
    mov fs, ax
    print "   fs based at 0x00400000 (past my RAM), [fs:0] reads "
    mov eax, [fs:0]
    call print_hex32
    call newline
    mov ax, WINDOW_SEL
    mov gs, ax
    mov dword [gs:8], PATTERN       ; a write through a segment into the monitor's window
    print "   gs based at 0xFFC00000, after writing the pattern [gs:8] reads "
    mov eax, [gs:8]
    call print_hex32
    call newline
    mov ax, KERNEL_DS
    mov fs, ax
    mov gs, ax
    call gdt_install                ; back to the library's own, honest GDT
    lidt [evil_idt_pointer]         ; an IDT in the monitor's window...
    lidt [null_idt_pointer]         ; ...and gone again before anything could use it
    println "   (and an IDT at 0xFFC10000, for a moment)"

; ---------------------------------------------------------------------------- 6. ports
    println "6. ports of devices I do not have:"
    mov ebx, port_list
.port:
    movzx edx, word [ebx]
    print "   in "
    mov eax, edx
    call print_hex16
    print " = 0x"
    inb dx
    call print_hex_byte
    call newline
    add ebx, 2
    cmp ebx, port_list_end
    jb .port
    outb 0x1F7, 0xEC                ; IDE: "identify the disk" (there is none)
    outb 0x70, 0x8F                 ; CMOS: select the shutdown status byte...
    outb 0x71, 0x00                 ; ...and clear it
    outb 0xCF8, 0x00                ; PCI configuration address (a byte of it)
    println "   out 0x1F7 <- 0xEC (IDE), 0x70/0x71 (CMOS), 0xCF8 (PCI): nothing happened"

; ---------------------------------------------------------------------------- 7. nowhere
    println "7. and now a jump to 0xDEADBEEF, outside my RAM. Goodbye."
    mov eax, 0xDEADBEEF
    jmp eax

; print_hex_byte - print AL as two hex digits (no 0x).
print_hex_byte:
    push eax
    push ecx
    mov ecx, 2
.digit:
    rol al, 4
    push eax
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe .print
    add al, 'A' - '9' - 1
.print:
    call putc
    pop eax
    loop .digit
    pop ecx
    pop eax
    ret

; ---------------------------------------------------------------------------- data

align 4
ram_end:        dd 0
probe_list:                         ; addresses for part 1 (0: the first byte past RAM)
    dd 0
    dd 0x00400000 + 0x1000          ; a page further
    dd 0x01000000                   ; 16 MiB: in host RAM, another VM's slice lies about here
    dd 0x03FFFFFC                   ; the last dword of a 64 MiB host RAM
    dd 0x80000000
    dd 0xC0000000
probe_list_end:

port_list:                          ; ports for part 6: no device of mine answers them
    dw 0x378, 0x1F0, 0x2F8, 0x1F7, 0x3E8, 0x278  ; LPT1, IDE, COM2, IDE status, COM3, LPT2
port_list_end:

gdtr_seen:      times 6 db 0        ; what SGDT stores: limit (2 bytes), base (4)

; A GDT like the library's, plus two data segments aimed outside my RAM.
BEYOND_SEL      equ 0x30
WINDOW_SEL      equ 0x38
align 8
evil_gdt:
    dq 0
    dq 0x00CF9B000000FFFF           ; 0x08 kernel code
    dq 0x00CF93000000FFFF           ; 0x10 kernel data
    dq 0x00CFFB000000FFFF           ; 0x18 user code
    dq 0x00CFF3000000FFFF           ; 0x20 user data
    dq 0                            ; 0x28 (the library puts its TSS here)
    dq 0x00CF93400000FFFF           ; 0x30 data, base 0x00400000: just past 4 MiB of RAM
    dq 0xFFCF93C00000FFFF           ; 0x38 data, base 0xFFC00000: the monitor's window
evil_gdt_end:
evil_gdt_pointer:
    dw evil_gdt_end - evil_gdt - 1
    dd evil_gdt
evil_idt_pointer:
    dw 0x7FF
    dd 0xFFC10000
null_idt_pointer:
    dw 0
    dd 0
