/* kernel.h - what the parts of the course kernel share. */
#ifndef KERNEL_H
#define KERNEL_H

#include <stdarg.h>
#include <stdint.h>

#ifdef HIGHER_HALF
#define KERNEL_BASE 0xC0000000u /* virtual = physical + KERNEL_BASE */
#else
#define KERNEL_BASE 0u
#endif
#define P2V(a) ((void *)((uintptr_t)(a) + KERNEL_BASE))

/* The frame every interrupt stub builds (boot.asm): pushad, vector, error code, then what
   the CPU pushed. user_esp and user_ss are there only when the CPU came from ring 3. */
struct frame {
    uint32_t edi, esi, ebp, esp, ebx, edx, ecx, eax;
    uint32_t vector, error;
    uint32_t eip, cs, eflags, user_esp, user_ss;
};

static inline void outb(uint16_t port, uint8_t value) {
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}
static inline uint8_t inb(uint16_t port) {
    uint8_t value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

#ifdef PARAVIRT
/* The pv monitor's hypercalls (docs/hypercalls.md): int 0x82, EAX = number, EBX and ECX the
   arguments, the result in EAX. The port uses three, for paging; every other privileged
   instruction still traps and the monitor emulates it. */
#define HC_MMU_UPDATE 17
#define HC_NEW_BASEPTR 18
static inline int32_t hypercall(uint32_t number, uint32_t a, uint32_t b) {
    int32_t result;
    __asm__ volatile("int $0x82" : "=a"(result) : "a"(number), "b"(a), "c"(b) : "memory");
    return result;
}
#endif

/* console.c: every byte goes to COM1 and to the VGA text screen */
void console_init(void);
void putc(char c);
void puts(const char *s);
void kprintf(const char *fmt, ...);
void exit_machine(uint8_t status); /* QEMU's isa-debug-exit (vmlab has one too) */

/* user.c: the ring-3 task */
void user_main(void);
#define USER_STACK 4096
extern uint8_t user_stack[USER_STACK];

#endif
