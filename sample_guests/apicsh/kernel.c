/* kernel.c - the APIC shell: a kernel that runs on the PC's APICs, the way a teaching Unix
 * of the xv6 kind does. It masks the 8259 pair, enables the local APIC, programs the APIC
 * timer periodic (100 Hz), routes the keyboard (IRQ 1) and COM1 (IRQ 4) through the I/O
 * APIC, and enters a ring-3 shell that reads what is typed on either. Each step is printed.
 * The console code and the interrupt stubs are the course kernel's (sample_guests/course/).
 */
#include "../course/kernel.h"

#define LAPIC ((volatile uint32_t *)0xFEE00000u)
#define IOAPIC ((volatile uint32_t *)0xFEC00000u)
/* local APIC registers, as 32-bit word indices (byte offset / 4) */
#define ID (0x020 / 4)
#define VERSION (0x030 / 4)
#define TPR (0x080 / 4)
#define EOI (0x0B0 / 4)
#define SVR (0x0F0 / 4)
#define ESR (0x280 / 4)
#define LVT_TIMER (0x320 / 4)
#define LVT_LINT0 (0x350 / 4)
#define LVT_LINT1 (0x360 / 4)
#define LVT_ERROR (0x370 / 4)
#define INITIAL_COUNT (0x380 / 4)
#define DIVIDE (0x3E0 / 4)
#define MASKED 0x10000
#define PERIODIC 0x20000
#define ENABLE 0x100

#define T_TIMER 32 /* the vectors this kernel gives its interrupts */
#define T_KEYBOARD 33
#define T_COM1 36
#define T_SPURIOUS 47
#define COM1 0x3F8

/* ---------------------------------------------------------------- GDT, TSS and IDT */
static uint64_t gdt[6];
static struct { uint16_t limit; uint32_t base; } __attribute__((packed)) gdt_pointer, idt_pointer;
static uint32_t tss[26]; /* only ESP0 (word 1) and SS0 (word 2) are used */
static uint8_t kernel_stack[8192] __attribute__((aligned(16)));
static uint64_t idt[256];
extern uint32_t isr_table[48];
void isr128(void);
void gdt_flush(void *pointer);

static uint64_t segment(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags) {
    return (uint64_t)(limit & 0xFFFF) | (uint64_t)(base & 0xFFFFFF) << 16
        | (uint64_t)access << 40 | (uint64_t)((limit >> 16) & 0xF) << 48
        | (uint64_t)flags << 52 | (uint64_t)(base >> 24) << 56;
}

static uint64_t interrupt_gate(uint32_t handler, uint8_t dpl) {
    return (uint64_t)(handler & 0xFFFF) | (uint64_t)0x08 << 16
        | (uint64_t)(0x8E | dpl << 5) << 40 | (uint64_t)(handler >> 16) << 48;
}

static void tables_install(void) {
    gdt[1] = segment(0, 0xFFFFF, 0x9A, 0xC); /* 0x08 kernel code, 0x10 data */
    gdt[2] = segment(0, 0xFFFFF, 0x92, 0xC);
    gdt[3] = segment(0, 0xFFFFF, 0xFA, 0xC); /* 0x18 user code, 0x20 data (DPL 3) */
    gdt[4] = segment(0, 0xFFFFF, 0xF2, 0xC);
    gdt[5] = segment((uint32_t)tss, sizeof tss - 1, 0x89, 0); /* 0x28 the TSS */
    tss[1] = (uint32_t)(kernel_stack + sizeof kernel_stack);
    tss[2] = 0x10;
    gdt_pointer.limit = sizeof gdt - 1;
    gdt_pointer.base = (uint32_t)gdt;
    gdt_flush(&gdt_pointer);
    for (int v = 0; v < 48; v++)
        idt[v] = interrupt_gate(isr_table[v], 0);
    idt[0x80] = interrupt_gate((uint32_t)isr128, 3); /* system calls, from ring 3 */
    idt_pointer.limit = sizeof idt - 1;
    idt_pointer.base = (uint32_t)idt;
    __asm__ volatile("lidt %0" : : "m"(idt_pointer));
    puts("gdt and idt: ring 0 and ring 3, vectors 0-47 and int 0x80\n");
}

/* ---------------------------------------------------------------- the APICs */
static void ioapic_write(uint32_t reg, uint32_t value) {
    IOAPIC[0] = reg;      /* IOREGSEL */
    IOAPIC[4] = value;    /* IOWIN, at offset 0x10 */
}

static uint32_t ioapic_read(uint32_t reg) {
    IOAPIC[0] = reg;
    return IOAPIC[4];
}

static void ioapic_route(int irq, int vector) { /* edge, active high, to APIC 0 */
    ioapic_write(0x10 + 2 * irq + 1, 0);
    ioapic_write(0x10 + 2 * irq, vector);
}

static void apic_start(void) {
    outb(0x21, 0xFF); /* the 8259 pair masked: it takes no part from here on */
    outb(0xA1, 0xFF);
    puts("8259: masked\n");
    kprintf("local apic: id %u, version %x\n", LAPIC[ID] >> 24, LAPIC[VERSION]);
    LAPIC[SVR] = ENABLE | T_SPURIOUS;
    LAPIC[LVT_LINT0] = MASKED; /* no virtual wire from the 8259 */
    LAPIC[LVT_LINT1] = MASKED;
    LAPIC[LVT_ERROR] = MASKED;
    LAPIC[ESR] = 0;
    LAPIC[TPR] = 0; /* every priority class accepted */
    LAPIC[DIVIDE] = 0x3; /* the 1 GHz bus divided by 16 */
    LAPIC[LVT_TIMER] = PERIODIC | T_TIMER;
    LAPIC[INITIAL_COUNT] = 625000; /* 10 ms: 100 Hz */
    puts("local apic: enabled, timer periodic at 100 Hz\n");
    kprintf("io apic: version %x, %u pins\n", ioapic_read(1) & 0xFF, (ioapic_read(1) >> 16) + 1);
    ioapic_route(1, T_KEYBOARD);
    ioapic_route(4, T_COM1);
    outb(COM1 + 1, 0x01); /* the UART interrupts when a byte arrives */
    puts("io apic: keyboard (irq 1) and com1 (irq 4) routed\n");
}

/* ---------------------------------------------------------------- input and interrupts */
static volatile uint32_t ticks;
static volatile char typed[64];
static volatile uint32_t typed_in, typed_out;
static const char keymap[58] = "\0\0331234567890-=\b\tqwertyuiop[]\n\0asdfghjkl;'`\0\\zxcvbnm,./\0*\0 ";

static void typed_put(char c) {
    if (typed_in - typed_out < sizeof typed) typed[typed_in++ % sizeof typed] = c;
}

static char typed_take(void) { /* the next byte typed: sleeps until there is one */
    while (typed_in == typed_out)
        __asm__ volatile("sti; hlt; cli");
    return typed[typed_out++ % sizeof typed];
}

static void system_call(struct frame *f) {
    if (f->eax == 1) { /* write(buffer, length) */
        const char *s = (const char *)f->ebx;
        for (uint32_t i = 0; i < f->ecx; i++) putc(s[i]);
        f->eax = f->ecx;
    } else if (f->eax == 2) { /* exit(status): the machine ends */
        exit_machine((uint8_t)f->ebx);
    } else if (f->eax == 3) { /* read(): one byte */
        f->eax = (uint8_t)typed_take();
    } else if (f->eax == 4) { /* ticks() */
        f->eax = ticks;
    } else {
        f->eax = (uint32_t)-1;
    }
}

void interrupt(struct frame *f) {
    if (f->vector < 32) {
        kprintf("exception %u at %x (error %x)\n", f->vector, f->eip, f->error);
        exit_machine(1);
    } else if (f->vector == T_TIMER) {
        ticks++;
    } else if (f->vector == T_KEYBOARD) {
        uint8_t code = inb(0x60);
        if (code < sizeof keymap && keymap[code]) typed_put(keymap[code]); /* presses only */
    } else if (f->vector == T_COM1) {
        while (inb(COM1 + 5) & 1) typed_put((char)inb(COM1));
    } else if (f->vector == 0x80) {
        system_call(f);
    }
    if (f->vector >= 32 && f->vector < T_SPURIOUS) LAPIC[EOI] = 0; /* a spurious one gets none */
}

/* ---------------------------------------------------------------- the kernel */
void enter_user(void (*entry)(void), void *stack);

void kmain(uint32_t magic) {
    console_init();
    puts("apic shell kernel\n");
    if (magic != 0x2BADB002) {
        kprintf("not booted by a multiboot loader (eax %x)\n", magic);
        exit_machine(1);
    }
    tables_install();
    apic_start();
    __asm__ volatile("sti");
    while (ticks < 3) __asm__ volatile("hlt");
    puts("timer: 3 ticks from the local apic\n");
    puts("entering the ring-3 shell (type help)\n");
    enter_user(user_main, user_stack + USER_STACK);
}
