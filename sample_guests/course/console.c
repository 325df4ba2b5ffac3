/* console.c - output to the serial port and the VGA text screen, and a small printf.
 *
 * COM1 (0x3F8) is a 16550 UART: program 38400 baud 8N1, then write each byte to the
 * transmit holding register once the line status register says it is empty.
 * The VGA text screen is 80x25 cells at physical 0xB8000, two bytes each (character,
 * attribute); the hardware cursor is set through the CRTC's index/data ports 0x3D4/0x3D5.
 */
#include "kernel.h"

#define COM1 0x3F8
#define COLUMNS 80
#define ROWS 25
#define GREY_ON_BLACK 0x07

static volatile uint16_t *const screen = P2V(0xB8000);
static int row, column;

void console_init(void) {
    outb(COM1 + 1, 0x00); /* no UART interrupts */
    outb(COM1 + 3, 0x80); /* DLAB: the next two ports are the baud divisor */
    outb(COM1 + 0, 0x03); /* 115200 / 3 = 38400 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); /* 8 data bits, no parity, one stop bit */
    outb(COM1 + 2, 0xC7); /* FIFOs on and cleared */
    outb(COM1 + 4, 0x0B); /* DTR, RTS, OUT2 */
    for (int i = 0; i < COLUMNS * ROWS; i++)
        screen[i] = GREY_ON_BLACK << 8 | ' ';
}

static void move_cursor(void) {
    uint16_t at = row * COLUMNS + column;
    outb(0x3D4, 0x0E);
    outb(0x3D5, at >> 8);
    outb(0x3D4, 0x0F);
    outb(0x3D5, at & 0xFF);
}

static void screen_putc(char c) {
    if (c == '\n') {
        column = 0;
        row++;
    } else if (c == '\b') {
        if (column > 0)
            screen[row * COLUMNS + --column] = GREY_ON_BLACK << 8 | ' ';
    } else {
        screen[row * COLUMNS + column] = GREY_ON_BLACK << 8 | (uint8_t)c;
        if (++column == COLUMNS) {
            column = 0;
            row++;
        }
    }
    if (row == ROWS) { /* scroll up one line */
        for (int i = 0; i < COLUMNS * (ROWS - 1); i++)
            screen[i] = screen[i + COLUMNS];
        for (int i = 0; i < COLUMNS; i++)
            screen[COLUMNS * (ROWS - 1) + i] = GREY_ON_BLACK << 8 | ' ';
        row = ROWS - 1;
    }
    move_cursor();
}

void putc(char c) {
    while (!(inb(COM1 + 5) & 0x20)) /* line status: transmit holding register empty */
        ;
    outb(COM1, (uint8_t)c);
    screen_putc(c);
}

void puts(const char *s) {
    while (*s)
        putc(*s++);
}

static void put_number(uint32_t value, unsigned base) {
    char digits[12];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[value % base];
        value /= base;
    } while (value);
    while (n)
        putc(digits[--n]);
}

/* %s %c %u %x %% - all a kernel's messages need */
void kprintf(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            putc(*fmt);
            continue;
        }
        switch (*++fmt) {
        case 's': puts(va_arg(args, const char *)); break;
        case 'c': putc((char)va_arg(args, int)); break;
        case 'u': put_number(va_arg(args, uint32_t), 10); break;
        case 'x': puts("0x"); put_number(va_arg(args, uint32_t), 16); break;
        default: putc(*fmt);
        }
    }
    va_end(args);
}

void exit_machine(uint8_t status) {
    outb(0xF4, status);
    for (;;)
        __asm__ volatile("cli; hlt");
}
