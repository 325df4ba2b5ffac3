; whoami.asm - a kernel that boots slowly once, and learns which machine it is only after.
;
; What it demonstrates: cloning. A monitor can suspend a VM after its slow start-up and
; start many clones from that one state: every clone resumes with the very same RAM, so
; nothing inside a clone can tell it from the others - except what the platform tells it.
; The platform identity port 0x502 gives each VM its own name, one byte per IN (0 at the
; end); an OUT to it rewinds. The clones' RAM is shared copy-on-write on the host: the
; 1 MiB table built at boot stays one copy however many clones read it; each clone owns
; only the pages it writes (its stack, its greeting buffer).
;
; What to expect (every mode): "booting", then "ready", then "I am NAME" with the VM's own
; name, the table's checksum (the same in every clone), and exit status 0.
;   vmlab run whoami --suspend-at 1049975 -o booted.vmlab ; vmlab clone booted.vmlab 8

bits 32
org 0x100000

%include "vmlab.inc"

TABLE       equ 0x200000                ; the 1 MiB table built at boot, shared by the clones
TABLE_WORDS equ 0x40000                 ; 256 Ki dwords
PLATFORM_ID equ 0x502

start:
    println "booting: building a 1 MiB table (the slow part a clone never repeats)"
    mov edi, TABLE
    mov eax, 0x9E3779B9                 ; each entry: the previous one times 5, plus a constant
    mov ecx, TABLE_WORDS
.fill:
    stosd
    lea eax, [eax + eax * 4 + 0x3C6EF372]
    dec ecx
    jnz .fill
    println "ready"                     ; a good place to suspend and clone

    outb PLATFORM_ID, 0                 ; rewind the identity, then read it byte by byte
    mov edi, name
.read:
    inb PLATFORM_ID
    stosb
    test al, al
    jnz .read
    print "I am "
    print name
    call newline

    mov esi, TABLE                      ; read the shared table: reading copies nothing
    mov ecx, TABLE_WORDS
    xor ebx, ebx
.sum:
    lodsd
    add ebx, eax
    dec ecx
    jnz .sum
    print "table checksum "
    mov eax, ebx
    call print_hex32
    call newline
    mov al, EXIT_SUCCESS
    jmp exit

name:
    times 80 db 0                       ; the identity, as read (written: a private page)
