; bt_spaces.asm - two address spaces map different code at one virtual address, and the
; kernel switches between them; code is rewritten through a second mapping of its page;
; instruction fetches fault on pages not mapped yet; the timer interrupts it all.
;
; Binary translation translates kernel code by virtual address: each test here fails if a
; translation made in one address space ran in the other, if a store through an alias of a
; code page left an old translation in use, or if a fetch the page tables refuse crashed
; the monitor instead of giving the kernel its page fault.
;
; Both spaces identity-map 0-4 MiB (the kernel, its tables, the code frames). Above it, one
; page table each:
;   space A: CODE 0x400000 -> frame 0x300000 ("mov eax, 1; ret")
;            ALIAS 0x401000 -> frame 0x300000 again (writable: CODE's bytes, a second time)
;            0x402000, 0x404000 not present: the #PF handler maps page i to 0x300000 + i * 4 KiB
;            0x403000 -> frame 0x303000: an instruction at 0x403FFD straddles into 0x404000
;   space B: CODE 0x400000 -> frame 0x301000 ("mov eax, 2; ret")

bits 32
org 0x100000

%include "../../sample_guests/vmlab.inc"
%include "paging.inc"

PD_A        equ 0x200000
PD_B        equ 0x201000
PT_LOW      equ 0x202000
PT_A        equ 0x203000
PT_B        equ 0x204000
FRAMES      equ 0x300000            ; frame i of the demand-paged region
CODE        equ 0x400000
ALIAS       equ 0x401000
MISSING     equ 0x402000
STRADDLE    equ 0x403FFD
ROUNDS      equ 200
TICKS       equ 5
CR0_PG      equ 0x80000000

start:
    call idt_install_exceptions
    set_gate 14, page_fault, INTERRUPT_GATE
    set_gate IRQ0_VECTOR, timer, INTERRUPT_GATE
    call idt_load

    ; the code frames, copied from this image
    copy one, FRAMES, one_end - one
    copy two, FRAMES + 0x1000, two_end - two
    copy seven, FRAMES + 0x2000, seven_end - seven
    copy straddle, FRAMES + 0x3FFD, straddle_end - straddle

    identity_map PT_LOW, 0x3
    mov dword [PT_A], FRAMES | 0x3
    mov dword [PT_A + 4], FRAMES | 0x3
    mov dword [PT_A + 12], (FRAMES + 0x3000) | 0x3
    mov dword [PT_B], (FRAMES + 0x1000) | 0x3
    mov dword [PD_A], PT_LOW | 0x3
    mov dword [PD_A + 4], PT_A | 0x3
    mov dword [PD_B], PT_LOW | 0x3
    mov dword [PD_B + 4], PT_B | 0x3
    paging_on PD_A, CR0_PG
    println "paging on"

    ; 1. The same virtual address, two address spaces, switched back and forth.
    xor esi, esi
    xor edi, edi
    mov ecx, ROUNDS
.rounds:
    call in_a
    add esi, eax
    call in_b
    add edi, eax
    loop .rounds
    print "space A sums "
    mov eax, esi
    call print_hex32
    print ", space B sums "
    mov eax, edi
    call print_hex32
    call newline

    ; 2. Code rewritten through the other mapping of its frame.
    call in_a
    mov byte [ALIAS + 1], 3         ; "mov eax, 1" becomes "mov eax, 3"
    call CODE
    print "after a store through the alias, CODE gives "
    call print_hex32
    call newline

    ; 3. Fetches from pages not mapped: a call to one, an instruction straddling into one.
    call MISSING
    print "the missing page, mapped by the handler, gives "
    call print_hex32
    call newline
    call STRADDLE
    print "the straddling instruction gives "
    call print_hex32
    call newline

    ; 4. Timer interrupts while the spaces keep switching.
    mov ax, 0xFFFE                  ; IRQ 0 only
    call pic_remap
    mov ax, 5000
    call pit_start
    xor ebx, ebx                    ; wrong answers seen
    sti
.switching:
    call in_b
    cmp eax, 2
    je .b_ok
    inc ebx
.b_ok:
    call in_a
    cmp eax, 3
    je .a_ok
    inc ebx
.a_ok:
    cmp dword [ticks], TICKS
    jb .switching
    cli
    print "5 timer ticks while switching; wrong answers: "
    mov eax, ebx
    call print_hex32
    call newline
    mov al, EXIT_SUCCESS
    jmp exit

in_a:
    mov eax, PD_A
    mov cr3, eax
    jmp CODE
in_b:
    mov eax, PD_B
    mov cr3, eax
    jmp CODE

; #PF: map the missing page (space A's table) and run the faulting instruction again.
page_fault:
    push eax
    push ebx
    print_page_fault [esp + 8]
    mov eax, cr2
    shr eax, 12
    and eax, 0x3FF
    mov ebx, eax
    shl ebx, 12
    add ebx, FRAMES | 0x3
    mov [PT_A + eax * 4], ebx
    mov eax, cr2
    invlpg [eax]
    pop ebx
    pop eax
    add esp, 4                      ; the error code
    iretd

timer:
    push eax
    inc dword [ticks]
    send_eoi
    pop eax
    iretd

one:
    mov eax, 1
    ret
one_end:
two:
    mov eax, 2
    ret
two_end:
seven:
    mov eax, 7
    ret
seven_end:
straddle:
    mov eax, 0x11223344             ; 3 bytes on one page, 2 on the next
    ret
straddle_end:

ticks: dd 0
