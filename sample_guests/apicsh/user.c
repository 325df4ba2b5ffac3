/* user.c - the ring-3 shell: it reads a line (keyboard or COM1, whichever types), echoes
 * it, and runs it. Everything it does goes through `int 0x80` (EAX = number, EBX/ECX the
 * arguments): it cannot touch a port, the APIC or the kernel's data.
 */
#include "../course/kernel.h"

#define USER __attribute__((section(".user.text")))
#define USER_CONST __attribute__((section(".user.rodata")))
#define USER_DATA __attribute__((section(".user.data")))
#define SYS_WRITE 1
#define SYS_EXIT 2
#define SYS_READ 3 /* the next byte typed (it waits) */
#define SYS_TICKS 4 /* local APIC timer interrupts since boot */
#define LINE 64

USER_DATA uint8_t user_stack[USER_STACK] __attribute__((aligned(16)));
USER_DATA static char line[LINE];
USER_CONST static const char prompt[] = "$ ";
USER_CONST static const char help[] = "commands: help, ticks, exit\n";
USER_CONST static const char ticks_are[] = "ticks: ";
USER_CONST static const char unknown[] = "unknown command: ";
USER_CONST static const char newline[] = "\n";
USER_CONST static const char cmd_help[] = "help", cmd_ticks[] = "ticks", cmd_exit[] = "exit";

USER static int syscall(uint32_t number, uint32_t a, uint32_t b) {
    int result;
    __asm__ volatile("int $0x80" : "=a"(result) : "a"(number), "b"(a), "c"(b) : "memory");
    return result;
}

USER static void print(const char *s, uint32_t length) { syscall(SYS_WRITE, (uint32_t)s, length); }

USER static int same(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

USER static void print_number(uint32_t n) {
    char digits[10];
    int at = sizeof digits;
    do digits[--at] = '0' + n % 10; while (n /= 10);
    print(digits + at, sizeof digits - at);
}

USER static void read_line(void) { /* echo as it comes; backspace erases */
    uint32_t length = 0;
    for (;;) {
        char c = (char)syscall(SYS_READ, 0, 0);
        if (c == '\r' || c == '\n') break;
        if (c == '\b' || c == 127) {
            if (length) length--, print("\b", 1);
        } else if (length < LINE - 1 && c >= ' ') {
            line[length++] = c;
            print(&c, 1);
        }
    }
    line[length] = 0;
    print(newline, 1);
}

USER void user_main(void) {
    for (;;) {
        print(prompt, sizeof prompt - 1);
        read_line();
        if (same(line, cmd_help)) {
            print(help, sizeof help - 1);
        } else if (same(line, cmd_ticks)) {
            print(ticks_are, sizeof ticks_are - 1);
            print_number((uint32_t)syscall(SYS_TICKS, 0, 0));
            print(newline, 1);
        } else if (same(line, cmd_exit)) {
            syscall(SYS_EXIT, 0, 0);
        } else if (line[0]) {
            print(unknown, sizeof unknown - 1);
            uint32_t n = 0;
            while (line[n]) n++;
            print(line, n);
            print(newline, 1);
        }
    }
}
