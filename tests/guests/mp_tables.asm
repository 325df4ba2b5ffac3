; mp_tables.asm - a multiboot kernel that finds the Intel MP tables the way xv6's mp.c does
; (the EBDA's first KiB, the last KiB of base memory, then 0xF0000-0xFFFFF), checks both
; checksums and prints every field a kernel uses, one entry a line, on COM1. Addresses and
; the table's total length are not printed (QEMU's SeaBIOS and vmlab place the tables in
; different spots of the F-segment), nor interrupt entries whose source bus is PCI (QEMU has
; PCI devices, vmlab none), so vmlab and `qemu-system-i386 -kernel` print the same.
; Exit status (port 0xF4, QEMU's isa-debug-exit): 0 if the tables were found and sound.
%include "multiboot.inc"

%macro PRINT 1+                                 ; print a string literal
    [section .data]
%%text: db %1, 0
    __?SECT?__
    mov esi, %%text
    call puts
%endmacro

%macro FIELD 3                                  ; PRINT %1, then the %3-byte field at [EBX + %2]
    PRINT %1
    mov eax, [ebx + %2]
    mov cl, %3
    call hex
%endmacro

entry:
    mov esp, stack_top
; --- find the floating pointer: 16-byte aligned "_MP_" with a zero byte sum ---------------------
    movzx eax, word [0x40E]                     ; the EBDA's segment (BDA)
    shl eax, 4
    mov ecx, 1024
    call search
    jnc found
    movzx eax, word [0x413]                     ; KiB of base memory: its last KiB
    shl eax, 10
    sub eax, 1024
    mov ecx, 1024
    call search
    jnc found
    mov eax, 0xF0000
    mov ecx, 0x10000
    call search
    jnc found
    PRINT "no MP floating pointer", 10
    jmp fail

found:                                          ; EBX = the floating pointer
    PRINT "floating pointer: checksum ok"
    FIELD ", length ", 8, 1
    FIELD ", spec rev ", 9, 1
    FIELD ", features ", 11, 4
    FIELD " ", 15, 1
    PRINT 10
    mov ebx, [ebx + 4]                          ; the configuration table
    cmp dword [ebx], 'PCMP'
    jne bad_table
    movzx ecx, word [ebx + 4]                   ; base table length, header included
    mov esi, ebx
    call byte_sum
    jnz bad_table
    PRINT "config table: PCMP, checksum ok"
    FIELD ", spec rev ", 6, 1
    PRINT ", oem '"
    lea esi, [ebx + 8]
    mov ecx, 8
    call putn
    PRINT "', product '"
    lea esi, [ebx + 16]
    mov ecx, 12
    call putn
    PRINT "'"
    FIELD ", oem table ", 28, 4
    FIELD ", local apic ", 36, 4
    FIELD ", extended length ", 40, 2
    PRINT 10
    movzx ebp, word [ebx + 34]                  ; the entry count
    add ebx, 44                                 ; the first entry
; --- the entries: processor 20 bytes, the others 8 -----------------------------------------------
next_entry:
    test ebp, ebp
    jz done
    dec ebp
    movzx eax, byte [ebx]
    cmp al, 4
    ja bad_entry
    jmp [kinds + eax * 4]

processor:
    FIELD "processor: apic id ", 1, 1
    FIELD ", version ", 2, 1
    FIELD ", flags ", 3, 1
    mov eax, 1
    push ebx
    cpuid
    pop ebx
    mov [signature], eax
    mov [features], edx
    PRINT ", signature "
    mov eax, [signature]
    cmp [ebx + 4], eax
    call same
    PRINT ", features "
    mov eax, [features]
    cmp [ebx + 8], eax
    call same
    PRINT 10
    add ebx, 20
    jmp next_entry

bus:
    FIELD "bus ", 1, 1
    PRINT ": '"
    lea esi, [ebx + 2]
    mov ecx, 6
    call putn
    PRINT "'", 10
    movzx eax, byte [ebx + 1]
    cmp dword [ebx + 2], 'PCI '
    jne .listed
    bts [pci_buses], eax                        ; its interrupt entries are not printed
.listed:
    add ebx, 8
    jmp next_entry

ioapic:
    FIELD "io apic: id ", 1, 1
    FIELD ", version ", 2, 1
    FIELD ", flags ", 3, 1
    FIELD ", address ", 4, 4
    PRINT 10
    add ebx, 8
    jmp next_entry

io_interrupt:
    movzx eax, byte [ebx + 4]
    bt [pci_buses], eax
    jc .skip
    PRINT "io interrupt"
    call interrupt
.skip:
    add ebx, 8
    jmp next_entry

local_interrupt:
    PRINT "local interrupt"
    call interrupt
    add ebx, 8
    jmp next_entry

interrupt:                                      ; the fields IO and local interrupt entries share
    FIELD ": type ", 1, 1
    FIELD ", flags ", 2, 2
    FIELD ", bus ", 4, 1
    FIELD " irq ", 5, 1
    FIELD " -> apic ", 6, 1
    FIELD " pin ", 7, 1
    PRINT 10
    ret

done:
    PRINT "end of table", 10
    xor al, al
    out 0xf4, al                                ; QEMU's isa-debug-exit (vmlab has one too)
    cli
    hlt
bad_table:
    PRINT "bad configuration table", 10
    jmp fail
bad_entry:
    PRINT "bad entry type", 10
fail:
    mov al, 1
    out 0xf4, al
    cli
    hlt

search:                                         ; CF clear and EBX = "_MP_" found in ECX bytes at EAX
    mov ebx, eax
    add eax, ecx
.try:
    cmp ebx, eax
    jae .none
    cmp dword [ebx], '_MP_'
    jne .on
    mov esi, ebx
    push ecx
    movzx ecx, byte [ebx + 8]                   ; length, in 16-byte paragraphs
    shl ecx, 4
    call byte_sum
    pop ecx
    jz .hit
.on:
    add ebx, 16
    jmp .try
.none:
    stc
    ret
.hit:
    clc
    ret

byte_sum:                                       ; ZF set if the ECX bytes at ESI sum to 0 (mod 256)
    xor dl, dl
.add:
    add dl, [esi]
    inc esi
    loop .add
    test dl, dl
    ret

same:                                           ; print "as cpuid" (ZF set) or "unlike cpuid"
    mov esi, matches
    jz .print
    mov esi, differs
.print:
    jmp puts

hex:                                            ; print the low CL bytes of EAX in hex
    movzx ecx, cl
    shl ecx, 3                                  ; bits
    ror eax, cl                                 ; the top nibble wanted first in the low bits
.digit:
    rol eax, 4
    push eax
    and eax, 0xF
    mov al, [digits + eax]
    call putc
    pop eax
    sub ecx, 4
    jnz .digit
    ret

putn:                                           ; print ECX bytes at ESI
    lodsb
    call putc
    loop putn
    ret

puts:                                           ; print the NUL-terminated string at ESI
    lodsb
    test al, al
    jz .end
    call putc
    jmp puts
.end:
    ret

putc:                                           ; print AL on COM1
    push edx
    push eax
    mov dx, 0x3fd
.wait:
    in al, dx
    test al, 0x20                               ; transmit holding register empty
    jz .wait
    pop eax
    mov dx, 0x3f8
    out dx, al
    pop edx
    ret

section .data
align 4
kinds:     dd processor, bus, ioapic, io_interrupt, local_interrupt
digits:    db "0123456789abcdef"
matches:   db "as cpuid", 0
differs:   db "unlike cpuid", 0
pci_buses: times 8 dd 0                         ; a bit per bus id
signature: dd 0                                 ; CPUID leaf 1's EAX and EDX
features:  dd 0
load_end:

section .bss
align 16
    resb 4096
stack_top:
bss_end:
