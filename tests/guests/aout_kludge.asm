; aout_kludge.asm - a multiboot kernel that is not ELF: its header (flag bit 16) says where
; the file goes. The header is not at the file's start, so a loader must work out the file
; offset of load_addr from header_addr. It prints what the loader handed over, reading its
; strings by their absolute addresses: loaded anywhere else, it prints garbage.
bits 32
org 0x100000
load_start:
    times 64 db 0x90                            ; the header may lie anywhere in the first 8 KiB
header:
    dd 0x1BADB002, 0x00010003, -(0x1BADB002 + 0x00010003)
    dd header, load_start, load_end, bss_end, entry

entry:
    mov esp, stack_top
    cmp eax, 0x2BADB002
    jne .fail
    mov esi, booted
    call puts
    test dword [ebx], 1 << 2                    ; mbi: a command line?
    jz .done
    mov esi, [ebx + 16]
    call puts
    mov esi, newline
    call puts
.done:
    mov al, 0
    out 0xf4, al                                ; QEMU's isa-debug-exit (vmlab has one too)
.fail:
    mov al, 1
    out 0xf4, al
    hlt

puts:                                           ; print the NUL-terminated string at ESI
    lodsb
    test al, al
    jz .end
    mov dx, 0x3fd
.wait:
    mov ah, al
    in al, dx
    test al, 0x20                               ; transmit holding register empty
    mov al, ah
    jz .wait
    mov dx, 0x3f8
    out dx, al
    jmp puts
.end:
    ret

booted:  db "booted by multiboot, command line: ", 0
newline: db 10, 0
load_end:                                       ; the file ends here; then 4 KiB of BSS,
bss_end equ load_end + 4096                     ; zeroed by the loader: our stack
stack_top equ bss_end
