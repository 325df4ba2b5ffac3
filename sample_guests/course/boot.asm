; boot.asm - the assembly half of the course kernel: what C cannot say.
;
;   - the multiboot header, so GRUB, `qemu -kernel` and vmlab know how to load us;
;   - _start: the first instruction, a stack, and a call into kmain(magic, mbi);
;   - the interrupt entry stubs: the CPU pushes EIP/CS/EFLAGS (and an error code for some
;     exceptions); each stub pushes what the CPU did not, so C sees one frame layout;
;   - enter_user / leave_user: the ring-3 task is entered with IRET and left by a system call.
;
; Built twice (HIGHER_HALF defined or not): linked at 1 MiB, or at 0xC0100000 and loaded at
; 1 MiB. The higher-half build must turn paging on before it can run at its link address, so
; _start (in .boot, linked where it is loaded) maps the first 4 MiB twice with one 4 MiB page.

bits 32

MB_MAGIC    equ 0x1BADB002
MB_FLAGS    equ 0x3                 ; modules page-aligned, memory information wanted
%ifdef HIGHER_HALF
KERNEL_BASE equ 0xC0000000
%else
KERNEL_BASE equ 0
%endif

section .multiboot
align 4
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
%ifdef PARAVIRT
    db "VMLAB-PV"                             ; right after the header: we make hypercalls
%endif

section .boot progbits alloc exec
global _start
extern kmain
_start:
    cli
    mov esp, boot_stack_top - KERNEL_BASE     ; a physical address: paging may be off
%ifdef HIGHER_HALF
%ifdef PARAVIRT
    ; Ported (pv direct paging): no 4 MiB page, which would map these tables writable, but
    ; one page table for the first 4 MiB, in which the two table pages are read-only; the
    ; new_baseptr hypercall validates and pins them, and turns paging on.
    push eax                                  ; the multiboot magic and information
    push ebx
    mov edi, boot_table - KERNEL_BASE
    mov eax, 0x3                              ; frame 0: present, writable
.map:
    mov [edi], eax
    add eax, 0x1000
    add edi, 4
    cmp edi, boot_table - KERNEL_BASE + 4096
    jb .map
    mov ecx, boot_directory - KERNEL_BASE
    mov edi, ecx
    shr edi, 10                               ; the directory's entry in the table (frame * 4)
    and dword [boot_table - KERNEL_BASE + edi], ~2      ; read-only,
    and dword [boot_table - KERNEL_BASE + edi + 4], ~2  ; and the table's (the next page)
    mov dword [ecx], boot_table - KERNEL_BASE + 3       ; 0 - 4 MiB
    mov dword [ecx + 768 * 4], boot_table - KERNEL_BASE + 3 ; 0xC0000000 - 4 MiB: the same
    mov ebx, ecx
    mov eax, 18                               ; new_baseptr (docs/hypercalls.md)
    int 0x82
    pop ebx
    pop eax
%else
    mov ecx, boot_directory - KERNEL_BASE
    mov dword [ecx], 0x83                     ; 0 - 4 MiB: present, writable, 4 MiB page
    mov dword [ecx + 768 * 4], 0x83           ; 0xC0000000 - 4 MiB: the same frames
    mov cr3, ecx
    mov ecx, cr4
    or ecx, 0x10                              ; CR4.PSE: 4 MiB pages
    mov cr4, ecx
    mov ecx, cr0
    or ecx, 0x80000000                        ; CR0.PG
    mov cr0, ecx
%endif
    lea ecx, [higher_half]
    jmp ecx                                   ; from here on we run at 0xC01xxxxx
section .text
higher_half:
    add esp, KERNEL_BASE
%endif
    push ebx                                  ; the multiboot information (physical)
    push eax                                  ; 0x2BADB002 if a multiboot loader booted us
    call kmain
.hang:
    cli
    hlt
    jmp .hang

section .text

; gdt_flush(pointer): load the GDT and reload every segment register from it.
global gdt_flush
gdt_flush:
    mov eax, [esp + 4]
    lgdt [eax]
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    jmp 0x08:.reload
.reload:
    mov ax, 0x28                              ; the TSS, for the ring-3 task's stack switch
    ltr ax
    ret

; Interrupt stubs: vector N pushes a 0 error code where the CPU pushes none, then N.
%macro STUB 1
global isr%1
isr%1:
%if %1 != 8 && (%1 < 10 || %1 > 14) && %1 != 17
    push 0
%endif
    push %1
    jmp isr_common
%endmacro

%assign n 0
%rep 48
STUB n
%assign n n + 1
%endrep
STUB 128

extern interrupt
isr_common:
    pushad                                    ; the frame C sees: see struct frame
    mov eax, esp
    push eax
    call interrupt
    add esp, 4
    popad
    add esp, 8                                ; vector and error code
    iretd

global isr_table
section .rodata
isr_table:
%assign n 0
%rep 48
    dd isr %+ n
%assign n n + 1
%endrep

section .text
; enter_user(eip, esp): run the ring-3 task until it calls leave_user (its exit call).
global enter_user
enter_user:
    push ebp
    push ebx
    push esi
    push edi
    mov [kernel_esp], esp
    mov eax, [esp + 20]
    mov ecx, [esp + 24]
    mov dx, 0x23                              ; user data selector, RPL 3
    mov ds, dx
    mov es, dx
    push 0x23                                 ; SS
    push ecx                                  ; ESP
    push 0x202                                ; EFLAGS: interrupts on
    push 0x1B                                 ; CS: user code, RPL 3
    push eax                                  ; EIP
    iretd

; leave_user(): called by the exit system call, on the kernel stack the TSS gave us.
global leave_user
leave_user:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov esp, [kernel_esp]
    pop edi
    pop esi
    pop ebx
    pop ebp
    ret

section .bss
align 4096
%ifdef PARAVIRT
global boot_tables, boot_tables_end
boot_tables:                                  ; the page tables pinned at boot (none: low)
%endif
%ifdef HIGHER_HALF
boot_directory:
    resb 4096
%ifdef PARAVIRT
global boot_table
boot_table:
    resb 4096
%endif
%endif
%ifdef PARAVIRT
boot_tables_end:
%endif
kernel_esp:
    resd 1
align 16
boot_stack:
    resb 16384
boot_stack_top:
