; tickidle - busyidle with the PIT firing 100 times a second, as a course kernel's clock does.
;
; A course kernel's main ends in `while (1);` with interrupts on while its PIT ticks (a tick
; counter, a clock on the screen). The CPU never halts: between two ticks it spins on
; `jmp $`, and each tick enters the timer handler and returns to the spin. Keys typed "when
; the guest waits" must go in at that spin, though the instruction after a time slice that
; ends at a tick is the timer handler's first. Before it idles it waits two ticks in a
; polling loop (a `timer_wait`), so it spins only once its clock runs. Prints as busyidle.
%define TICKING
%include "busyidle.asm"
