; mmustress.asm - a kernel that works the MMU hard: what a monitor's shadow page tables must
; keep up with (docs/paging.md). It prints one line per part, each only about results that do
; not depend on when the timer fires, so bare metal and every monitor print the same text.
;
;  1. Three address spaces (page directories A, B, C) that the PIT timer switches between:
;     the same linear page SPACE_PAGE shows a different frame in each. The kernel reads it
;     over and over and checks it sees the frame of the space it is in (a monitor must keep
;     one shadow per space, and pick the right one at every MOV CR3).
;  2. Demand paging: DEMAND_PAGES pages start not present; the #PF handler gives each a
;     frame on its first touch and the instruction runs again (under a monitor: a true
;     fault reflected to the guest, then a hidden one as the shadow catches up).
;  3. A page-table entry rewritten in a loop (each time another frame, INVLPG, then a read
;     through it): under a monitor every rewrite is a write to a traced page table (ptemod).
;  4. A page mapped to a frame outside RAM: reads all ones, a write goes nowhere.
;  5. A page mapped to frame 0xFFC00000, where a monitor keeps its window: the guest's view is
;     the same as 4 — on bare metal there is no RAM there, and under a monitor the frame is
;     redirected to open bus (an isolation event), never to the monitor's memory. (Linear
;     0xFFC00000 itself is left alone: there the guest kernel would see the monitor's window
;     under a monitor and its own mapping on bare metal — README "What a guest sees".)
;
; Memory (all page tables are the kernel's, identity-mapped below 4 MiB):
;   PD_A/B/C   0x200000.. three page directories; PDE 0 and PDE 2 are shared by all three
;   PT_LOW     0x203000   0-4 MiB identity-mapped (kernel, tables, frames), supervisor
;   PT_SPACE   0x204000.. one per space: linear 0x400000.. (PDE 1); SPACE_PAGE = 0x400000
;   PT_DEMAND  0x207000   linear 0x800000.. (PDE 2): demand pages, the rewritten PTE, 4 and 5

bits 32
org 0x100000

%include "../../sample_guests/vmlab.inc"
%include "paging.inc"

PD_A        equ 0x200000
PT_LOW      equ 0x203000
PT_SPACE    equ 0x204000
PT_DEMAND   equ 0x207000
SPACES      equ 3
SPACE_PAGE  equ 0x400000            ; linear: a different frame in each space
SPACE_FRAME equ 0x210000            ; + space * 4 KiB: holds the space's number
DEMAND      equ 0x800000            ; linear: DEMAND_PAGES pages, not present at first
DEMAND_PAGES equ 16
FREE_FRAMES equ 0x300000            ; where the #PF handler takes frames from
SWAP        equ 0x820000            ; linear: the PTE rewritten in a loop
SWAP_FRAME  equ 0x220000            ; + k * 4 KiB: holds k (k = 0..3)
SWAP_ROUNDS equ 64
OUTSIDE     equ 0x830000            ; linear: mapped to a frame beyond RAM
WINDOW      equ 0x831000            ; linear: mapped to the monitor's window frame
ROUNDS      equ 4000                ; reads of SPACE_PAGE while the timer switches spaces
TIMER_RELOAD equ 2000
CR0_PG      equ 0x80000000
PTE_RW      equ 0x3                 ; present | writable (supervisor)

; pte TABLE, LINEAR - the address of LINEAR's entry in page table TABLE
%define pte(table, linear) (table + ((linear >> 12) & 0x3FF) * 4)

start:
    kernel_tables kernel_stack_top
    set_gate 14, page_fault, INTERRUPT_GATE
    set_gate IRQ0_VECTOR, timer_interrupt, INTERRUPT_GATE
    call idt_load

    ; The tables. PT_DEMAND starts empty (zeroed RAM): every page there is not present.
    identity_map PT_LOW, PTE_RW
    xor ecx, ecx
.space:                             ; space ECX: its directory, its table, its frame
    mov edi, ecx
    shl edi, 12
    mov dword [PD_A + edi], PT_LOW | PTE_RW
    lea eax, [PT_SPACE + edi]
    or eax, PTE_RW
    mov [PD_A + edi + 4], eax
    mov dword [PD_A + edi + 8], PT_DEMAND | PTE_RW
    lea eax, [SPACE_FRAME + edi]
    mov [eax], ecx                  ; the frame says which space it belongs to
    or eax, PTE_RW
    mov [PT_SPACE + edi], eax       ; SPACE_PAGE is the first page of the table
    inc ecx
    cmp ecx, SPACES
    jb .space
    xor ecx, ecx
.swap_frames:
    mov edi, ecx
    shl edi, 12
    mov [SWAP_FRAME + edi], ecx
    inc ecx
    cmp ecx, 4
    jb .swap_frames
    mov dword [pte(PT_DEMAND, OUTSIDE)], 0x08000000 | PTE_RW   ; 128 MiB: no RAM there
    mov dword [pte(PT_DEMAND, WINDOW)], 0xFFC00000 | PTE_RW    ; the monitor's window frame

    paging_on PD_A, CR0_PG
    println "mmustress: paging on, three address spaces"

    ; 1. The timer switches spaces; each read of SPACE_PAGE must show the current one's.
    mov ax, 0xFFFE                  ; IRQ 0 only
    call pic_remap
    mov ax, TIMER_RELOAD
    call pit_start
    sti
    mov ecx, ROUNDS
.read:
    mov eax, [space]
    mov ebx, [SPACE_PAGE]
    cmp eax, [space]                ; the timer switched in between: read again
    jne .read
    cmp eax, ebx
    je .right
    inc dword [wrong]
.right:
    bts dword [seen], ebx
    loop .read
    cli
    print "spaces seen through one linear page: "
    mov eax, [seen]
    call print_hex32
    print ", wrong reads: "
    mov eax, [wrong]
    call print_hex32
    call newline

    ; 2. Demand paging: write each page once (the handler maps it), then read them all back.
    xor ecx, ecx
.touch:
    mov edi, ecx
    shl edi, 12
    mov [DEMAND + edi + 8], ecx     ; faults the first time: the handler maps the page
    inc ecx
    cmp ecx, DEMAND_PAGES
    jb .touch
    xor eax, eax
    xor ecx, ecx
.sum:
    mov edi, ecx
    shl edi, 12
    add eax, [DEMAND + edi + 8]
    inc ecx
    cmp ecx, DEMAND_PAGES
    jb .sum
    print "demand paging: pages mapped by the #PF handler "
    push eax
    mov eax, [demand_faults]
    call print_hex32
    print ", sum read back "
    pop eax
    call print_hex32
    call newline

    ; 3. One PTE rewritten SWAP_ROUNDS times, each time to frame k = round mod 4.
    xor ecx, ecx
.swap:
    mov eax, ecx
    and eax, 3
    mov edx, eax
    shl eax, 12
    add eax, SWAP_FRAME | PTE_RW
    mov [pte(PT_DEMAND, SWAP)], eax ; the guest changes its own page table
    invlpg [SWAP]
    cmp [SWAP], edx                 ; the new frame, not a stale translation
    je .swapped
    inc dword [wrong]
.swapped:
    inc ecx
    cmp ecx, SWAP_ROUNDS
    jb .swap
    print "PTE rewritten in a loop, stale reads: "
    mov eax, [wrong]
    call print_hex32
    call newline

    ; 4 and 5. Frames that are not RAM: open bus.
    mov dword [OUTSIDE], 0x12345678 ; dropped
    mov dword [WINDOW], 0x12345678  ; dropped
    print "frame outside RAM reads "
    mov eax, [OUTSIDE]
    call print_hex32
    print ", frame 0xFFC00000 reads "
    mov eax, [WINDOW]
    call print_hex32
    call newline

    mov al, EXIT_SUCCESS
    cmp dword [wrong], 0
    je .out
    mov al, 1
.out:
    jmp exit

; IRQ 0: the next address space. The kernel's code, data and stacks are mapped alike in all
; of them (PDE 0), so it goes on as if nothing happened; only SPACE_PAGE shows another frame.
timer_interrupt:
    push eax
    push edx
    mov eax, [space]
    inc eax
    cmp eax, SPACES
    jb .load
    xor eax, eax
.load:
    mov [space], eax
    shl eax, 12
    add eax, PD_A
    mov cr3, eax
    send_eoi
    pop edx
    pop eax
    iretd

; #PF: a demand page gets the next free frame; anything else is a bug (exit 2).
page_fault:
    push eax
    push edx
    mov eax, cr2
    sub eax, DEMAND
    cmp eax, DEMAND_PAGES * 4096
    jae .unexpected
    shr eax, 12
    mov edx, [next_frame]
    add dword [next_frame], 4096
    or edx, PTE_RW
    mov [PT_DEMAND + eax * 4], edx  ; mapped: the faulting instruction runs again
    inc dword [demand_faults]
    pop edx
    pop eax
    add esp, 4                      ; the error code
    iretd
.unexpected:
    print "unexpected page fault at "
    mov eax, cr2
    call print_hex32
    call newline
    mov al, 2
    jmp exit

space:          dd 0                ; the address space in CR3 (0 = A)
seen:           dd 0                ; bit n: space n's frame was read
wrong:          dd 0
demand_faults:  dd 0
next_frame:     dd FREE_FRAMES

align 16
    times 1024 db 0
kernel_stack_top:
