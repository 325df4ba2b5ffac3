/* vmlab's block clock: count retired guest instructions per translated block.
 *
 * Unicorn counts instructions for emu_start(count=N) with a code hook on every instruction
 * (~20 ns each). Here a UC_HOOK_BLOCK callback, called by unicorn directly before each
 * translated block runs, adds the block's instruction count and stops the CPU *before* a
 * block that would take the run past its deadline (a stop from the block hook is exact: none
 * of the block's instructions has run). Python finishes a deadline that falls inside a block
 * with a code hook bounded to that block (vclock_step), see blockclock.py.
 *
 * The hook is given (address, size in bytes), not an instruction count: counts live in a
 * table filled by Python (capstone) on a miss, for blocks whose code is in RAM only. An entry
 * keeps a copy of the block's bytes and is checked against them on each use: self-modifying
 * code can keep a block's address and size and change its instruction count. The address is
 * linear: with paging on, the helper walks the guest's tables (read, no side effect) to find
 * the bytes, so another address space's code at the same address is another count.
 *
 * No unicorn symbol is linked: Python passes uc_emu_stop's address (clock.emu_stop).
 */
#include <stdint.h>
#include <string.h>

#define SLOTS 8192u         /* table entries (power of two), open addressing */
#define ARENA (1u << 20)    /* bytes kept to check entries against RAM */
#define MISS_STOP 0x80000000u /* from the miss callback: stop before this block, Python acts */
#define ENDS_STI 0x40000000u  /* in a count: the block's last instruction is STI */
#define ENDS_CR0 0x20000000u  /* in a count: the block's last instruction writes CR0 */
#define ENDS_CR 0x10000000u   /* in a count: the last instruction writes CR0, CR3 or CR4 */
#define COUNT_MASK 0x0FFFFFFFu
#define EFLAGS_IF 0x200u
#define CR0_PG 0x80000000u
#define CR4_PSE 0x10u
#define CR4_PAE 0x20u
#define NOWHERE (~0ull)
#define WALKS 64u /* translations kept of tables outside RAM (power of two) */

typedef void uc_engine;
typedef int (*emu_stop_fn)(uc_engine *);
typedef uint32_t (*miss_fn)(uint64_t address, uint32_t size);
typedef uint32_t (*cut_fn)(uint64_t block, uint32_t size, uint64_t address);
typedef int (*reg_read_fn)(uc_engine *, int regid, void *value);
typedef int (*mem_read_fn)(uc_engine *, uint64_t address, void *bytes, uint64_t size);

struct entry {
    uint64_t address;
    uint32_t size;  /* 0: free */
    uint32_t count;
    uint32_t bytes; /* offset of the copy in the arena + 1 (0: no copy) */
    uint32_t pad;
};

struct vclock {
    /* per run: set by BlockClock.run */
    uint64_t base;      /* instructions of the run before the block now running */
    uint64_t end;       /* base + the running block's count: where it ends */
    uint64_t deadline;  /* no block may start that would end past it */
    uint64_t block;     /* address of the block now running (~0: none yet) */
    uint32_t block_size;
    uint32_t stop;      /* a stop is pending (set by Python hooks too): count nothing more */
    uint32_t why;       /* stopped before a block: 1 crossing the deadline, 2 a table miss,
                           3 the interrupt window opened, 4 CR0 was written (watch_cr0) */
    uint32_t step_left; /* vclock_step: instructions still to run inside the block */
    /* set once by Python */
    emu_stop_fn emu_stop;
    miss_fn miss;
    cut_fn cut; /* instructions of `block` before `address` (its counts as they ran) */
    const uint8_t *ram; /* guest RAM as the CPU sees it with paging off */
    uint64_t ram_size;
    uint32_t reload;      /* read the paging registers before the next block (a run's start) */
    uint32_t arena_used;
    /* the interrupt window (Machine.watch_interrupt_window): EFLAGS.IF can only become 1 by
     * STI, POPF or IRET, and each ends its block, so a look at each block's start sees it
     * open before the next instruction; after STI, QEMU runs the one instruction of the STI
     * shadow as a block of its own, which runs before the stop */
    reg_read_fn reg_read;
    int32_t eflags_id;
    uint32_t watch_if;
    uint32_t after_sti; /* the last block run ended with STI */
    uint32_t shadow;    /* the block now running is the STI shadow, let through */
    /* paging may come on (mmio.py, UNMAPPED): stop before the block after a CR0 write */
    uint32_t watch_cr0;
    uint32_t after_cr0; /* the last block run ended with a write to CR0 */
    /* paging: a block's address is linear. CR0, CR3 and CR4 change only by a MOV to CR,
     * which ends its block (reload after it), or between runs (reload at each start) */
    mem_read_fn mem_read; /* page tables outside RAM (trap's shadows in monitor memory) */
    int32_t cr0_id, cr3_id, cr4_id;
    /* EFLAGS as this helper's code hooks (vclock_step, vclock_check) read them before the
     * instruction at `hooked_at`, in the block now running (~0: none). Unicorn brings the
     * lazy flags up to date for a code hook and goes on from them, but a fault in that
     * instruction (an access to an unmapped hole) puts back the lazy state it began with,
     * so EFLAGS then reads wrong (docs/clock.md): Python writes these back */
    uint64_t hooked_at;
    uint64_t hooked_eflags;
    uint32_t cr0, cr3, cr4;
    /* trap's shadow tables are the monitor's, outside RAM: the guest cannot write them and
     * the monitor changes them only between two emu_starts (each reloads), so translations
     * through them are kept until then (each read of them is a call into unicorn) */
    uint32_t generation; /* of the translations kept: reload_paging moves on */
    struct walk {
        uint32_t page, generation;
        uint64_t frame;
    } walks[WALKS];
    struct entry table[SLOTS];
    uint8_t arena[ARENA];
};

static inline uint32_t slot_of(uint64_t address, uint32_t size) {
    uint64_t h = (address ^ ((uint64_t)size << 32)) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 40) & (SLOTS - 1);
}

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v); /* one unaligned load */
    return v;
}

static inline uint32_t load32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* *in_ram is cleared when the entry was read from RAM (the guest may write it) */
static int read_physical32(struct vclock *c, uc_engine *uc, uint64_t address, uint32_t *value,
                           int *in_ram) {
    if (address + 4 <= c->ram_size) {
        *value = load32(c->ram + address);
        *in_ram = 0;
        return 1;
    }
    return c->mem_read(uc, address, value, 4) == 0;
}

/* The guest-physical address of `linear` through the tables in force (NOWHERE: not mapped,
 * or a paging mode vmlab does not model), as the CPU walks them but without setting A/D. */
static uint64_t walk(struct vclock *c, uc_engine *uc, uint32_t linear, int *keep) {
    uint32_t pde, pte;
    if (!read_physical32(c, uc, (c->cr3 & ~0xFFFu) | ((linear >> 22) << 2), &pde, keep) ||
        !(pde & 1))
        return NOWHERE;
    if ((pde & 0x80) && (c->cr4 & CR4_PSE))
        return (pde & 0xFFC00000u) | (linear & 0x3FF000u);
    if (!read_physical32(c, uc, (pde & ~0xFFFu) | (((linear >> 12) & 0x3FFu) << 2), &pte, keep) ||
        !(pte & 1))
        return NOWHERE;
    return pte & ~0xFFFu;
}

static uint64_t physical(struct vclock *c, uc_engine *uc, uint32_t linear) {
    if (!(c->cr0 & CR0_PG))
        return linear;
    if (c->cr4 & CR4_PAE)
        return NOWHERE;
    struct walk *w = &c->walks[(linear >> 12) & (WALKS - 1)];
    if (w->generation == c->generation && w->page == linear >> 12)
        return w->frame | (linear & 0xFFFu);
    int keep = 1;
    uint64_t frame = walk(c, uc, linear, &keep);
    if (frame == NOWHERE)
        return NOWHERE;
    if (keep) {
        w->page = linear >> 12;
        w->generation = c->generation;
        w->frame = frame;
    }
    return frame | (linear & 0xFFFu);
}

/* Where the block's code is in host memory: its bytes must all be RAM, contiguous (a block
 * across two pages mapped apart is asked for each time), else 0 (never kept). */
static inline const uint8_t *code_in_ram(struct vclock *c, uc_engine *uc, uint64_t address,
                                         uint32_t size) {
    if (!(c->cr0 & CR0_PG)) /* the common case, first */
        return address + size <= c->ram_size ? c->ram + address : 0;
    uint32_t span = size ? size - 1 : 0;
    uint64_t first = physical(c, uc, (uint32_t)address);
    if (first == NOWHERE || first + span >= c->ram_size)
        return 0;
    if ((address & 0xFFFu) + span > 0xFFFu &&
        physical(c, uc, (uint32_t)(address + span)) != first + span)
        return 0;
    return c->ram + first;
}

/* a[0..n) == b[0..n), inline: a call to memcmp for the ~20 bytes of a typical block cost
 * about as much as the rest of the hook (the last word overlaps the one before it) */
static inline int same_bytes(const uint8_t *a, const uint8_t *b, uint32_t n) {
    if (n >= 8) {
        uint32_t i = 0;
        for (; i + 8 < n; i += 8)
            if (load64(a + i) != load64(b + i))
                return 0;
        return load64(a + n - 8) == load64(b + n - 8);
    }
    if (n >= 4)
        return load32(a) == load32(b) && load32(a + n - 4) == load32(b + n - 4);
    for (uint32_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* The entry for (address, size) whose bytes still match the code now at `code`, or 0. */
static struct entry *find(struct vclock *c, const uint8_t *code, uint64_t address,
                          uint32_t size) {
    uint32_t i = slot_of(address, size);
    for (uint32_t probe = 0; probe < SLOTS; probe++, i = (i + 1) & (SLOTS - 1)) {
        struct entry *e = &c->table[i];
        if (e->size == 0)
            return 0;
        if (e->address == address && e->size == size) {
            if (!same_bytes(c->arena + e->bytes - 1, code, size))
                return 0; /* the code changed: Python recounts, then replaces the entry */
            return e;
        }
    }
    return 0;
}

void vclock_forget(struct vclock *c) {
    memset(c->table, 0, sizeof c->table);
    c->arena_used = 0;
}

static void store(struct vclock *c, const uint8_t *code, uint64_t address, uint32_t size,
                  uint32_t count) {
    uint32_t i = slot_of(address, size);
    struct entry *free_slot = 0;
    for (uint32_t probe = 0; probe < SLOTS; probe++, i = (i + 1) & (SLOTS - 1)) {
        struct entry *e = &c->table[i];
        if (e->size == 0 || (e->address == address && e->size == size)) {
            free_slot = e;
            break;
        }
    }
    if (free_slot == 0 || c->arena_used + size > ARENA) { /* full: start again */
        vclock_forget(c);
        free_slot = &c->table[slot_of(address, size)];
    }
    free_slot->address = address;
    free_slot->size = size;
    free_slot->count = count;
    memcpy(c->arena + c->arena_used, code, size);
    free_slot->bytes = c->arena_used + 1;
    c->arena_used += size;
}

static void reload_paging(struct vclock *c, uc_engine *uc) {
    c->reload = 0;
    c->generation++; /* never 0 once used: the zeroed walks are not taken for kept ones */
    if (c->reg_read(uc, c->cr0_id, &c->cr0) || c->reg_read(uc, c->cr3_id, &c->cr3) ||
        c->reg_read(uc, c->cr4_id, &c->cr4))
        c->cr0 = c->cr4 = CR4_PAE | CR0_PG; /* unreadable: keep nothing (never happens) */
}

static void stop_now(struct vclock *c, uc_engine *uc, uint32_t why) {
    c->stop = 1;
    c->why = why;
    c->emu_stop(uc);
}

/* A block that starts inside the one running and ends before it: QEMU abandoned the running
 * block at `address` (a store there changed the block's own code: precise self-modifying
 * code) and runs that one instruction as a block of its own. Any other block starting
 * inside the running one (a jump back, a REP's next round) ends where it ends or later. */
static void check_cut(struct vclock *c, uint64_t address, uint32_t size) {
    uint64_t end = c->block + c->block_size;
    if (c->block == ~0ull || address < c->block || address + size >= end)
        return;
    c->end = c->base + c->cut(c->block, c->block_size, address);
}

/* UC_HOOK_BLOCK: the block at `address` is about to run. */
void vclock_block(uc_engine *uc, uint64_t address, uint32_t size, void *data) {
    struct vclock *c = data;
    c->hooked_at = NOWHERE;
    if (c->stop) { /* a hook asked to stop: this block (chained to the last one) never runs */
        c->block = ~0ull;
        return;
    }
    if (__builtin_expect(c->reload, 0))
        reload_paging(c, uc);
    if (c->after_cr0) {
        c->after_cr0 = 0;
        if (c->watch_cr0) { /* Python looks at CR0.PG before this block runs */
            c->block = address;
            c->block_size = size;
            c->base = c->end;
            stop_now(c, uc, 4);
            return;
        }
    }
    check_cut(c, address, size);
    const uint8_t *code = code_in_ram(c, uc, address, size);
    struct entry *e = code ? find(c, code, address, size) : 0;
    uint32_t count, sti, cr0, crx, shadow = 0;
    if (e) {
        count = e->count;
    } else {
        count = c->miss(address, size); /* (code outside RAM is never kept: it cannot be
                                            checked, and guests hardly run code there) */
        if (count & MISS_STOP) { /* Python must prepare this block first */
            c->block = address;
            c->block_size = size;
            c->base = c->end;
            stop_now(c, uc, 2);
            return;
        }
        if (code)
            store(c, code, address, size, count);
    }
    sti = count & ENDS_STI;
    cr0 = count & ENDS_CR0;
    crx = count & ENDS_CR;
    count &= COUNT_MASK;
    c->base = c->end;
    c->block = address;
    c->block_size = size;
    if (c->base >= c->deadline) { /* the count is used up before the window is looked at */
        stop_now(c, uc, 1);
        return;
    }
    if (c->watch_if) {
        uint64_t eflags = 0;
        if (c->after_sti) {
            c->after_sti = 0; /* the STI shadow: this one instruction runs first */
            shadow = 1;
        } else if (c->reg_read(uc, c->eflags_id, &eflags) == 0 && (eflags & EFLAGS_IF)) {
            stop_now(c, uc, 3);
            return;
        }
    }
    if (c->base + count > c->deadline) {
        stop_now(c, uc, 1);
        return;
    }
    c->after_sti = sti != 0;
    c->after_cr0 = cr0 != 0;
    c->reload = crx != 0;
    c->shadow = shadow;
    c->end = c->base + count;
}

/* A code hook of the helper's is about to let the instruction at `address` run. */
static void note_flags(struct vclock *c, uc_engine *uc, uint64_t address) {
    uint64_t eflags = 0;
    c->hooked_at = c->reg_read(uc, c->eflags_id, &eflags) == 0 ? address : NOWHERE;
    c->hooked_eflags = eflags;
}

/* UC_HOOK_CODE bounded to one block: run `step_left` more instructions, then stop (a stop
 * from a code hook takes effect before the instruction: unicorn checks right after it). */
void vclock_step(uc_engine *uc, uint64_t address, uint32_t size, void *data) {
    struct vclock *c = data;
    (void)size;
    note_flags(c, uc, address);
    if (c->stop)
        return;
    if (c->step_left == 0) {
        stop_now(c, uc, 1);
        return;
    }
    c->step_left--;
}

/* UC_HOOK_CODE on the instruction after a port I/O inside a block: noting the flags is all
 * it does. Unicorn checks for a pending stop after every code hook, so a stop requested by
 * the I/O takes effect here instead of at the block's end. */
void vclock_check(uc_engine *uc, uint64_t address, uint32_t size, void *data) {
    (void)size;
    note_flags(data, uc, address);
}

uint64_t vclock_sizeof(void) { return sizeof(struct vclock); }
