; redpill.asm - can a kernel tell that it runs in a virtual machine? Ask the CPU.
;
; What it demonstrates: the x86 has instructions that read privileged state but are not
; themselves privileged - they run at any CPL without faulting. A trap-and-emulate monitor
; never sees them, so they show the guest the *real* state of the CPU, which is the
; monitor's, not the guest's. (Popek and Goldberg's theorem says such "sensitive but
; unprivileged" instructions make an architecture impossible to virtualize by trapping
; alone; Robin and Irvine listed 17 of them on the Pentium; Rutkowska's "Red Pill" used SIDT.)
;
; The kernel installs its own GDT (with a TSS) and IDT, so it knows exactly what the CPU
; should hold, then reads each back with an unprivileged instruction:
;   mov ax, cs   the low two bits of CS are the privilege level the CPU runs us at
;   sgdt, sidt   where the CPU's descriptor tables are
;   smsw         the low 16 bits of CR0, compared with what the privileged `mov eax, cr0` says
;   str          the CPU's task register
;
; What to expect:
;   native - every value is what the kernel set; exit status 0.
;   trap   - every check differs: CS has RPL 1 (the monitor runs the kernel in ring 1),
;            SGDT and SIDT show the monitor's tables at 0xFFC0xxxx, SMSW shows the monitor's
;            CR0 bits (NE, bit 5) while the trapped `mov eax, cr0` shows the guest's,
;            STR shows the monitor's TSS selector. Exit status 5: the number of checks that
;            gave the monitor away.
;   pv     - the unmodified build gives the same 5 differences. The paravirtual build
;            (-DPARAVIRT) is ported: each read goes through a vmlab.inc macro that becomes a
;            hypercall, and the monitor answers with the guest's own virtual state, as bare
;            metal would: every check the same, exit status 0.
;
; Each read goes through a vmlab.inc macro (read_cs, store_table, read_msw, read_tr); built as
; it is, the macro is the bare instruction named in its comment - that is what is examined.

bits 32
org 0x100000

%include "vmlab.inc"

start:
    println "redpill: can a kernel tell that it is running in a virtual machine?"

    ; Make the machine ours: our GDT, our TSS, our IDT. (Our stack stays where it is.)
    call gdt_install
    mov eax, esp
    call tss_install
    call idt_install_exceptions
    call idt_load
    println "I loaded my own GDT, TSS and IDT. Now I ask the CPU what it holds."
    call newline

    ; 1. The privilege level we run at: the RPL of CS (the CPU keeps it equal to the CPL).
    print "mov ax, cs  CS  = "
    xor eax, eax
    read_cs                         ; mov ax, cs
    mov ebx, eax
    call print_hex16
    print ", RPL "
    and eax, 3
    call print_dec32
    call newline
    print "            I loaded "
    mov eax, KERNEL_CS
    call print_hex16
    println ", RPL 0"
    cmp ebx, KERNEL_CS
    mov esi, why_cs
    call verdict

    ; 2. Where the GDT is: SGDT stores the 6 bytes LGDT loaded, limit then base.
    print "sgdt        GDT at "
    store_table TABLE_GDT, seen_table ; sgdt [seen_table]
    call print_seen_table
    call newline
    print "            I loaded "
    mov esi, gdt_pointer
    call print_table
    call newline
    mov esi, gdt_pointer
    call compare_table
    mov esi, why_table
    call verdict

    ; 3. Where the IDT is: the same with SIDT.
    print "sidt        IDT at "
    store_table TABLE_IDT, seen_table ; sidt [seen_table]
    call print_seen_table
    call newline
    print "            I loaded "
    mov esi, idt_pointer
    call print_table
    call newline
    mov esi, idt_pointer
    call compare_table
    mov esi, why_table
    call verdict

    ; 4. The machine status word: the low half of CR0. Reading CR0 itself is privileged;
    ;    SMSW, its 286 ancestor, is not. Both should tell the same story.
    print "smsw        MSW = "
    xor eax, eax
    read_msw                        ; smsw ax
    mov ebx, eax
    call print_hex16
    call newline
    print "            mov eax, cr0 says "
    mov eax, cr0
    and eax, 0xFFFF
    call print_hex16
    call newline
    cmp eax, ebx
    mov esi, why_msw
    call verdict

    ; 5. The task register: which TSS the CPU uses for ring changes.
    print "str         TR  = "
    xor eax, eax
    read_tr                         ; str ax
    mov ebx, eax
    call print_hex16
    call newline
    print "            I loaded "
    mov eax, TSS_SEL
    call print_hex16
    call newline
    cmp ebx, TSS_SEL
    mov esi, why_tr
    call verdict

    call newline
    mov eax, [tells]
    test eax, eax
    jnz .virtual
    println "verdict: nothing gave a monitor away. As far as I can tell, this is bare metal."
    mov al, EXIT_SUCCESS
    jmp exit
.virtual:
    print "verdict: "
    call print_dec32
    println " of 5 checks differ: I am running in a virtual machine."
    mov eax, [tells]                ; exit status: how many checks gave the monitor away
    jmp exit

; verdict - print the outcome of one check. ZF = 1 if what the CPU holds is what we set
; (the caller's last CMP; CALL and MOV leave the flags alone). ESI = what a difference means.
verdict:
    jne .different
    println "            -> same"
    ret
.different:
    print "            -> DIFFERENT: "
    call puts
    call newline
    inc dword [tells]
    ret

; print_table - print the 6-byte table register image at ESI as "0x<base>, limit 0x<limit>".
print_seen_table:
    mov esi, seen_table
print_table:
    push eax
    mov eax, [esi + 2]
    call print_hex32
    print ", limit "
    movzx eax, word [esi]
    call print_hex16
    pop eax
    ret

; compare_table - ZF = 1 if seen_table holds the same base and limit as the image at ESI.
compare_table:
    push eax
    mov eax, [seen_table + 2]
    cmp eax, [esi + 2]
    jne .done
    mov ax, [seen_table]
    cmp ax, [esi]
.done:
    pop eax
    ret

why_cs:     db "the CPU does not run my kernel in ring 0", 0
why_table:  db "the CPU uses someone else's table", 0
why_msw:    db "the real CR0 is not the one I am shown", 0
why_tr:     db "the CPU uses someone else's task state segment", 0

tells:      dd 0                    ; checks that gave a monitor away
seen_table: dw 0                    ; what SGDT/SIDT stored: limit,
            dd 0                    ;                        base
