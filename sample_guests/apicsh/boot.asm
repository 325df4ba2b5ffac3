; boot.asm - the APIC shell's assembly half is the course kernel's: the multiboot header,
; _start, the interrupt stubs (vectors 0-47 and 0x80) and the ring-3 entry and exit.
%include "../course/boot.asm"
