; pc_probes.asm - a multiboot kernel that checks what a kernel probes at start-up on a PC:
; the CMOS RTC (0x70/0x71), QEMU's fw_cfg (0x510/0x511), PCI configuration (0xCF8/0xCFC),
; system control port B (0x61), the BIOS data area, and the CPU (CPUID, RDTSC, the features CPUID promises). One line per check on COM1, "pass" or "FAIL"; the exit
; status (port 0xF4, QEMU's isa-debug-exit) is the number of failures. Every check holds on
; QEMU's PC too (run with -rtc base=2026-01-01), so both print the same.
%include "multiboot.inc"

%include "report.inc"

%macro CMOS_READ 1                              ; AL = CMOS register %1
    mov al, %1
    out 0x70, al
    in al, 0x71
%endmacro

%macro CMOS_WRITE 2                             ; CMOS register %1 = %2
    mov al, %1
    out 0x70, al
    mov al, %2
    out 0x71, al
%endmacro

entry:
    mov esp, stack_top

; --- the BIOS data area, as the firmware leaves it ------------------------------------------------
    cmp word [0x40E], 0x9FC0                    ; the EBDA's segment: 639 KiB
    CHECK "bda ebda segment 0x9fc0"
    cmp word [0x413], 639                       ; KiB of conventional memory
    CHECK "bda base memory 639 KiB"
    cmp word [0x400], 0x3F8                     ; COM1's I/O base
    CHECK "bda com1 at 0x3f8"

; --- CMOS RTC ---------------------------------------------------------------------------------
    CMOS_READ 0x0D
    cmp al, 0x80                                ; status D: VRT (valid RAM and time), nothing else
    CHECK "rtc status D reads VRT"
    CMOS_READ 0x0A
    and al, 0x7F
    cmp al, 0x26                                ; status A: 32.768 kHz divider, 1024 Hz rate
    CHECK "rtc status A divider and rate"
    CMOS_READ 0x0B
    cmp al, 0x02                                ; status B: 24-hour, BCD, no interrupts
    CHECK "rtc status B 24-hour BCD"
    call wait_uip
    CMOS_READ 0x09
    cmp al, 0x26                                ; the year, in BCD
    CHECK "rtc year 26 in BCD"
    CMOS_READ 0x32
    cmp al, 0x20                                ; the century (QEMU's register)
    CHECK "rtc century 20"
    CMOS_READ 0x08
    cmp al, 0x01
    CHECK "rtc month 1"
    CMOS_READ 0x14                              ; the equipment byte
    and al, 0x32                                ; the FPU (bit 1), the display (bits 4-5)
    cmp al, 0x02                                ; an FPU; EGA/VGA
    CHECK "cmos equipment fpu and vga"
    CMOS_READ 0x00
    call is_bcd_below_60
    CHECK "rtc seconds BCD below 60"
    CMOS_WRITE 0x0B, 0x06                       ; binary mode
    call wait_uip
    CMOS_READ 0x09
    cmp al, 26
    CHECK "rtc year 26 in binary"
    CMOS_READ 0x00
    cmp al, 60
    setb al
    cmp al, 1
    CHECK "rtc seconds binary below 60"
    CMOS_WRITE 0x0B, 0x00                       ; BCD, 12-hour: midnight is 12 AM
    CMOS_READ 0x04
    cmp al, 0x12
    CHECK "rtc 12-hour midnight is 0x12"
    CMOS_WRITE 0x0B, 0x82                       ; SET: stop updates, then set the minutes
    CMOS_WRITE 0x02, 0x45
    CMOS_WRITE 0x0B, 0x02
    CMOS_READ 0x02
    cmp al, 0x45
    CHECK "rtc minutes set while SET"
    mov al, 0x8D                                ; NMI masked (bit 7), register D
    out 0x70, al
    in al, 0x71
    cmp al, 0x80
    CHECK "rtc index ignores the NMI bit"
    CMOS_WRITE 0x40, 0x5A
    CMOS_READ 0x40
    cmp al, 0x5A
    CHECK "cmos nvram keeps a byte"
    CMOS_READ 0x16
    mov ah, al
    CMOS_READ 0x15
    cmp ax, 640
    CHECK "cmos base memory 640 KiB"
    mov al, 0x0D                                ; leave NMI enabled
    out 0x70, al

; --- fw_cfg -----------------------------------------------------------------------------------
    mov dx, 0x510
    mov ax, 0x0000                              ; FW_CFG_SIGNATURE
    out dx, ax
    mov dx, 0x511
    mov ecx, 4
.sig:
    in al, dx
    ror eax, 8
    loop .sig
    cmp eax, 'QEMU'
    CHECK "fw_cfg signature QEMU"
    mov dx, 0x510
    mov ax, 0x0001                              ; FW_CFG_ID: bit 0, the port interface
    out dx, ax
    mov dx, 0x511
    in al, dx
    and al, 1
    cmp al, 1
    CHECK "fw_cfg id has the port interface"
    mov dx, 0x510
    mov ax, 0x0005                              ; FW_CFG_NB_CPUS, 16 bits
    out dx, ax
    mov dx, 0x511
    in al, dx
    mov ah, al
    in al, dx
    xchg al, ah
    cmp ax, 1
    CHECK "fw_cfg one cpu"

; --- PCI configuration mechanism #1 -----------------------------------------------------------
    mov dx, 0xCF8
    mov eax, 0x8000F800                         ; bus 0, device 31, function 0, register 0
    out dx, eax
    in eax, dx
    cmp eax, 0x8000F800
    CHECK "pci config address reads back"
    mov dx, 0xCFC
    in eax, dx
    cmp eax, 0xFFFFFFFF                         ; no function there: vendor ID 0xFFFF
    CHECK "pci absent function reads all ones"
    mov eax, 0x80000000                         ; 00:00.0, register 0: vendor and device
    call pci_read
    cmp eax, 0x12378086                         ; Intel 440FX host bridge
    CHECK "pci host bridge at 00:00.0"
    mov dx, 0xCFE                               ; the upper word of the same dword
    in ax, dx
    cmp ax, 0x1237                              ; the device ID
    CHECK "pci config data reads words"
    mov eax, 0x80000808                         ; 00:01.0, register 8: class, revision
    call pci_read
    cmp eax, 0x06010000                         ; PCI-to-ISA bridge (PIIX3)
    CHECK "pci isa bridge at 00:01.0"
    mov eax, 0x8000080C                         ; its header type: multi-function
    call pci_read
    and eax, 0x00FF0000
    cmp eax, 0x00800000
    CHECK "pci isa bridge is multi-function"
    mov eax, 0x80001008                         ; 00:02.0: display controller, VGA
    call pci_read
    cmp eax, 0x03000002
    CHECK "pci vga at 00:02.0"
    mov eax, 0x80001010                         ; its BAR0, sized as enumerating kernels do
    call pci_read
    mov ebx, eax
    mov eax, 0xFFFFFFFF
    out dx, eax
    in eax, dx
    xchg eax, ebx
    out dx, eax                                 ; put the address back
    cmp ebx, 0xFF000008                         ; 16 MiB, prefetchable memory
    CHECK "pci vga bar0 sizes 16 MiB"
    mov dx, 0xCFC                               ; (CHECK printed through COM1)
    in eax, dx
    cmp eax, 0xFD000008                         ; where SeaBIOS placed it
    CHECK "pci vga bar0 restored"

; --- the 8042 keyboard controller, as SeaBIOS leaves it ---------------------------------------
    in al, 0x60                                 ; no key yet: the last byte SeaBIOS read
    cmp al, 0xFA                                ; the keyboard's ACK
    CHECK "kbc data before any key"
    in al, 0x64
    cmp al, 0x1C                                ; unlocked, last write a command, self-test passed
    CHECK "kbc status at start-up"
    mov al, 0x20                                ; read the config byte
    out 0x64, al
    in al, 0x60
    cmp al, 0x61                                ; translation, mouse off, keyboard IRQ 1 on
    CHECK "kbc config byte at start-up"
    mov al, 0x60                                ; write it back unchanged (system flag clear)
    out 0x64, al
    mov al, 0x61
    out 0x60, al
    in al, 0x64
    cmp al, 0x1C                                ; the status keeps its flags, as QEMU's does
    CHECK "kbc config write keeps the system flag"

; --- port 0x92, system control port A ------------------------------------------------------
    in al, 0x92
    cmp al, 0x02                                ; A20 on, no reset
    CHECK "port92 reads a20 on"
    mov al, 0x12                                ; fast A20 as kernels enable it, one spare bit
    out 0x92, al
    in al, 0x92
    cmp al, 0x12
    CHECK "port92 reads back"
    mov al, 0x02
    out 0x92, al

; --- port 0x61: PIT channel 2 OUT and the refresh toggle ----------------------------------------
    mov al, 0x01                                ; channel 2 gate on, speaker off
    out 0x61, al
    in al, 0x61
    and al, 0x03
    cmp al, 0x01
    CHECK "port61 gate reads back"
    mov al, 0xB0                                ; channel 2, lobyte/hibyte, mode 0
    out 0x43, al
    mov al, 0x00
    out 0x42, al
    mov al, 0x02                                ; count 512
    out 0x42, al
    in al, 0x61
    and al, 0x20
    cmp al, 0                                   ; OUT is low while mode 0 counts
    CHECK "port61 channel 2 out low while counting"
    mov ecx, 10000000
.out2:
    in al, 0x61
    test al, 0x20
    jnz .out2_high
    loop .out2
.out2_high:
    test al, 0x20
    setz al
    cmp al, 0
    CHECK "port61 channel 2 out goes high"
    in al, 0x61
    mov bl, al
    mov ecx, 10000000
.refresh:
    in al, 0x61
    xor al, bl
    test al, 0x10
    jnz .toggled
    loop .refresh
.toggled:
    test al, 0x10
    setz al
    cmp al, 0
    CHECK "port61 refresh bit toggles"

; --- the CPU: CPUID's identity and the features it promises ---------------------------------------
    xor eax, eax
    cpuid
    cmp ebx, 'Genu'
    jne .vendor
    cmp edx, 'ineI'
    jne .vendor
    cmp ecx, 'ntel'
.vendor:
    CHECK "cpuid vendor GenuineIntel"
    xor eax, eax
    cpuid
    cmp eax, 1
    setae al
    cmp al, 1
    CHECK "cpuid has leaf 1"
    mov eax, 1
    cpuid
    mov ebx, eax
    shr ebx, 8
    and ebx, 0xF
    cmp ebx, 6
    push edx                                    ; report prints, and printing uses EDX
    CHECK "cpuid family 6"
    pop edx
    and edx, (1 << 0) | (1 << 4) | (1 << 8) | (1 << 15)
    cmp edx, (1 << 0) | (1 << 4) | (1 << 8) | (1 << 15)
    CHECK "cpuid fpu tsc cx8 cmov"
    rdtsc
    mov esi, eax
    mov edi, edx
    mov ecx, 1000
.spin:
    loop .spin
    rdtsc
    sub eax, esi
    sbb edx, edi
    jnz .tsc_far                                ; more than 2^32 ticks: far enough
    cmp eax, 1000
    setae al
    cmp al, 1
    jmp .tsc_done
.tsc_far:
    cmp edx, edx
.tsc_done:
    CHECK "rdtsc counts at least one tick per instruction"
    xor eax, eax                                ; CX8: EDX:EAX == [m64], so ECX:EBX is stored
    xor edx, edx
    mov ebx, 0x89ABCDEF
    mov ecx, 0x01234567
    cmpxchg8b [qword_cell]
    jne .cx8
    cmp dword [qword_cell + 4], 0x01234567
.cx8:
    CHECK "cmpxchg8b stores on equal"
    mov eax, 1
    mov ebx, 2
    cmp eax, ebx
    cmovb eax, ebx
    cmp eax, 2
    CHECK "cmov moves when the condition holds"
    fninit
    fld1
    fld1
    faddp
    fistp dword [int_cell]
    cmp dword [int_cell], 2
    CHECK "fpu adds one and one"

    mov al, [failures]
    out 0xf4, al                                ; QEMU's isa-debug-exit (vmlab has one too)
    cli
    hlt

pci_read:                                       ; EAX = the dword at CONFIG_ADDRESS EAX; DX = 0xCFC
    mov dx, 0xCF8
    out dx, eax
    mov dx, 0xCFC
    in eax, dx
    ret

wait_uip:                                       ; until status A's update-in-progress is clear
    CMOS_READ 0x0A
    test al, 0x80
    jnz wait_uip
    ret

is_bcd_below_60:                                ; ZF set if AL is a BCD number 0..59
    mov ah, al
    and ah, 0x0F
    cmp ah, 9
    ja .no
    cmp al, 0x59
    ja .no
    cmp al, al
    ret
.no:
    or esp, esp                                 ; ZF clear (ESP is never 0)
    ret


section .data
load_end:

section .bss
align 4096                                      ; a page of its own: a store that shares a page
qword_cell: resq 1                              ; with translated code is bt's self-modifying
int_cell:   resd 1                              ; code path (tests/guests/cx8_code_page.asm)
    resb 4096
stack_top:
bss_end:
