; selfmod.asm - a kernel that rewrites its own code, and writes new code to run.
;
; What it demonstrates: on the x86, code is just bytes in memory. A kernel may store into
; its own instructions and run the new ones - the CPU has to notice (since the Pentium Pro
; it does, even for an instruction it has already fetched) - and real kernels do it: Linux
; patches its code at boot ("alternatives") and at run time ("static keys", ftrace), and
; JIT compilers (BPF) write fresh code into memory and call it. Nothing here is privileged
; or sensitive: it is a problem only for a monitor that keeps *copies* of the guest's code,
; like a binary translator with its translation cache.
;   (a) patched operands: a routine `mov eax, imm32 ; ret` whose immediate is rewritten
;       before every call, and a routine whose opcode byte is rewritten (add, sub, xor).
;   (b) generated code: routines written byte by byte into free RAM at 0x00200000, called,
;       then overwritten by a different routine and called again.
;   (c) data next to hot code: a routine that runs 5000 times and bumps counters that sit
;       in the same 4 KiB page as its own instructions.
;   (d) patching the very next instruction, in a loop: the store and the instruction it
;       changes are neighbours, so they are fetched (and translated) together.
; Every result is printed, folded into a checksum, and compared with the value known when
; this file was assembled.
;
; What to expect:
;   native - the eight results below, "checksum 0x2401853E" (computed at assembly time
;            from the expected results), "all results as expected"; exit status 0.
;   trap   - exactly the same text and status: the guest code runs directly on the CPU,
;            which sees every store. Only the console's IN and OUT trap.
;   bt     - exactly the same text and status, if the translator notices every store into
;            code it has translated: it must throw away (or check) the stale translations
;            before they run again. (a), (b) and (d) give a wrong result if it does not.
;            (c) is for adaptive binary translation: if the translator write-protects the
;            pages it translated, the counter stores in (c) fault thousands of times; a
;            translator that adapts stops translating that page's stores as traps.
;            (d) is the hard case: the store lands in the fragment that is executing.

bits 32
org 0x100000

%include "vmlab.inc"

GEN_BUFFER      equ 0x00200000      ; free RAM, 1 MiB above the kernel: our "JIT" area
HOT_CALLS       equ 5000            ; (c) how often the hot routine runs
NEXT_ROUNDS     equ 200             ; (d) how often the next instruction is patched

; x86 opcodes the generator in (b) and the patcher in (a) write
OP_MOV_EAX      equ 0xB8            ; mov eax, imm32
OP_ADD_EAX      equ 0x05            ; add eax, imm32
OP_MOV_ECX      equ 0xB9            ; mov ecx, imm32
OP_RET          equ 0xC3            ; ret
OP_ADD_RM       equ 0x01            ; add r/m32, r32  (with ModRM 0xD8: add eax, ebx)
OP_SUB_RM       equ 0x29            ; sub r/m32, r32
OP_XOR_RM       equ 0x31            ; xor r/m32, r32

; The results, as they must come out. The checksum folds them in this order:
; checksum = (checksum rol 5) xor result.
EXPECT_IMM      equ 11111111        ; 1 + 10 + 100 + ... + 10000000
EXPECT_OP       equ 1516            ; ((1000 + 500 - 200) xor 0xFF) + 1
EXPECT_GEN1     equ 385             ; 1^2 + 2^2 + ... + 10^2
EXPECT_GEN2     equ 500500          ; 1 + 2 + ... + 1000, by a generated loop
EXPECT_GEN3     equ 2870            ; 1^2 + ... + 20^2
EXPECT_HOT_N    equ HOT_CALLS
EXPECT_HOT_SUM  equ HOT_CALLS * (HOT_CALLS + 1) / 2
EXPECT_NEXT     equ NEXT_ROUNDS * (NEXT_ROUNDS + 1) / 2

%assign sum 0
%macro fold 1
  %assign sum (((sum << 5) | (sum >> 27)) & 0xFFFFFFFF) ^ (%1)
