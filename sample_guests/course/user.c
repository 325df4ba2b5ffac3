/* user.c - the ring-3 task: it can only ask the kernel, with `int 0x80`.
 *
 * Everything it touches (its code, strings and stack) is in the .user section, whose pages
 * alone the kernel maps user-accessible. System calls: EAX = number, EBX/ECX = arguments.
 */
#include "kernel.h"

/* gcc wants code, constants and data in sections of their own; link.ld puts them together */
#define USER __attribute__((section(".user.text")))
#define USER_CONST __attribute__((section(".user.rodata")))
#define USER_DATA __attribute__((section(".user.data")))
#define SYS_WRITE 1
#define SYS_EXIT 2

USER_CONST static const char hello[] = "hello from ring 3, cpl ";
USER_DATA uint8_t user_stack[USER_STACK] __attribute__((aligned(16)));

USER static int syscall(uint32_t number, uint32_t a, uint32_t b) {
    int result;
    __asm__ volatile("int $0x80" : "=a"(result) : "a"(number), "b"(a), "c"(b) : "memory");
    return result;
}

USER void user_main(void) {
    uint16_t cs;
    char cpl[2];
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    cpl[0] = '0' + (cs & 3);
    cpl[1] = '\n';
    int written = syscall(SYS_WRITE, (uint32_t)hello, sizeof hello - 1);
    syscall(SYS_WRITE, (uint32_t)cpl, 2);
    syscall(SYS_EXIT, (uint32_t)written, 0);
}
