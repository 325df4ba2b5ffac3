; segment_bases.asm - per-CPU data through FS and GS, as test kernels and older xv6 keep it:
; data segments whose base is not 0, used by ordinary instructions (the CPU adds the base)
; and by instructions a monitor emulates (LGDT, LIDT, LMSW with a GS operand: the monitor
; must add it too). Their effects are checked without SGDT, SIDT or SMSW, which show the
; monitor's own registers under trap-and-emulate (its holes). One pass/fail line per check
; on COM1; the exit status (port 0xF4) is the number of failures. The same under QEMU.
%include "multiboot.inc"
%include "report.inc"

PERCPU_GS equ 0x18                              ; base percpu, limit 0xFF
PERCPU_FS equ 0x20                              ; base percpu + 0x40, limit 0x3F

entry:
    mov esp, stack_top
    mov eax, percpu                             ; the per-CPU segments' bases, then LGDT
    mov [gdt + PERCPU_GS + 2], ax
    add eax, 0x40
    mov [gdt + PERCPU_FS + 2], ax
    shr eax, 16
    mov [gdt + PERCPU_FS + 4], al
    mov [gdt + PERCPU_FS + 7], ah
    mov eax, percpu
    shr eax, 16
    mov [gdt + PERCPU_GS + 4], al
    mov [gdt + PERCPU_GS + 7], ah
    mov eax, percpu2                            ; the second GDT: GS's base is percpu2
    mov [gdt2 + PERCPU_GS + 2], ax
    shr eax, 16
    mov [gdt2 + PERCPU_GS + 4], al
    mov [gdt2 + PERCPU_GS + 7], ah
    mov eax, [gdt + PERCPU_FS]                  ; FS as in the first
    mov [gdt2 + PERCPU_FS], eax
    mov eax, [gdt + PERCPU_FS + 4]
    mov [gdt2 + PERCPU_FS + 4], eax
    lgdt [gdt_pointer]
    FLAT_SEGMENTS
    mov ax, PERCPU_GS
    mov gs, ax
    mov ax, PERCPU_FS
    mov fs, ax

    cmp dword [gs:4], 0x11223344                ; percpu + 4
    CHECK "gs: load from its base"
    mov dword [gs:8], 0xCAFEF00D
    cmp dword [percpu + 8], 0xCAFEF00D
    CHECK "gs: store at its base"
    mov eax, [fs:0]                             ; percpu + 0x40
    cmp eax, 0x55667788
    CHECK "fs: load from its base"
    mov ebx, 4
    cmp dword [gs:ebx + 0x3C], 0x55667788       ; base + index + displacement
    CHECK "gs: base plus register plus displacement"

    mov eax, cr0                                ; a trapping MOV, its result through GS
    mov [gs:0x20], eax
    mov ebx, cr0
    cmp [percpu + 0x20], ebx
    CHECK "cr0 stored through gs"
    lgdt [gs:gdt2_pointer - percpu]             ; emulated under a monitor: the base too
    mov ax, PERCPU_GS                           ; the second GDT's GS starts at percpu + 0x80
    mov gs, ax
    cmp dword [gs:0], 0x99AABBCC
    CHECK "lgdt through gs"
    GATE 0x30, on_int, 0x8E
    lidt [gs:idt_pointer - percpu2]
    int 0x30                                    ; through the IDT that LIDT loaded
    cmp byte [interrupted], 1
    CHECK "lidt through gs"
    mov eax, cr0                                ; the machine status word with TS set
    or eax, 1 << 3
    mov [gs:0x30], ax
    lmsw [gs:0x30]
    mov ebx, cr0
    clts
    test ebx, 1 << 3
    setnz al
    cmp al, 1
    CHECK "lmsw through gs"
    mov word [0x40], 0                          ; SGDT stores at GS's base + 0x40, not at 0x40
    mov word [gs:0x40], 0
    sgdt [gs:0x40]                              ; (it shows the monitor's GDTR under trap:
    cmp word [0x40], 0                          ; where it lands is checked, not what)
    jne .sgdt
    cmp word [percpu2 + 0x40], 0
    setne al
    cmp al, 1
.sgdt:
    CHECK "sgdt stores through gs"
    push dword [gs:0]                           ; a stack push of a GS operand
    pop eax
    cmp eax, 0x99AABBCC
    CHECK "push of a gs operand"

    mov al, [failures]
    out 0xf4, al                                ; QEMU's isa-debug-exit (vmlab has one too)
    cli
    hlt

on_int:
    mov byte [interrupted], 1
    iretd

section .data
align 8
gdt:        dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF  ; ring 0 code, data: flat
            dq 0x00409200000000FF                         ; GS: bytes 0-0xFF of percpu
            dq 0x004092000000003F                         ; FS: 0x40 bytes from percpu + 0x40
gdt_pointer:
    dw 5 * 8 - 1
    dd gdt
align 16
percpu:                                         ; the per-CPU area
    dd 0, 0x11223344, 0, 0
gdt2_pointer:                                   ; percpu + 0x10: LGDT's operand
    dw 5 * 8 - 1
    dd gdt2
    times 0x40 - ($ - percpu) db 0
    dd 0x55667788                               ; percpu + 0x40: FS's first dword
    times 0x80 - ($ - percpu) db 0
percpu2:                                        ; percpu + 0x80: GS's base in the second GDT
    dd 0x99AABBCC
idt_pointer:                                    ; LIDT's operand
    dw 0x31 * 8 - 1
    dd idt
    times 0x100 - ($ - percpu) db 0
align 8
gdt2:       dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF  ; as gdt, but GS at percpu2
            dq 0x00409200000000FF
            dq 0x004092000000003F
interrupted: db 0
load_end:

section .bss
alignb 8
idt:        resq 0x31
alignb 16
    resb 4096
stack_top:
bss_end:
