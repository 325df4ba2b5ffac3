; exit_at_once - a debug exit ends the run at that instruction: nothing after it happens.
;
; kvm-unit-tests' exit() writes its status to QEMU's isa-debug-exit (`outl` to 0xF4) and, in
; case that port is absent, goes on to Bochs' shutdown port 0x8900. Here the status goes to
; vmlab's debug exit and straight after it come a line on COM1 and bytes to 0x8900: none of
; them may reach a device or show in the run's summary, in any mode (translated code runs its
; block to the end before the CPU stops).
bits 32
org 0x100000
COM1 equ 0x3F8

    mov esp, 0x90000
    mov dx, COM1
    mov al, 'A'                 ; the one byte printed before the exit
    out dx, al
    mov al, 10
    out dx, al
    xor eax, eax
    mov dx, 0x501
    out dx, al                  ; debug exit, status 0: the run ends here
    mov dx, COM1
    mov al, 'B'                 ; never printed
    out dx, al
    mov dx, 0x8900              ; never written (nothing answers it: it would be listed)
    mov al, 'S'
    out dx, al
    out dx, al
    hlt
