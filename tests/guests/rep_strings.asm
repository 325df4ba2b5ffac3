; Each form of REP string instruction a kernel uses, over a few bytes: the CPU (and
; unicorn's count) takes each round for an instruction, and a run may stop between two
; rounds; under binary translation each round must be a step of its own too, so that time
; travel can stop inside one (tests/test_timetravel.py). Ends by debug exit 0.
bits 32
org 0x100000
start:
    cld
    mov edi, buffer
    mov eax, 0x11223344
    mov ecx, 5
    rep stosd               ; 5 rounds, and the one that finds ECX 0
    mov esi, buffer
    mov edi, copy
    mov ecx, 7
    rep movsb               ; the first 7 bytes, copied
    mov esi, buffer
    mov edi, other
    mov ecx, 8
    repe cmpsb              ; ends at the first byte that differs (the third)
    mov edi, buffer
    mov al, 0x22
    mov ecx, 20
    repne scasb             ; ends at the first 0x22 (the third byte)
    xor ecx, ecx
    rep stosb               ; ECX 0: one round, nothing stored
    mov esi, buffer
    mov ecx, 3
    mov dx, 0x80
    rep outsb               ; three POST codes
    mov al, 0
    mov dx, 0x501           ; debug exit, status 0
    out dx, al
    cli
    hlt

buffer: times 20 db 0
copy: times 8 db 0
other: db 0x44, 0x33, 0x99, 0x11, 0, 0, 0, 0
