/*
 * Address bookkeeping for fuzz.elf: which guest-physical addresses the fuzzer
 * may hand to the device, by role, so that a correct device can never make
 * the guest crash itself (README.md, "fuzz.elf").
 *
 * The arena is RAM from the first 1 MiB boundary after the image:
 *
 *   +0     descriptor region (2 MiB): only whole descriptors at 16-byte slots,
 *          written by the guest (queue tables below DESC_TABLE_SPAN, indirect
 *          tables above it), or zeros
 *   +2M    avail region (1 MiB): avail rings below AVAIL_SPAN; request headers
 *          and device-readable data at +512K (map.hdr)
 *   +3M    zero region (2 MiB): never written; unaligned tables point here
 *   +5M    used region (2 MiB): used rings below USED_SPAN, device-writable
 *          buffers (map.wbuf), status bytes
 *   +7M    free RAM up to the end of the RAM run: device-writable only
 *
 * Roles: what the device may read as descriptors or ring entries (DESC, AVAIL)
 * comes from the descriptor / avail / zero regions or from outside RAM; what
 * it may write (USED, WRITE) goes to the used region, free RAM, outside RAM or
 * into the device's own window.  Tables are reachable up to 64 Ki entries
 * (1 MiB) from their start, which the region sizes cover.  An address is
 * "outside RAM" when it lies in the gap after the RAM run (at most 16 MiB,
 * below any other e820 entry and the device), at or above 4 GiB beyond the
 * highest RAM, or in the last bytes below 2^64 (lengths are clamped so that a
 * wrap-around reaches at most 256 KiB of low memory, below the image).
 *
 * Queue addresses are written as two 32-bit halves that the fuzzer may mix:
 * the low half of every address is itself an acceptable below-4 GiB address
 * of the same role, and every high half is 0 or puts the address outside RAM.
 */
#ifndef GUEST_FUZZ_H
#define GUEST_FUZZ_H

#include "lib.h"

#define FUZZ_MiB            (1ull << 20)
#define DESC_REGION         (2 * FUZZ_MiB)
#define DESC_TABLE_SPAN     0x40000ull      /* queue descriptor tables start below this */
#define INDIRECT_SPAN       0x40000ull      /* indirect tables: [DESC_TABLE_SPAN, +INDIRECT_SPAN) */
#define AVAIL_REGION        (1 * FUZZ_MiB)
#define AVAIL_SPAN          0x10000ull      /* avail rings start below this */
#define HDR_OFF             0x80000ull      /* map.hdr = map.avail + HDR_OFF */
#define HDR_SPAN            0x40000ull
#define HDR_SLOTS           0x1000u         /* 16-byte request headers */
#define ZERO_REGION         (2 * FUZZ_MiB)
#define USED_REGION         (2 * FUZZ_MiB)
#define USED_SPAN           0x40000ull      /* used rings start below this */
#define WBUF_OFF            0xc0000ull      /* map.wbuf = map.used + WBUF_OFF */
#define WBUF_SPAN           0x80000ull      /* status bytes follow at wbuf + WBUF_SPAN */
#define ARENA_SIZE          (7 * FUZZ_MiB)
#define GAP_MAX             (16 * FUZZ_MiB)
#define WRAP_MAX            0x40000ull      /* bytes of low memory a wrapping buffer may reach */
#define USED_ROOM           0x100000ull     /* room kept after a used ring in RAM or the gap */

enum {
    ROLE_DESC,      /* read as descriptors: queue tables, indirect tables */
    ROLE_AVAIL,     /* read as an avail ring */
    ROLE_USED,      /* written as a used ring */
    ROLE_WRITE,     /* device-writable buffer */
    ROLE_READ,      /* device-readable buffer: anything harmless */
};

struct fuzz_map {
    uint64_t image_start, image_end;
    uint64_t arena, arena_end;
    uint64_t desc, avail, hdr, zero, used, wbuf;
    uint64_t free_start, free_len;      /* free RAM after the arena */
    uint64_t low_end;                   /* end of the RAM run holding the image */
    uint64_t gap_len;                   /* non-RAM after low_end (0: none) */
    uint64_t ram_top;                   /* highest RAM end */
    uint32_t hi0;                       /* high halves >= this are past all RAM */
    uint64_t win, win_size;             /* the device's register window */
    int no_dma_window;                  /* device-written addresses never in the window */
};

struct fuzz_addr {
    uint64_t addr;
    uint32_t len;
};

/* Lays out the arena from the e820 map and zeroes its read-side regions; NULL or an error. */
const char *fuzz_map_init(struct fuzz_map *m, const struct boot_info *bi, uint64_t win, uint64_t win_size);

/*
 * Another device's register window: the gap must end before it (only the
 * window of the device being fuzzed, m->win, is a DMA target).
 */
void fuzz_map_exclude(struct fuzz_map *m, uint64_t win);

/* The device being fuzzed: its window is m->win (a target for any role). */
static inline void fuzz_map_window(struct fuzz_map *m, uint64_t win, uint64_t win_size)
{
    m->win = win;
    m->win_size = win_size;
}

/* A random address for role, with len clamped to what is harmless there. */
struct fuzz_addr fuzz_addr(const struct fuzz_map *m, int role, uint32_t len, uint64_t (*rnd)(void));

/* Clamps a.len for role at a.addr (a wrap-around past 2^64, the gap's end, the window's end). */
struct fuzz_addr fuzz_clamp(const struct fuzz_map *m, int role, struct fuzz_addr a);

/* 1 if the device may write [addr, addr+len) without harming the guest. */
int fuzz_writable(const struct fuzz_map *m, uint64_t addr, uint32_t len);

/* The role a descriptor's flags give its address (INDIRECT: a table, even with WRITE). */
static inline int fuzz_role_of_flags(uint16_t flags)
{
    if (flags & 4)
        return ROLE_DESC;
    return (flags & 2) ? ROLE_WRITE : ROLE_READ;
}

/* splitmix64 finaliser: a well-spread, non-zero xorshift64 state from any seed. */
static inline uint64_t fuzz_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x ? x : 0x2545f4914f6cdd1dull;
}

#endif
