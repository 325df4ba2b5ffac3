; sensitive.asm - every sensitive-but-unprivileged x86 instruction, run in ring 0, and what
; each one shows the kernel.
;
; What it demonstrates: Robin and Irvine (USENIX Security 2000) listed the Pentium
; instructions that read or depend on privileged state but do not fault when run outside
; ring 0: SGDT, SIDT, SLDT, SMSW, PUSHF, POPF, LAR, LSL, VERR, VERW, POP and PUSH of a
; segment register, far CALL, far JMP, INT n, far RET, STR, and MOV to or from a segment
; register. A trap-and-emulate monitor never gets control on them, so in a deprivileged
; kernel they silently show (or act on) the real CPU state instead of the virtual one. This
; kernel runs each of them and prints, one line per probe, the value it produced.
;
; Everything printed is determined by what this kernel set up itself - its own GDT (with a
; TSS, loaded with LTR), its own IDT, flags it loaded itself - so any correct machine prints
; the same lines. The kernel also knows what bare metal gives; where a value differs it says
; "(bare metal: ...)" after it, and it exits with the number of lines that differ.
;
; What to expect:
;   native - every line plain, "lines that differ from bare metal: 0", exit status 0.
;   trap   - the kernel runs in ring 1 on the monitor's shadow tables, and many lines
;            differ: SGDT/SIDT/STR show the monitor's tables and TSS; SMSW the monitor's
;            CR0 bits; PUSHFD shows IF = 1 although the kernel cleared it, and IOPL 0 although
;            it loaded 3 (POPFD in ring 1 silently ignores both); LAR shows DPL 1 in the
;            compressed kernel descriptors and user code marked not present, and refuses the
;            TSS (DPL 0 < CPL 1); LSL refuses the TSS; a selector with RPL 1 that ring 0
;            must not use is accepted by LAR, LSL, VERR and VERW; CS and SS read with
;            RPL 1 (PUSH, MOV, the CS a far CALL pushes, CS after far JMP and far RET); the
;            interrupt handler's own PUSHFD shows IF = 1. 26 of 47 lines differ, and 26 is
;            the exit status. What stays right is worth a look too: SLDT (no LDT anywhere),
;            VERR/VERW on the ordinary selectors, DS loads and reads, and the frame INT n
;            pushes - the monitor delivers INT through the kernel's virtual IDT itself.
;   bt     - every line as native, exit status 0: the translator rewrites each of these.
;   pv     - the unmodified build: as trap (26). The paravirtual build (-DPARAVIRT) is the
;            port: each probe goes through a vmlab.inc macro that becomes a hypercall, the
;            monitor answers from the kernel's own tables and virtual registers, and every
;            line is as native, exit status 0. Left as they are (no hypercall needed): the
;            DS loads and reads, far JMP (the CS read after it is ported), POP SS, MOV SS and
;            far RET (privileged at CPL 1: they trap and are emulated, as under trap).
;
; Each probe goes through a vmlab.inc macro (store_table, read_ldtr, read_tr, read_msw,
; load_flags, read_flags, descriptor, push_selector, read_cs, read_ss, far_call,
; irq_disable, irq_enable, interrupt_return). Built as it is, each macro is the bare
; instruction named in the comment beside it: that is what is examined.

bits 32
org 0x100000

%include "vmlab.inc"

PROBE_VECTOR    equ 0x30            ; the software interrupt probed with INT n
KERNEL_DS_RPL1  equ KERNEL_DS | 1   ; our kernel data selector, asking for privilege 1

; EFLAGS images loaded with POPFD: OF, SF, ZF, AF, PF, CF set (so that the arithmetic flags
; are seen to survive), plus the always-one bit 1, then IF and IOPL on top.
FLAGS_ARITH     equ 0x800 | 0x80 | 0x40 | 0x10 | 0x04 | 0x01 | EFLAGS_BASE   ; 0x8D7
FLAGS_IF_ON     equ FLAGS_ARITH | EFLAGS_IF                                  ; 0xAD7
FLAGS_IOPL3     equ FLAGS_ARITH | 0x3000                                     ; 0x38D7
FLAGS_CMP_EQUAL equ 0x40 | 0x04 | EFLAGS_BASE   ; after `cmp eax, eax`: ZF, PF; 0x046

start:
    println "sensitive: the x86 instructions that are sensitive but not privileged, in ring 0"

    ; Make the machine ours: our GDT, our TSS (LTR), our IDT with a gate for INT 0x30, and
    ; no device interrupts at all (every IRQ masked), so that no line depends on timing.
    call gdt_install
    mov eax, esp
    call tss_install
    call idt_install_exceptions
    set_gate PROBE_VECTOR, probe_interrupt, INTERRUPT_GATE
    call idt_load
    mov ax, 0xFFFF
    call pic_remap
    println "own GDT, TSS and IDT loaded; every IRQ masked"
    call newline

    ; ------------------------------------------------------------ the descriptor table registers
    ; SGDT and SIDT store the 6 bytes LGDT and LIDT loaded: the limit, then the base.
    print "sgdt                             base "
    store_table TABLE_GDT, table_image ; sgdt [table_image]
    mov eax, [table_image + 2]
    mov edx, gdt
    call hex32_value
    print ", limit "
    movzx eax, word [table_image]
    mov edx, gdt_end - gdt - 1
    call hex16_value
    call end_line

    print "sidt                             base "
    store_table TABLE_IDT, table_image ; sidt [table_image]
    mov eax, [table_image + 2]
    mov edx, idt
    call hex32_value
    print ", limit "
    movzx eax, word [table_image]
    mov edx, idt_end - idt - 1
    call hex16_value
    call end_line

    print "sldt                             "
    xor eax, eax
    read_ldtr                       ; sldt ax: we never loaded an LDT, the null selector
    xor edx, edx
    call hex16_value
    call end_line

    print "str                              "
    xor eax, eax
    read_tr                         ; str ax: the TSS selector our LTR loaded
    mov edx, TSS_SEL
    call hex16_value
    call end_line

    print "smsw                             "
    xor eax, eax
    read_msw                        ; smsw ax: CR0 bits 0-15, PE and ET as the loader left CR0
    mov edx, 0x0011
    call hex16_value
    call end_line

    ; ------------------------------------------------------------ PUSHFD / POPFD
    ; Load EFLAGS with POPFD, read it straight back with PUSHFD. In ring 0 POPFD may change
    ; IF and IOPL; every IRQ is masked, so turning IF on for a moment is harmless.
    print "popfd 0x00000AD7, pushfd         "
    load_flags FLAGS_IF_ON          ; push dword FLAGS_IF_ON ; popfd
    read_flags                      ; pushfd ; pop eax
    mov edx, FLAGS_IF_ON
    call flags_value
    call end_line

    print "popfd 0x000008D7, pushfd         "
    load_flags FLAGS_ARITH          ; IF off again
    read_flags
    mov edx, FLAGS_ARITH
    call flags_value
    call end_line

    print "popfd 0x000038D7, pushfd         "
    load_flags FLAGS_IOPL3          ; I/O privilege level 3
    read_flags
    mov edx, FLAGS_IOPL3
    call flags_value
    call end_line

    load_flags EFLAGS_BASE          ; back to IOPL 0, IF 0, arithmetic flags clear

    ; ------------------------------------------------------------ LAR, LSL, VERR, VERW
    ; Each on the selectors in probe_rows. LAR loads the access rights (descriptor bytes 5
    ; and 6, masked), LSL the segment limit; VERR/VERW only say (in ZF) whether the segment
    ; could be read / written from here. Each refuses (ZF = 0) a descriptor the current
    ; privilege level - or the selector's RPL - may not look at.
    mov esi, probe_rows
.lar:
    mov edi, lar_text
    call row_start
    mov ebx, [esi + ROW_SELECTOR]
    xor eax, eax
    descriptor DESC_LAR             ; lar eax, bx
    setz cl                         ; ZF = 1: the CPU accepted the selector
    mov edx, [esi + ROW_LAR]
    mov bl, [esi + ROW_LAR_OK]
    call accepted_value
    call end_line
    add esi, ROW_SIZE
    cmp esi, probe_rows_end
    jb .lar

    mov esi, probe_rows
.lsl:
    mov edi, lsl_text
    call row_start
    mov ebx, [esi + ROW_SELECTOR]
    xor eax, eax
    descriptor DESC_LSL             ; lsl eax, bx
    setz cl
    mov edx, [esi + ROW_LSL]
    mov bl, [esi + ROW_LSL_OK]
    call accepted_value
    call end_line
    add esi, ROW_SIZE
    cmp esi, probe_rows_end
    jb .lsl

    mov esi, probe_rows
.verr:
    mov edi, verr_text
    call row_start
    mov ebx, [esi + ROW_SELECTOR]
    descriptor DESC_VERR            ; verr bx
    setz cl
    mov bl, [esi + ROW_VERR]
    call yes_no_value
    call end_line
    add esi, ROW_SIZE
    cmp esi, probe_rows_end
    jb .verr

    mov esi, probe_rows
.verw:
    mov edi, verw_text
    call row_start
    mov ebx, [esi + ROW_SELECTOR]
    descriptor DESC_VERW            ; verw bx
    setz cl
    mov bl, [esi + ROW_VERW]
    call yes_no_value
    call end_line
    add esi, ROW_SIZE
    cmp esi, probe_rows_end
    jb .verw

    ; ------------------------------------------------------------ PUSH and POP of segment registers
    ; A 32-bit PUSH of a segment register takes 4 bytes of stack; only the low 16 are the
    ; selector (some CPUs leave the upper half of the slot alone), so only they are printed.
    print "push cs                          "
    push_selector REG_CS            ; push cs
    pop eax
    mov edx, KERNEL_CS
    call hex16_value
    call end_line

    print "push ss                          "
    push_selector REG_SS            ; push ss
    pop eax
    mov edx, KERNEL_DS
    call hex16_value
    call end_line

    print "push ds                          "
    push ds
    pop eax
    mov edx, KERNEL_DS
    call hex16_value
    call end_line

    print "pop ds (0x0023), then mov ax, ds "
    push dword USER_DS              ; ring 0 may load a ring 3 data segment
    pop ds
    mov ax, ds
    push dword KERNEL_DS            ; and back: print reads its text through DS
    pop ds
    mov edx, USER_DS
    call hex16_value
    call end_line

    print "pop ss (0x0010), then mov ax, ss "
    push dword KERNEL_DS
    pop ss                          ; SS is strict: selector RPL = descriptor DPL = CPL,
    read_ss                         ; so in ring 1 this POP faults (and gets emulated)
    mov edx, KERNEL_DS
    call hex16_value
    call end_line

    ; ------------------------------------------------------------ MOV to and from segment registers
    print "mov ax, cs                       "
    read_cs                         ; mov ax, cs: its low two bits are the CPL
    mov edx, KERNEL_CS
    call hex16_value
    call end_line

    print "mov ax, ss                       "
    read_ss                         ; mov ax, ss
    mov edx, KERNEL_DS
    call hex16_value
    call end_line

    print "mov ax, ds                       "
    mov ax, ds
    mov edx, KERNEL_DS
    call hex16_value
    call end_line

    print "mov ds, 0x0023, then mov ax, ds  "
    mov bx, USER_DS
    mov ds, bx
    mov ax, ds
    mov bx, KERNEL_DS
    mov ds, bx
    mov edx, USER_DS
    call hex16_value
    call end_line

    print "mov ss, 0x0010, then mov ax, ss  "
    mov bx, KERNEL_DS
    mov ss, bx
    read_ss
    mov edx, KERNEL_DS
    call hex16_value
    call end_line

    ; ------------------------------------------------------------ far CALL, far RET, far JMP
    ; A far CALL pushes CS and EIP; the routine looks at the CS it was given.
    print "call 0x0008:far, CS pushed       "
    far_call KERNEL_CS, far_routine ; call KERNEL_CS:far_routine
    mov eax, [far_pushed_cs]
    mov edx, KERNEL_CS
    call hex16_value
    call end_line

    ; A far RET to a frame built by hand: from ring 0 to ring 0, through the CS in the frame.
    print "retf to 0x0008, then mov ax, cs  "
    push dword KERNEL_CS
    push dword .returned
    retf
.returned:
    read_cs
    mov edx, KERNEL_CS
    call hex16_value
    call end_line

    print "jmp 0x0008:next, then mov ax, cs "
    jmp KERNEL_CS:.jumped