%endmacro
fold EXPECT_IMM
fold EXPECT_OP
fold EXPECT_GEN1
fold EXPECT_GEN2
fold EXPECT_GEN3
fold EXPECT_HOT_N
fold EXPECT_HOT_SUM
fold EXPECT_NEXT
EXPECT_CHECKSUM equ sum

; report "label", EXPECTED - print "label" and EAX in decimal, check and fold EAX.
%macro report 2
    print %1
    mov edx, %2
    call report_value
%endmacro

start:
    println "selfmod: a kernel that rewrites its own code and generates new code"
    call idt_install_exceptions     ; a wrong byte in generated code should panic loudly,
    call idt_load                   ; not wander off

    ; ------------------------------------------------------------ (a) patched operands
    ; The routine `patched_imm` is called eight times, each time with a new immediate
    ; stored into its first instruction. The CALL after the store is a branch: even a 486,
    ; which did not watch for stores into prefetched code, would fetch the new bytes.
    xor ebx, ebx                    ; the sum of what the routine returns
    xor esi, esi                    ; index into imm_values
.next_imm:
    mov eax, [imm_values + esi*4]
    mov [patched_imm + 1], eax      ; the imm32 of `mov eax, imm32` (opcode B8 is byte 0)
    call patched_imm
    add ebx, eax
    inc esi
    cmp esi, IMM_COUNT
    jb .next_imm
    mov eax, ebx
    report "(a) immediate patched 8 times, sum of results: ", EXPECT_IMM

    ; Now the operation itself: the opcode byte of `add eax, ebx` is replaced by the one of
    ; `sub` or `xor` (same ModRM byte, same length), so the same bytes of code compute
    ; something else on every call.
    mov eax, 1000
    xor esi, esi
.next_op:
    mov cl, [op_codes + esi]
    mov [patched_op], cl            ; the opcode byte
    mov ebx, [op_operands + esi*4]
    call patched_op                 ; EAX = EAX (op) EBX
    inc esi
    cmp esi, OP_COUNT
    jb .next_op
    report "(a) opcode patched to add, sub, xor, add, result: ", EXPECT_OP

    ; ------------------------------------------------------------ (b) generated code
    ; A tiny JIT. First version: `mov eax, 0`, then `add eax, i*i` for i = 1..10, `ret`.
    mov ecx, 10
    call generate_squares
    call GEN_BUFFER
    report "(b) generated code, sum of squares 1..10: ", EXPECT_GEN1

    ; Second version, over the first: a real loop this time, 12 bytes.
    ;   xor eax, eax / mov ecx, 1000 / again: add eax, ecx / loop again / ret
    mov edi, GEN_BUFFER
    mov word [edi], 0xC031          ; 31 C0        xor eax, eax
    mov byte [edi + 2], OP_MOV_ECX  ; B9 imm32     mov ecx, 1000
    mov dword [edi + 3], 1000
    mov word [edi + 7], 0xC801      ; 01 C8        add eax, ecx
    mov word [edi + 9], 0xFCE2      ; E2 FC        loop (back 4 bytes, to the add)
    mov byte [edi + 11], OP_RET     ; C3           ret
    call GEN_BUFFER
    report "(b) regenerated as a loop, sum of 1..1000: ", EXPECT_GEN2

    ; Third version: the first kind again, longer (20 adds), over the loop.
    mov ecx, 20
    call generate_squares
    call GEN_BUFFER
    report "(b) regenerated again, sum of squares 1..20: ", EXPECT_GEN3

    ; ------------------------------------------------------------ (c) data next to hot code
    mov ecx, HOT_CALLS
    call hot_loop
    mov eax, [hot_count]
    report "(c) hot routine calls, counted next to its code: ", EXPECT_HOT_N
    mov eax, [hot_sum]
    report "(c) and the sum it kept there: ", EXPECT_HOT_SUM

    ; ------------------------------------------------------------ (d) the next instruction
    ; Each round stores the round number into the immediate of the instruction right after
    ; the store, then runs that instruction. The x86 guarantees (Pentium Pro and later) that
    ; the new bytes execute, even though the CPU may have fetched the old ones already.
    xor ebx, ebx
    mov ecx, NEXT_ROUNDS
