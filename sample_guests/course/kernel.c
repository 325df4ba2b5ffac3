/* kernel.c - the course kernel: the machine set up the way an OS course does it, step by
 * step, each step printed. Its serial output depends on nothing but the boot (no timing),
 * so the same kernel prints the same under QEMU and under vmlab in every mode.
 *
 * Command line words: `nopaging` skips paging (bt stops at CR0.PG until it shadows page
 * tables), `exit` ends the machine at the prompt instead of echoing keys.
 *
 * Built with PARAVIRT (course.pv.elf, course_hh.pv.elf) it is ported to pv's direct paging:
 * its page tables are the CPU's, read-only to it, changed through the hypercalls of the
 * `pv_` layer below. It prints the same.
 */
#include "kernel.h"

/* ---------------------------------------------------------------- multiboot information */
struct multiboot_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    uint32_t syms[4], mmap_length, mmap_addr;
};
struct module { uint32_t start, end, string, reserved; };

static const char *cmdline = "";

static int has_word(const char *word) { /* is `word` one of the command line's words? */
    for (const char *s = cmdline; *s;) {
        const char *w = word;
        while (*s && *s == *w) s++, w++;
        if (!*w && (*s == ' ' || !*s)) return 1;
        while (*s && *s != ' ') s++;
        while (*s == ' ') s++;
    }
    return 0;
}

static void show_boot(const struct multiboot_info *mbi) {
    if (mbi->flags & 1 << 2) {
        const char *args = P2V(mbi->cmdline);
        while (*args && *args != ' ') args++; /* the first word is the kernel's path */
        while (*args == ' ') args++;
        cmdline = args;
    }
    kprintf("command line: '%s'\n", cmdline);
    if (mbi->flags & 1 << 0)
        kprintf("memory: %u KiB below 1 MiB, %u KiB above\n", mbi->mem_lower, mbi->mem_upper);
    if (mbi->flags & 1 << 6) {
        const uint8_t *entry = P2V(mbi->mmap_addr), *end = entry + mbi->mmap_length;
        for (; entry < end; entry += *(const uint32_t *)entry + 4) {
            const uint32_t *e = (const uint32_t *)(entry + 4); /* base, length (64-bit), type */
            kprintf("  %x-%x %s\n", e[0], e[0] + e[2] - 1, e[4] == 1 ? "ram" : "reserved");
        }
    }
    if (mbi->flags & 1 << 3) {
        const struct module *mods = P2V(mbi->mods_addr);
        kprintf("modules: %u\n", mbi->mods_count);
        for (uint32_t i = 0; i < mbi->mods_count; i++) {
            const char *text = P2V(mods[i].start);
            kprintf("  module %u: %u bytes, '", i, mods[i].end - mods[i].start);
            for (uint32_t n = 0; n < mods[i].end - mods[i].start && text[n] != '\n'; n++)
                putc(text[n] >= ' ' && text[n] < 127 ? text[n] : '.');
            puts("'\n");
        }
    }
}

/* ---------------------------------------------------------------- GDT and TSS */
static uint64_t gdt[6];
static struct { uint16_t limit; uint32_t base; } __attribute__((packed)) gdt_pointer;
static uint32_t tss[26]; /* the 32-bit TSS: only ESP0 (word 1) and SS0 (word 2) are used */
static uint8_t kernel_stack[8192] __attribute__((aligned(16)));
void gdt_flush(void *pointer);

static uint64_t descriptor(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags) {
    return (uint64_t)(limit & 0xFFFF) | (uint64_t)(base & 0xFFFFFF) << 16
        | (uint64_t)access << 40 | (uint64_t)((limit >> 16) & 0xF) << 48
        | (uint64_t)flags << 52 | (uint64_t)(base >> 24) << 56;
}

static void gdt_install(void) {
    gdt[1] = descriptor(0, 0xFFFFF, 0x9A, 0xC); /* 0x08 kernel code */
    gdt[2] = descriptor(0, 0xFFFFF, 0x92, 0xC); /* 0x10 kernel data */
    gdt[3] = descriptor(0, 0xFFFFF, 0xFA, 0xC); /* 0x18 user code (DPL 3) */
    gdt[4] = descriptor(0, 0xFFFFF, 0xF2, 0xC); /* 0x20 user data (DPL 3) */
    gdt[5] = descriptor((uint32_t)tss, sizeof tss - 1, 0x89, 0); /* 0x28 available TSS */
    tss[1] = (uint32_t)(kernel_stack + sizeof kernel_stack);
    tss[2] = 0x10;
    gdt_pointer.limit = sizeof gdt - 1;
    gdt_pointer.base = (uint32_t)gdt;
    gdt_flush(&gdt_pointer);
    puts("gdt: kernel and user segments, tss\n");
}

/* ---------------------------------------------------------------- IDT, PIC, PIT */
static uint64_t idt[256];
static struct { uint16_t limit; uint32_t base; } __attribute__((packed)) idt_pointer;
extern uint32_t isr_table[48];
void isr128(void);

static void set_gate(int vector, uint32_t handler, uint8_t dpl) {
    idt[vector] = (uint64_t)(handler & 0xFFFF) | (uint64_t)0x08 << 16
        | (uint64_t)(0x8E | dpl << 5) << 40 | (uint64_t)(handler >> 16) << 48;
}

static void idt_install(void) {
    for (int v = 0; v < 48; v++)
        set_gate(v, isr_table[v], 0);
    set_gate(0x80, (uint32_t)isr128, 3); /* system calls: reachable from ring 3 */
    idt_pointer.limit = sizeof idt - 1;
    idt_pointer.base = (uint32_t)idt;
    __asm__ volatile("lidt %0" : : "m"(idt_pointer));
    puts("idt: 32 exceptions, 16 irqs, int 0x80\n");
}

static void pic_remap(void) { /* IRQ 0-7 -> vectors 32-39, IRQ 8-15 -> 40-47 */
    outb(0x20, 0x11); outb(0xA0, 0x11);  /* ICW1: edge triggered, cascade, ICW4 follows */
    outb(0x21, 0x20); outb(0xA1, 0x28);  /* ICW2: vector offsets */
    outb(0x21, 0x04); outb(0xA1, 0x02);  /* ICW3: the slave on IRQ 2 */
    outb(0x21, 0x01); outb(0xA1, 0x01);  /* ICW4: 8086 mode */
    outb(0x21, 0xFE); outb(0xA1, 0xFF);  /* OCW1: only the timer for now */
    puts("pic: irqs at vectors 32-47\n");
}

static void pit_start(unsigned hz) {
    uint16_t divisor = 1193182 / hz;
    outb(0x43, 0x36); /* channel 0, low then high byte, mode 3 (square wave) */
    outb(0x40, divisor & 0xFF);
    outb(0x40, divisor >> 8);
}

/* ---------------------------------------------------------------- paging */
static uint32_t directory[1024] __attribute__((aligned(4096)));
static uint32_t low_table[1024] __attribute__((aligned(4096)));
static uint32_t demand_table[1024] __attribute__((aligned(4096)));
static uint8_t demand_frame[4096] __attribute__((aligned(4096)));
extern uint8_t user_start[], user_end[];
#define PRESENT 1
#define WRITABLE 2
#define USER_PAGE 4
#define V2P(a) ((uint32_t)(a) - KERNEL_BASE)

/* The pv_ layer: what the port changes. On bare metal the kernel writes its page-table
   entries and CR3 itself; ported, it asks the monitor, which validates each entry. */
#ifdef PARAVIRT
extern uint8_t boot_tables[], boot_tables_end[]; /* boot.asm's (higher half), pinned at boot */
extern uint32_t boot_table[1024];

static int is_page_table(uint32_t frame) { /* mapped read-only: the monitor demands it */
    return frame == V2P(directory) || frame == V2P(low_table) || frame == V2P(demand_table)
        || (frame >= V2P(boot_tables) && frame < V2P(boot_tables_end));
}

static void pv_set_entry(uint32_t *entry, uint32_t value) {
    uint32_t request[2] = {V2P(entry), value}; /* (entry's physical address, new value) */
    if (hypercall(HC_MMU_UPDATE, (uint32_t)request, 1) != 1) {
        kprintf("mmu_update of %x refused\n", V2P(entry));
        exit_machine(1);
    }
}

static void pv_paging_on(uint32_t directory_frame) {
    if (KERNEL_BASE) { /* on boot.asm's table: it must stop mapping the new tables writable */
        uint32_t tables[3] = {V2P(directory), V2P(low_table), V2P(demand_table)};
        for (int i = 0; i < 3; i++) pv_set_entry(&boot_table[tables[i] >> 12], tables[i] | PRESENT);
    }
    if (hypercall(HC_NEW_BASEPTR, directory_frame, 0) != 0) {
        puts("new_baseptr refused\n");
        exit_machine(1);
    }
}
#else
static int is_page_table(uint32_t frame) { (void)frame; return 0; }

static void pv_set_entry(uint32_t *entry, uint32_t value) { *entry = value; }

static void pv_paging_on(uint32_t directory_frame) {
    __asm__ volatile("mov %0, %%cr3" : : "r"(directory_frame));
    uint32_t cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0 | 0x80000000u));
}
#endif

static void paging_start(void) {
    /* The first 4 MiB twice: at 0 (identity) and at 0xC0000000 (the higher half). Only the
       ring-3 task's pages are user-accessible; ported, the page tables are read-only. */
    for (uint32_t page = 0; page < 1024; page++) {
        uint32_t address = page << 12;
        int user = address >= V2P(user_start) && address < V2P(user_end);
        uint32_t writable = is_page_table(address) ? 0 : WRITABLE;
        low_table[page] = address | PRESENT | writable | (user ? USER_PAGE : 0);
    }
    directory[0] = V2P(low_table) | PRESENT | WRITABLE | USER_PAGE;
    directory[768] = V2P(low_table) | PRESENT | WRITABLE | USER_PAGE; /* the PTEs decide */
    pv_paging_on(V2P(directory));
    static const char probe[] = "the same bytes";
    /* an address, not a pointer into `probe`: the other mapping of the same frame */
    uintptr_t other = (uintptr_t)probe + (KERNEL_BASE ? -0xC0000000u : 0xC0000000u);
    const char *alias = (const char *)other;
    kprintf("paging: identity + higher half; %x reads '%s'\n", (uint32_t)alias, alias);
}

static void page_fault(struct frame *f) {
    uint32_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    kprintf("page fault at %x (error %x): ", cr2, f->error);
    if (cr2 >> 22 != 0x280 || directory[0x280] & PRESENT) {
        puts("not ours, stopping\n");
        exit_machine(1);
    }
    pv_set_entry(&demand_table[(cr2 >> 12) & 1023], V2P(demand_frame) | PRESENT | WRITABLE);
    pv_set_entry(&directory[0x280], V2P(demand_table) | PRESENT | WRITABLE);
    puts("mapped a page there\n");
}

/* ---------------------------------------------------------------- interrupts */
static volatile uint32_t ticks;
static const char keymap[58] = "\0\0331234567890-=\b\tqwertyuiop[]\n\0asdfghjkl;'`\0\\zxcvbnm,./\0*\0 ";
void leave_user(void);

static void system_call(struct frame *f) {
    if (f->eax == 1) { /* write(buffer, length) */
        const char *s = (const char *)f->ebx;
        for (uint32_t i = 0; i < f->ecx; i++) putc(s[i]);
        f->eax = f->ecx;
    } else if (f->eax == 2) { /* exit(status): back to where enter_user was called */
        kprintf("back in ring 0: the task exited with status %u\n", f->ebx);
        leave_user();
    } else {
        f->eax = (uint32_t)-1;
    }
}

void interrupt(struct frame *f) {
    if (f->vector == 14) {
        page_fault(f);
    } else if (f->vector < 32) {
        kprintf("exception %u at %x (error %x)\n", f->vector, f->eip, f->error);
        exit_machine(1);
    } else if (f->vector == 32) {
        ticks++;
    } else if (f->vector == 33) {
        uint8_t code = inb(0x60);
        if (code < sizeof keymap && keymap[code]) putc(keymap[code]); /* key presses only */
    } else if (f->vector == 0x80) {
        system_call(f);
    }
    if (f->vector >= 40 && f->vector < 48) outb(0xA0, 0x20); /* EOI to the slave, */
    if (f->vector >= 32 && f->vector < 48) outb(0x20, 0x20); /* and to the master */
}

/* ---------------------------------------------------------------- the kernel */
void enter_user(void (*entry)(void), void *stack);

void kmain(uint32_t magic, uint32_t mbi_address) {
    console_init();
    puts(KERNEL_BASE ? "course kernel (higher half, at 0xc0100000)\n" : "course kernel\n");
    if (magic != 0x2BADB002) {
        kprintf("not booted by a multiboot loader (eax %x)\n", magic);
        exit_machine(1);
    }
    show_boot(P2V(mbi_address));
    gdt_install();
    idt_install();
    pic_remap();
    pit_start(100);
    __asm__ volatile("sti");
    while (ticks < 3) __asm__ volatile("hlt");
    puts("timer: 3 ticks\n");
    if (!has_word("nopaging") || KERNEL_BASE) { /* the higher half cannot do without */
        paging_start();
        volatile uint32_t *far = (uint32_t *)0xA0000000u;
        *far = 42; /* not mapped: the page fault handler maps it, the store is retried */
        kprintf("%x now holds %u\n", (uint32_t)far, *far);
    }
    puts("entering ring 3\n");
    enter_user(user_main, user_stack + USER_STACK);
    /* back here from the exit call's interrupt gate, which cleared IF: no IRET restores it */
    __asm__ volatile("sti");
    puts("> ");
    if (has_word("exit")) {
        puts("exit\n");
        exit_machine(0);
    }
    outb(0x21, 0xFD); /* the timer's work is done: at the prompt only a key wakes us */
    for (;;) __asm__ volatile("hlt"); /* echo keys, for ever */
}