.jumped:
    read_cs
    mov edx, KERNEL_CS
    call hex16_value
    call end_line

    ; ------------------------------------------------------------ INT n
    ; A software interrupt through our own IDT gate (an interrupt gate: IF cleared on entry).
    ; The handler records the CS and EFLAGS in the frame the CPU pushed, and its own EFLAGS.
    ; Once with interrupts off, once on; CMP sets known arithmetic flags just before.
    print "int 0x30, IF off: frame CS "
    irq_disable                     ; cli
    cmp eax, eax
    int PROBE_VECTOR
    mov edx, FLAGS_CMP_EQUAL
    call interrupt_values
    call end_line

    print "int 0x30, IF on:  frame CS "
    irq_enable                      ; sti: nothing can arrive, every IRQ is masked
    cmp eax, eax
    int PROBE_VECTOR
    irq_disable
    mov edx, FLAGS_CMP_EQUAL | EFLAGS_IF
    call interrupt_values
    call end_line

    ; ------------------------------------------------------------ the verdict
    call newline
    print "lines that differ from bare metal: "
    mov eax, [differing_lines]
    call print_dec32
    print " of "
    mov eax, [lines]
    call print_dec32
    call newline
    mov eax, [differing_lines]      ; exit status: 0 = all as on bare metal
    jmp exit

; ---------------------------------------------------------------------------- probe targets

; far_routine - reached by a far CALL: [esp] = EIP, [esp + 4] = CS of the caller.
far_routine:
    push eax
    mov eax, [esp + 8]
    mov [far_pushed_cs], eax
    pop eax
    retf

; probe_interrupt - INT 0x30. Frame: [esp] EIP, [esp + 4] CS, [esp + 8] EFLAGS.
probe_interrupt:
    push eax
    read_flags                      ; first of all: the flags this handler runs with
    mov [handler_flags], eax
    mov eax, [esp + 8]
    mov [frame_cs], eax
    mov eax, [esp + 12]
    mov [frame_flags], eax
    pop eax
    interrupt_return                ; iretd

; ---------------------------------------------------------------------------- printing values
; Each *_value routine prints what the CPU gave and, when bare metal gives something else,
; "(bare metal: ...)" after it; end_line finishes the line and counts it if it differed.

; hex32_value - EAX seen, EDX what bare metal gives.
hex32_value:
    call print_hex32
    cmp eax, edx
    je .same
    print " (bare metal: "
    push eax
    mov eax, edx
    call print_hex32
    pop eax
    print ")"
    mov byte [line_differs], 1
.same:
    ret

; hex16_value - AX seen, DX what bare metal gives (the upper halves are ignored).
hex16_value:
    push eax
    push edx
    movzx eax, ax
    movzx edx, dx
    call print_hex16
    cmp eax, edx
    je .same
    print " (bare metal: "
    mov eax, edx
    call print_hex16
    print ")"
    mov byte [line_differs], 1
.same:
    pop edx
    pop eax
    ret

; flags_value - EFLAGS image EAX seen (EDX: bare metal), then its IF and IOPL spelt out.
flags_value:
    call hex32_value
    push eax
    print "  IF "
    shr eax, 9
    and eax, 1
    call print_dec32
    print ", IOPL "
    mov eax, [esp]
    shr eax, 12
    and eax, 3
    call print_dec32
    pop eax
    ret

; accepted_value - after LAR or LSL. CL = 1 if the CPU accepted the selector, EAX = what it
; loaded; BL = 1 if bare metal accepts it, EDX = what bare metal loads.
accepted_value:
    test cl, cl
    jz .refused
    call print_hex32
    jmp .compare
.refused:
    print "refused"
.compare:
    cmp cl, bl
    jne .differs
    test cl, cl
    jz .same                        ; refused on both
    cmp eax, edx
    je .same
.differs:
    print " (bare metal: "
    test bl, bl
    jz .bare_refused
    mov eax, edx
    call print_hex32
    jmp .close
.bare_refused:
    print "refused"
.close:
    print ")"
    mov byte [line_differs], 1
.same:
    ret

; yes_no_value - after VERR or VERW. CL = 1 if the CPU said yes, BL = what bare metal says.
yes_no_value:
    mov al, cl
    call print_yes_no
    cmp cl, bl
    je .same
    print " (bare metal: "
    mov al, bl
    call print_yes_no
    print ")"
    mov byte [line_differs], 1
