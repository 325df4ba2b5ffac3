; absent_hardware.asm - a kernel that probes hardware vmlab's PC does not have: the first
; parallel port's status, the second serial port's line status, and the HPET's capabilities
; register at 0xFED00000. Every probe reads open bus (all ones); the run summary lists them.
bits 32
org 0x100000
    mov dx, 0x379
    in al, dx                                   ; LPT1 status: no parallel port
    mov dx, 0x2FD
    in al, dx                                   ; COM2 line status: no COM2
    mov eax, [0xFED00000]                       ; HPET capabilities: no HPET
    cmp eax, 0xFFFFFFFF                         ; open bus reads all ones
    setne al
    mov dx, 0x501
    out dx, al                                  ; status 0: every probe saw open bus
