; sleeps - a guest that ends by sleeping for ever: it prints a line, then waits with HLT,
; interrupts on but no interrupt source armed (no timer programmed, no input to come).
; vmlab ends such a run "halted"; its recording ends the same way, so a replay of it must
; find the same end (`vmlab replay --check`), not stop one step short at the budget.
bits 32
org 0x100000
COM1 equ 0x3F8

    mov esp, 0x90000
    mov dx, COM1
    mov al, 'Z'
    out dx, al
    mov al, 10
    out dx, al
    sti
.sleep:
    hlt                         ; nothing can wake it: the machine sleeps for ever
    jmp .sleep