.same:
    ret

print_yes_no:                       ; AL = 1: "yes", 0: "no"
    test al, al
    jz .no
    print "yes"
    ret
.no:
    print "no"
    ret

; interrupt_values - finish an INT line from what probe_interrupt recorded. EDX = the
; EFLAGS bare metal pushes; the handler itself runs with the same flags minus IF.
interrupt_values:
    push edx
    mov eax, [frame_cs]
    mov edx, KERNEL_CS
    call hex16_value
    print " EFLAGS "
    mov eax, [frame_flags]
    mov edx, [esp]
    call hex32_value
    print ", handler pushfd "
    mov eax, [handler_flags]
    pop edx
    and edx, ~EFLAGS_IF             ; an interrupt gate clears IF
    call hex32_value
    ret

; row_start - print EDI (the mnemonic) and the selector and description of the row at ESI.
row_start:
    push eax
    push esi
    mov eax, [esi + ROW_SELECTOR]
    mov esi, [esi + ROW_NAME]
    xchg esi, edi
    call puts                       ; the mnemonic
    call print_hex16                ; the selector
    mov esi, edi
    call puts                       ; its description
    pop esi
    pop eax
    ret

; end_line - end a probe's line; count it, and count it as differing if it did.
end_line:
    call newline
    inc dword [lines]
    cmp byte [line_differs], 0
    je .same
    inc dword [differing_lines]
    mov byte [line_differs], 0
.same:
    ret

; ---------------------------------------------------------------------------- data

; The selectors LAR, LSL, VERR and VERW are tried on, and what bare metal (CPL 0) answers.
; LAR gives the descriptor's second dword AND 0x00F0FF00: flags nibble, access byte.
ROW_SELECTOR    equ 0
ROW_NAME        equ 4
ROW_LAR         equ 8               ; value, if accepted
ROW_LSL         equ 12
ROW_LAR_OK      equ 16              ; 1 = accepted (ZF = 1)
ROW_LSL_OK      equ 17
ROW_VERR        equ 18              ; 1 = readable from here
ROW_VERW        equ 19              ; 1 = writable from here
ROW_SIZE        equ 20
REFUSED         equ 0               ; the value field of a refused probe (not printed)

%macro probe_row 8                  ; selector, name, LAR, LSL, LAR ok, LSL ok, VERR, VERW
    dd %1, %2, %3, %4
    db %5, %6, %7, %8
%endmacro

probe_rows:
    ;         selector        name       LAR         LSL         ok ok  R  W
    probe_row KERNEL_CS,      name_kcs,  0x00C09B00, 0xFFFFFFFF, 1, 1,  1, 0
    probe_row KERNEL_DS,      name_kds,  0x00C09300, 0xFFFFFFFF, 1, 1,  1, 1
    probe_row USER_CS,        name_ucs,  0x00C0FB00, 0xFFFFFFFF, 1, 1,  1, 0
    probe_row USER_DS,        name_uds,  0x00C0F300, 0xFFFFFFFF, 1, 1,  1, 1
    probe_row TSS_SEL,        name_tss,  0x00008B00, 0x00000067, 1, 1,  0, 0  ; busy since LTR
    probe_row KERNEL_DS_RPL1, name_rpl1, REFUSED,    REFUSED,    0, 0,  0, 0  ; DPL 0 < RPL 1
probe_rows_end:

lar_text:       db "lar  ", 0
lsl_text:       db "lsl  ", 0
verr_text:      db "verr ", 0
verw_text:      db "verw ", 0
name_kcs:       db " kernel code          ", 0
name_kds:       db " kernel data          ", 0
name_ucs:       db " user code            ", 0
name_uds:       db " user data            ", 0
name_tss:       db " our TSS              ", 0
name_rpl1:      db " kernel data, RPL 1   ", 0

table_image:    dw 0                ; what SGDT/SIDT store: limit,
                dd 0                ;                        base
far_pushed_cs:  dd 0
frame_cs:       dd 0
frame_flags:    dd 0
handler_flags:  dd 0
line_differs:   db 0
align 4
lines:          dd 0
differing_lines: dd 0
