; open-bus accesses right after a return: a store from inside a called routine, then a
; read and a store after it returns. Under the block clock the first access to open bus
; stops the CPU before the instruction and runs it again once the holes are mapped: does
; the traced recording still hold each instruction once, at the step its event names?
bits 32
org 0x100000
start:
    mov esi, 0x00d00000     ; outside the 4 MiB of RAM
    call poke               ; the first access: a store inside a called routine
    mov eax, [esi]          ; open bus reads all ones
    call nothing
    mov dword [esi], eax    ; a store right after a return
    mov al, 0
    mov dx, 0x501
    out dx, al
    cli
    hlt
poke:
    push eax
    mov dword [esi], 0x5a   ; dropped
    pop eax
    ret
nothing:
    ret
