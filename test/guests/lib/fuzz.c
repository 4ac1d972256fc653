/* Address roles for fuzz.elf (see fuzz.h). */
#include "fuzz.h"

extern char __image_start[], __image_end[];

#define FOUR_GIB (1ull << 32)

static uint64_t below(uint64_t (*rnd)(void), uint64_t n) { return n ? rnd() % n : 0; }

/* Somewhere in the non-RAM gap after the RAM run, leaving room for a used ring. */
static uint64_t gap_addr(const struct fuzz_map *m, uint64_t (*rnd)(void))
{
    return m->low_end + below(rnd, m->gap_len - USED_ROOM);
}

/* A below-4 GiB address acceptable for role (also the low half of larger ones). */
static uint64_t low_for(const struct fuzz_map *m, int role, uint64_t (*rnd)(void))
{
    unsigned c = (unsigned)below(rnd, 100);
    uint64_t regs = m->win_size < 0x100 ? m->win_size : 0x100;
    switch (role) {
    case ROLE_DESC:
    case ROLE_AVAIL:
        if (c < 45)
            return role == ROLE_DESC ? m->desc + 16 * below(rnd, (DESC_REGION / 4) / 16)
                                     : m->avail + below(rnd, AVAIL_SPAN);
        if (c < 70 || (c < 88 && !m->gap_len))
            return m->zero + below(rnd, ZERO_REGION / 4);
        if (c < 88)
            return gap_addr(m, rnd);
        return m->win + below(rnd, regs);   /* registers read as ring memory */
    case ROLE_USED:
    case ROLE_WRITE:
        if (c < 45)
            return role == ROLE_USED ? m->used + 4 * below(rnd, USED_SPAN / 4) + (below(rnd, 8) == 0)
                                     : m->used + below(rnd, USED_REGION - USED_ROOM);
        if (c < 65 && m->free_len > USED_ROOM)
            return m->free_start + below(rnd, m->free_len - USED_ROOM);
        if (c < 75 && m->gap_len)
            return m->low_end - 1 - below(rnd, 4096);           /* straddles the end of RAM */
        if (c < 90 && m->gap_len)
            return gap_addr(m, rnd);
        if (c >= 90 && !m->no_dma_window)
            return m->win + below(rnd, m->win_size);            /* DMA into the registers */
        return m->used + below(rnd, USED_SPAN);
    default:
        switch (c % 4) {
        case 0: return m->hdr + below(rnd, HDR_SPAN);
        case 1: return low_for(m, ROLE_DESC, rnd);
        case 2: return low_for(m, ROLE_AVAIL, rnd);
        default: return low_for(m, ROLE_WRITE, rnd);
        }
    }
}

struct fuzz_addr fuzz_clamp(const struct fuzz_map *m, int role, struct fuzz_addr a)
{
    (void)role;
    uint64_t lim = ~0ull;
    if (a.addr < FOUR_GIB) {
        if (a.addr >= m->win && a.addr < m->win + m->win_size)
            lim = m->win + m->win_size - a.addr;
        else if (a.addr < m->low_end + m->gap_len)
            lim = m->low_end + m->gap_len - a.addr;         /* not into other MMIO */
    } else if (a.addr + a.len < a.addr) {
        lim = (0 - a.addr) + WRAP_MAX;                      /* wraps into low memory only */
    }
    if (a.len > lim)
        a.len = (uint32_t)lim;
    return a;
}

int fuzz_writable(const struct fuzz_map *m, uint64_t addr, uint32_t len)
{
    uint64_t end = addr + len;
    if (addr >= FOUR_GIB)
        return end >= addr || end <= WRAP_MAX;
    if (addr >= m->win && end <= m->win + m->win_size)
        return !m->no_dma_window;
    return addr >= m->used && end <= m->low_end + m->gap_len;
}

struct fuzz_addr fuzz_addr(const struct fuzz_map *m, int role, uint32_t len, uint64_t (*rnd)(void))
{
    unsigned c = (unsigned)below(rnd, 100);
    uint64_t a;
    if (c < 70) {
        a = low_for(m, role, rnd);
    } else if (c < 85) {                    /* above 4 GiB, past all RAM */
        uint64_t hi;
        switch (below(rnd, 4)) {
        case 0: case 1: hi = m->hi0 + below(rnd, 4); break;
        case 2: hi = m->hi0 + below(rnd, FOUR_GIB - m->hi0); break;
        default: {
            static const uint32_t v[] = { 0x100, 0x8000, 0x10000, 0x80000000u, 0xffffffffu };
            hi = v[below(rnd, 5)];
            if (hi < m->hi0)
                hi = m->hi0;
        }
        }
        a = hi << 32 | (uint32_t)low_for(m, role, rnd);
    } else {                                /* the top of the address space */
        a = ~0ull - below(rnd, role == ROLE_DESC || role == ROLE_AVAIL ? 8 : 4096);
    }
    return fuzz_clamp(m, role, (struct fuzz_addr){ a, len });
}

void fuzz_map_exclude(struct fuzz_map *m, uint64_t win)
{
    if (win >= m->low_end && win < m->low_end + m->gap_len)
        m->gap_len = win - m->low_end;
    if (m->gap_len < 2 * USED_ROOM)
        m->gap_len = 0;
}

const char *fuzz_map_init(struct fuzz_map *m, const struct boot_info *bi, uint64_t win, uint64_t win_size)
{
    memset(m, 0, sizeof(*m));
    m->image_start = (uintptr_t)__image_start;
    m->image_end = (uintptr_t)__image_end;
    m->win = win;
    m->win_size = win_size;
    if (!bi->e820_count)
        return "no e820 map";
    uint64_t lo = 0, hi = 0;
    for (unsigned i = 0; i < bi->e820_count; i++) {
        const struct boot_e820 *e = &bi->e820[i];
        if (e->type == 1 && e->addr <= m->image_start && m->image_start < e->addr + e->size)
            lo = e->addr, hi = e->addr + e->size;
        if (e->type == 1 && e->addr + e->size > m->ram_top)
            m->ram_top = e->addr + e->size;
    }
    if (!hi)
        return "image not in e820 RAM";
    (void)lo;
    for (int changed = 1; changed;) {       /* merge adjacent RAM entries */
        changed = 0;
        for (unsigned i = 0; i < bi->e820_count; i++) {
            const struct boot_e820 *e = &bi->e820[i];
            if (e->type == 1 && e->addr <= hi && e->addr + e->size > hi) {
                hi = e->addr + e->size;
                changed = 1;
            }
        }
    }
    m->low_end = hi;
    m->arena = (m->image_end + FUZZ_MiB - 1) & ~(FUZZ_MiB - 1);
    m->arena_end = m->arena + ARENA_SIZE;
    if (m->arena_end > hi || hi > FOUR_GIB)
        return "RAM too small for the 7 MiB arena after the image";
    m->desc = m->arena;
    m->avail = m->desc + DESC_REGION;
    m->hdr = m->avail + HDR_OFF;
    m->zero = m->avail + AVAIL_REGION;
    m->used = m->zero + ZERO_REGION;
    m->wbuf = m->used + WBUF_OFF;
    m->free_start = m->arena_end;
    m->free_len = hi - m->arena_end;

    /* The gap: past the RAM run, before any other e820 entry, the device and 3 GiB. */
    uint64_t lim = hi + GAP_MAX;
    if (lim > 0xc0000000ull)
        lim = 0xc0000000ull;
    if (win >= hi && win < lim)
        lim = win;
    for (unsigned i = 0; i < bi->e820_count; i++) {
        const struct boot_e820 *e = &bi->e820[i];
        if (!e->size)
            continue;
        if (e->addr >= hi && e->addr < lim)
            lim = e->addr;
        if (e->addr < hi && e->addr + e->size > hi && e->type != 1)
            lim = hi;
    }
    m->gap_len = lim > hi ? lim - hi : 0;
    fuzz_map_exclude(m, win);           /* drops a gap too small for a used ring */
    m->hi0 = (uint32_t)((m->ram_top >> 32) + 1);

    /* The read side (descriptor, avail and zero regions) starts as zeros. */
    memset((void *)(uintptr_t)m->arena, 0, (size_t)(m->used - m->arena));
    return 0;
}