.next_round:
    mov [.patched_next + 1], ecx    ; the imm32 of the very next instruction
.patched_next:
    mov eax, 0                      ; becomes `mov eax, ecx`, by rewriting
    add ebx, eax
    loop .next_round
    mov eax, ebx
    report "(d) next instruction patched 200 times, sum: ", EXPECT_NEXT

    ; ------------------------------------------------------------ the verdict
    print "checksum "
    mov eax, [checksum]
    call print_hex32
    cmp eax, EXPECT_CHECKSUM
    je .checksum_ok
    print " <- expected "
    mov eax, EXPECT_CHECKSUM
    call print_hex32
    inc dword [wrong]
.checksum_ok:
    call newline
    cmp dword [wrong], 0
    jne .wrong
    println "all results as expected"
    mov al, EXIT_SUCCESS
    jmp exit
.wrong:
    mov eax, [wrong]
    call print_dec32
    println " results are wrong: somebody ran stale code"
    mov al, 1
    jmp exit

; report_value - the end of a `report` line: EAX in decimal, and if it is not EDX, what it
; should have been. Every result goes into the checksum.
report_value:
    call print_dec32
    cmp eax, edx
    je .ok
    print " <- expected "
    push eax
    mov eax, edx
    call print_dec32
    pop eax
    inc dword [wrong]
.ok:
    call newline
    rol dword [checksum], 5
    xor [checksum], eax
    ret

; ---------------------------------------------------------------------------- (a) targets
; patched_imm - returns EAX = whatever immediate was last stored into it.
patched_imm:
    mov eax, 0                      ; B8 00 00 00 00: bytes 1..4 are rewritten
    ret

; patched_op - EAX = EAX (op) EBX, where (op) is whatever opcode was last stored.
patched_op:
    add eax, ebx                    ; 01 D8: byte 0 is rewritten (01 add, 29 sub, 31 xor)
    ret

IMM_COUNT       equ 8
imm_values:     dd 1, 10, 100, 1000, 10000, 100000, 1000000, 10000000
OP_COUNT        equ 4
op_codes:       db OP_ADD_RM, OP_SUB_RM, OP_XOR_RM, OP_ADD_RM
op_operands:    dd 500, 200, 0xFF, 1

; ---------------------------------------------------------------------------- (b) generator
; generate_squares - write at GEN_BUFFER a routine returning 1^2 + 2^2 + ... + ECX^2,
; unrolled: mov eax, 0 / add eax, 1 / add eax, 4 / ... / ret. Byte by byte, as a JIT does.
generate_squares:
    pushad
    mov edi, GEN_BUFFER
    mov al, OP_MOV_EAX
    stosb
    xor eax, eax
    stosd                           ; mov eax, 0
    mov ebx, 1
.term:
    mov al, OP_ADD_EAX
    stosb
    mov eax, ebx
    imul eax, ebx
    stosd                           ; add eax, ebx*ebx
    inc ebx
    cmp ebx, ecx
    jbe .term
    mov al, OP_RET
    stosb
    popad
    ret

; ---------------------------------------------------------------------------- (c) hot page
; The loop, the routine it calls and the counters the routine updates are kept together in
; one 4 KiB page (the align puts them at its start). A monitor that write-protects pages of
; code it has translated sees two stores into such a page on every call.
align 4096
hot_loop:                           ; ECX = how many calls
    call hot_routine
    loop hot_loop
    ret

hot_routine:
    inc dword [hot_count]
    add [hot_sum], ecx
    ret
hot_count:      dd 0                ; a few bytes after the RET that runs 5000 times
hot_sum:        dd 0

; ---------------------------------------------------------------------------- data
checksum:       dd 0
wrong:          dd 0                ; results that were not what they must be
