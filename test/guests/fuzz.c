/*
 * fuzz: a seeded fuzzer for the VMM's virtio-mmio transport and every
 * virtio device behind it (README.md).
 *
 * It drives every device the command line announces (or, without
 * `virtio_mmio.device=` words, every one in QEMU microvm's window), round
 * robin: round r goes to device (r - 1) mod n.  Each round either pokes
 * random registers of that device's window (random widths, offsets and
 * values, biased toward the real registers and the config space) or brings
 * the device up (sometimes only half-way or out of order), writes random
 * descriptor tables, avail entries and avail idx jumps into one of its
 * queues, kicks and polls the used ring for a bounded time.  Chains have the
 * shape of virtio-blk requests or none at all; other devices get the same
 * (to them random) chains.  At the end it resets every device and checks
 * that it comes back: a well-formed read of sector 0 for virtio-blk, one
 * entropy request for virtio-rng, one transmit for virtio-console, and
 * just the bring-up for any other device.
 *
 * The guest must not be what crashes, so every address it hands the device
 * has a role (lib/fuzz.h) and comes from a region where that role is
 * harmless: device-writable buffers and used rings never cover the image,
 * and whatever the device reads as descriptors is either a descriptor this
 * guest wrote or zeros.  The guest itself writes only inside its arena.
 *
 * Runs in ring 3 like blk.c: register accesses are single trapped
 * instructions, everything else (building tables, polling) runs natively.
 */
#include "lib/lib.h"
#include "lib/virtio.h"
#include "lib/fuzz.h"

#define VIRTIO_ID_NET       1
#define VIRTIO_ID_BLOCK     2
#define VIRTIO_ID_CONSOLE   3
#define VIRTIO_ID_RNG       4
#define T_IN                0
#define T_OUT               1
#define T_FLUSH             4
#define T_GET_ID            8
#define T_DISCARD           11
#define T_WRITE_ZEROES      13
#define T_SECURE_ERASE      14

#define VMMIO_SHM_SEL       0x0ac
#define VMMIO_QUEUE_RESET   0x0c0

#define POLL_CYCLES         (1ull << 21)    /* per kick: ~1 ms */
#define SANE_CYCLES         (1ull << 33)    /* final request: seconds */

#define DEVS_MAX            32
#define QUEUES_PROBED       8               /* queues 0..7 are asked for QueueNumMax */

static struct vmmio dev;         /* the device being fuzzed (a copy of devs[cur].dev) */
static struct fuzz_map map;
static uint64_t capacity;       /* its capacity, virtio-blk only (else 0) */
static int nowrite;
/*
 * fuzz.qemu avoids two ways to kill QEMU 7.2 (README.md):
 *  - its virtio-mmio applies a QueueNum write at once, also to a queue that
 *    is (or was, before QueueReady=0) in use, without remapping the rings, and
 *    later aborts on an assertion (address_space_stw_le_cached) when it writes
 *    the used ring: QueueNum is written only during bring-up, after the reset
 *    and before QueueReady;
 *  - with used rings or device-writable buffers in the device's own register
 *    window QEMU now and then hangs in a nested aio_poll (presumably a
 *    completion writes Status=0 and the reset's drain waits for itself):
 *    device-written addresses are never in the window.
 */
static int qemu_quirk;
static int clean;               /* this round: only well-formed requests */

static struct {
    uint64_t writes, reads, bringups, kicks, completions, broken, reset_stuck;
} st;

/* ---- random numbers ---- */
static uint64_t rng;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static uint32_t rn(uint64_t n) { return n ? (uint32_t)(rnd() % n) : 0; }
static int one_in(unsigned n) { return rn(n) == 0; }

/* ---- register access ---- */
static uint32_t rd(unsigned off, unsigned width)
{
    uintptr_t a = dev.base + off;
    st.reads++;
    switch (width) {
    case 1: return *(volatile uint8_t *)a;
    case 2: return *(volatile uint16_t *)a;
    default: return *(volatile uint32_t *)a;
    }
}

static void wr(unsigned off, unsigned width, uint32_t v)
{
    uintptr_t a = dev.base + off;
    st.writes++;
    switch (width) {
    case 1: *(volatile uint8_t *)a = (uint8_t)v; break;
    case 2: *(volatile uint16_t *)a = (uint16_t)v; break;
    default: *(volatile uint32_t *)a = v; break;
    }
}

static uint32_t rd32(unsigned off) { return rd(off, 4); }
static void wr32(unsigned off, uint32_t v) { wr(off, 4, v); }

static void wr_addr(unsigned lo_reg, uint64_t a)
{
    wr32(lo_reg, (uint32_t)a);
    wr32(lo_reg + 4, (uint32_t)(a >> 32));
}

/* Status 0 and a bounded wait for it to read back 0. */
static int reset_dev(unsigned tries)
{
    wr32(VMMIO_STATUS, 0);
    for (unsigned i = 0; i < tries; i++)
        if (rd32(VMMIO_STATUS) == 0)
            return 1;
    st.reset_stuck++;
    return 0;
}

/* ---- the driver's view of the queue it last set up (per device, see switch_to) ---- */
static struct drv_queue {
    int live;
    uint32_t qidx, num;
    uint64_t dev_features;
    volatile struct virtq_desc *desc;   /* in the arena's descriptor region, else NULL */
    uint32_t nslots;                    /* descriptor slots we may write */
    volatile uint16_t *avail;           /* in the avail region, else NULL */
    volatile uint16_t *used;            /* in the used region, else NULL */
    uint16_t avail_idx, used_seen;
    uint32_t cursor;                    /* next slot for clean requests */
} q;

/* ---- every device found; the one being fuzzed is copied into dev, q and capacity ---- */
static struct target {
    struct vmmio dev;
    int how;                            /* 1: from the command line, 2: probed */
    unsigned nq;                        /* leading queues with QueueNumMax != 0 (of 0..7) */
    uint64_t capacity;
    uint64_t rounds;
    struct drv_queue q;
} devs[DEVS_MAX];
static unsigned ndevs, cur;

static void switch_to(unsigned i)
{
    devs[cur].q = q;
    cur = i;
    dev = devs[i].dev;
    q = devs[i].q;
    capacity = devs[i].capacity;
    fuzz_map_window(&map, dev.base, dev.size);
}

/* A queue of the device for a proper bring-up (no random number for one-queue devices). */
static uint32_t some_queue(void)
{
    return devs[cur].nq > 1 ? rn(devs[cur].nq) : 0;
}

/* ---- random register pokes ---- */
struct reg {
    uint16_t off;
    uint8_t kind;
};
enum { K_RO, K_FSEL, K_DFEAT, K_QSEL, K_QNUM, K_READY, K_NOTIFY, K_ACK, K_STATUS,
       K_DESC, K_DRV, K_DEV, K_OTHER };

static const struct reg regs[] = {
    { 0x000, K_RO }, { 0x004, K_RO }, { 0x008, K_RO }, { 0x00c, K_RO },
    { VMMIO_DEVICE_FEATURES, K_RO }, { VMMIO_DEVICE_FEATURES_SEL, K_FSEL },
    { VMMIO_DRIVER_FEATURES, K_DFEAT }, { VMMIO_DRIVER_FEATURES_SEL, K_FSEL },
    { VMMIO_QUEUE_SEL, K_QSEL }, { VMMIO_QUEUE_NUM_MAX, K_RO }, { VMMIO_QUEUE_NUM, K_QNUM },
    { VMMIO_QUEUE_READY, K_READY }, { VMMIO_QUEUE_NOTIFY, K_NOTIFY },
    { VMMIO_INTERRUPT_STATUS, K_RO }, { VMMIO_INTERRUPT_ACK, K_ACK }, { VMMIO_STATUS, K_STATUS },
    { VMMIO_QUEUE_DESC_LOW, K_DESC }, { VMMIO_QUEUE_DESC_HIGH, K_DESC },
    { VMMIO_QUEUE_DRIVER_LOW, K_DRV }, { VMMIO_QUEUE_DRIVER_HIGH, K_DRV },
    { VMMIO_QUEUE_DEVICE_LOW, K_DEV }, { VMMIO_QUEUE_DEVICE_HIGH, K_DEV },
    { VMMIO_SHM_SEL, K_OTHER }, { 0x0b0, K_RO }, { 0x0b4, K_RO }, { 0x0b8, K_RO }, { 0x0bc, K_RO },
    { VMMIO_QUEUE_RESET, K_READY }, { VMMIO_CONFIG_GENERATION, K_RO },
    { 0x100, K_OTHER }, { 0x104, K_OTHER }, { 0x108, K_OTHER }, { 0x10c, K_OTHER },
    { 0x110, K_OTHER }, { 0x114, K_OTHER }, { 0x118, K_OTHER }, { 0x11c, K_OTHER },
    { 0x120, K_OTHER }, { 0x124, K_OTHER }, { 0x128, K_OTHER }, { 0x12c, K_OTHER },
    { 0x130, K_OTHER }, { 0x134, K_OTHER }, { 0x138, K_OTHER }, { 0x13c, K_OTHER },
    { 0x140, K_OTHER },
};
#define NREGS (sizeof(regs) / sizeof(regs[0]))

static uint32_t pick(const uint32_t *v, unsigned n) { return v[rn(n)]; }

static uint32_t qnum_value(void)
{
    uint32_t max = rd32(VMMIO_QUEUE_NUM_MAX);
    const uint32_t v[] = { 0, 1, 3, max, max + 1, max / 2, 1024, 32768, 65535, 65536,
                           0xffffffffu, (uint32_t)rnd(), 1u << rn(17), rn(300) };
    return pick(v, sizeof(v) / 4);
}

static uint32_t value_for(unsigned kind, unsigned off)
{
    switch (kind) {
    case K_FSEL: { const uint32_t v[] = { 0, 1, 2, 3, 0xffffffffu, (uint32_t)rnd() }; return pick(v, 6); }
    case K_DFEAT: {
        const uint32_t v[] = { (uint32_t)rnd(), 0, 0xffffffffu, (uint32_t)q.dev_features,
                               (uint32_t)(q.dev_features >> 32), (uint32_t)q.dev_features & (uint32_t)rnd() };
        return pick(v, 6);
    }
    case K_QSEL: { const uint32_t v[] = { 0, 0, 1, 2, rn(8), 0xffff, 0x10000, 0xffffffffu, (uint32_t)rnd() }; return pick(v, 9); }
    case K_QNUM: return qnum_value();
    case K_READY: { const uint32_t v[] = { 0, 1, 1, 2, 0xffffffffu, (uint32_t)rnd() }; return pick(v, 6); }
    case K_NOTIFY: {
        const uint32_t v[] = { 0, 0, 1, 2, rn(8), 0xffff, 0xffffffffu, (uint32_t)rnd(),
                               q.qidx | (uint32_t)q.avail_idx << 16 };
        return pick(v, 9);
    }
    case K_ACK: { const uint32_t v[] = { 1, 2, 3, 0xffffffffu, (uint32_t)rnd() }; return pick(v, 5); }
    case K_STATUS: {
        const uint32_t v[] = { 0, 0, 1, 3, 11, 15, 7, 13, VIRTIO_S_FAILED, VIRTIO_S_NEEDS_RESET | 15,
                               rn(256), (uint32_t)rnd(), 1u << rn(32) };
        return pick(v, 13);
    }
    case K_DESC: case K_DRV: case K_DEV: {
        /* A whole address of the register's role; this register gets its half. */
        int role = kind == K_DESC ? ROLE_DESC : kind == K_DRV ? ROLE_AVAIL : ROLE_USED;
        uint64_t a = fuzz_addr(&map, role, 0, rnd).addr;
        return (off & 4) ? (uint32_t)(a >> 32) : (uint32_t)a;
    }
    default: { const uint32_t v[] = { 0, 1, 0xffffffffu, (uint32_t)rnd(), rn(512) }; return pick(v, 5); }
    }
}

static void poke(void)
{
    unsigned width = one_in(4) ? (one_in(2) ? 1 : 2) : 4;
    unsigned off, kind = K_OTHER;
    unsigned r = rn(20);
    if (r < 13) {               /* a real register, sometimes at a byte inside it */
        const struct reg *g = &regs[rn(NREGS)];
        off = g->off;
        kind = g->kind;
        if (width < 4 || one_in(8))
            off += rn(4);
    } else if (r < 17) {        /* any aligned register slot of the first 0x140 bytes */
        off = rn(0x144 / 4) * 4;
    } else {                    /* anywhere in the window */
        off = rn((uint32_t)dev.size);
    }
    if (off + width > dev.size)
        off = (unsigned)dev.size - width;
    if (kind != K_OTHER && (off & 3)) /* unaligned: the value is no longer the register's */
        kind = K_OTHER;
    if (kind == K_OTHER) {
        for (unsigned i = 0; i < NREGS; i++)
            if (regs[i].off == off)
                kind = regs[i].kind;
        if (kind == K_OTHER && width == 4 && off >= 0x080 && off < 0x0a8)
            kind = K_DESC;      /* reserved slots between the address registers */
    }
    /*
     * A write that changes part of a queue address register (narrow or
     * unaligned) could leave it pointing anywhere, including this image:
     * those accesses are reads instead.
     */
    int addr_part = off < 0x0a8 && off + width > 0x080 && !(width == 4 && !(off & 3));
    if (one_in(3) || addr_part) {
        rd(off, width);
        return;
    }
    if (qemu_quirk && off == VMMIO_QUEUE_NUM) {
        rd(off, width);         /* fuzz.qemu: QueueNum only in bring-up */
        return;
    }
    uint32_t v = value_for(kind, off);
    if (width < 4 && kind != K_OTHER)
        v = (uint32_t)rnd();
    wr(off, width, v);
}

static void pokes(unsigned n)
{
    while (n--)
        poke();
}

/* ---- bring-up (virtio 1.2 §3.1.1), sometimes deliberately wrong ---- */
static void bring_up(int proper)
{
    st.bringups++;
    q.live = 0;
    q.desc = 0;
    q.avail = 0;
    q.used = 0;
    int sloppy = one_in(6) && !proper;  /* skip or reorder steps */
    if (!reset_dev(64))
        return;
    wr32(VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE);
    if (!sloppy || !one_in(2))
        wr32(VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
    wr32(VMMIO_DEVICE_FEATURES_SEL, 0);
    uint64_t f = rd32(VMMIO_DEVICE_FEATURES);
    wr32(VMMIO_DEVICE_FEATURES_SEL, 1);
    f |= (uint64_t)rd32(VMMIO_DEVICE_FEATURES) << 32;
    q.dev_features = f;
    uint64_t want;
    switch (proper ? 7 : rn(8)) {
    case 0: want = rnd(); break;                                    /* anything */
    case 1: want = f & rnd(); break;                                /* random subset */
    case 2: want = f & ~(1ull << VIRTIO_F_VERSION_1); break;        /* legacy-style */
    default: want = f & (1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_F_INDIRECT_DESC |
                         (rn(2) ? 1ull << VIRTIO_F_EVENT_IDX : 0) | (rnd() & 0xffffff));
    }
    want &= ~(1ull << 34);      /* never VIRTIO_F_RING_PACKED: the device would write the descriptor ring */
    wr32(VMMIO_DRIVER_FEATURES_SEL, 0);
    wr32(VMMIO_DRIVER_FEATURES, (uint32_t)want);
    wr32(VMMIO_DRIVER_FEATURES_SEL, 1);
    wr32(VMMIO_DRIVER_FEATURES, (uint32_t)(want >> 32));
    if (!sloppy || !one_in(2))
        wr32(VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
    rd32(VMMIO_STATUS);

    uint32_t qidx = one_in(8) && !proper ? value_for(K_QSEL, 0) : some_queue();
    wr32(VMMIO_QUEUE_SEL, qidx);
    uint32_t max = rd32(VMMIO_QUEUE_NUM_MAX);
    uint32_t num;
    if (one_in(6) && !proper) {
        num = qnum_value();
    } else {                    /* a power of two up to QueueNumMax (at most 1024) */
        uint32_t cap = max > 1024 ? 1024 : max;
        num = 1u << (proper ? 3 + rn(8) : rn(11));
        while (num > cap && num > 1)
            num >>= 1;
    }
    q.qidx = qidx;
    q.num = num;

    /* Ring areas: mostly proper ones in the arena, sometimes anything of the right role. */
    uint64_t d, a, u;
    int bad = one_in(4) && !proper;
    d = bad && one_in(3) ? fuzz_addr(&map, ROLE_DESC, 0, rnd).addr : map.desc + 16 * (uint64_t)rn(DESC_TABLE_SPAN / 16);
    a = bad && one_in(3) ? fuzz_addr(&map, ROLE_AVAIL, 0, rnd).addr : map.avail + 2 * (uint64_t)rn(AVAIL_SPAN / 2);
    u = bad && one_in(3) ? fuzz_addr(&map, ROLE_USED, 0, rnd).addr : map.used + 4 * (uint64_t)rn(USED_SPAN / 4);
    if (d >= map.desc && d < map.desc + DESC_REGION && !(d & 15)) {
        q.desc = (volatile struct virtq_desc *)(uintptr_t)d;
        q.nslots = num >= 1 && num <= 1024 ? num : 1024;
    }
    if (a >= map.avail && a < map.avail + AVAIL_SPAN)
        q.avail = (volatile uint16_t *)(uintptr_t)a;
    if (u >= map.used && u < map.used + USED_REGION)
        q.used = (volatile uint16_t *)(uintptr_t)u;
    q.avail_idx = 0;
    q.cursor = 0;
    if (q.avail) {
        q.avail[0] = 0;
        q.avail[1] = 0;
    }
    if (q.used) {               /* our memory: start the used ring from a known idx */
        q.used[0] = 0;
        q.used[1] = 0;
    }
    q.used_seen = 0;

    if (sloppy && one_in(2) && !qemu_quirk)
        wr32(VMMIO_QUEUE_READY, 1);         /* ready before QueueNum and the addresses */
    wr32(VMMIO_QUEUE_NUM, num);
    wr_addr(VMMIO_QUEUE_DESC_LOW, d);
    wr_addr(VMMIO_QUEUE_DRIVER_LOW, a);
    wr_addr(VMMIO_QUEUE_DEVICE_LOW, u);
    if (!sloppy || !one_in(2))
        wr32(VMMIO_QUEUE_READY, 1);
    wr32(VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK);
    q.live = 1;
}

/* ---- descriptor chains ---- */
static const uint32_t lens[] = { 0, 1, 8, 15, 16, 17, 511, 512, 513, 4096, 65536, 0x100000,
                                 0x7fffffff, 0x80000000u, 0xffffffffu };

static uint32_t rand_len(void)
{
    return one_in(3) ? (uint32_t)rnd() >> rn(32) : pick(lens, sizeof(lens) / 4);
}

static uint16_t rand_flags(void)
{
    switch (rn(8)) {
    case 0: return (uint16_t)rnd();
    case 1: case 2: return (uint16_t)rn(8);
    default: return (uint16_t)(VIRTQ_DESC_F_NEXT | (rn(3) == 0 ? VIRTQ_DESC_F_WRITE : 0));
    }
}

/* One descriptor with an address of the role its flags give it. */
static void put(volatile struct virtq_desc *d, uint32_t len, uint16_t flags, uint16_t next)
{
    struct fuzz_addr a = fuzz_addr(&map, fuzz_role_of_flags(flags), len, rnd);
    d->addr = a.addr;
    d->len = a.len;
    d->flags = flags;
    d->next = next;
}

static uint16_t rand_next(uint32_t n)
{
    switch (rn(8)) {
    case 0: return (uint16_t)rnd();
    case 1: return (uint16_t)(n + rn(4));
    default: return (uint16_t)rn(n ? n : 1);
    }
}

/* Request header (device-readable, in the arena): type and sector. */
static uint64_t header(uint32_t type, uint64_t sector)
{
    volatile uint32_t *h = (volatile uint32_t *)(uintptr_t)(map.hdr + 16 * (uint64_t)rn(HDR_SLOTS));
    h[0] = type;
    h[1] = one_in(16) && !clean ? (uint32_t)rnd() : 0;
    h[2] = (uint32_t)sector;
    h[3] = (uint32_t)(sector >> 32);
    return (uintptr_t)h;
}

static uint32_t rand_type(void)
{
    const uint32_t v[] = { T_IN, T_IN, T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES,
                           T_SECURE_ERASE, 10, 0x7f, (uint32_t)rnd(), rn(16) };
    uint32_t t = pick(v, sizeof(v) / 4);
    if (nowrite && (t == T_OUT || t == T_DISCARD || t == T_WRITE_ZEROES || t == T_SECURE_ERASE))
        t = T_IN;
    return t;
}

static uint64_t rand_sector(void)
{
    const uint64_t v[] = { 0, rnd() % (capacity ? capacity : 1), capacity ? capacity - 1 : 0,
                           capacity, capacity + 1, rnd(), ~0ull, ~0ull / 512 };
    return v[rn(8)];
}

/*
 * A blk request: header, 0..3 data buffers, status byte, in `tab` slots
 * start, start+1, ... (mod n).  Fields are mutated now and then.
 */
static void request(volatile struct virtq_desc *tab, uint32_t n, uint32_t start)
{
    uint32_t type = rand_type();
    int dev_writes = type == T_IN || type == T_GET_ID || one_in(10);
    unsigned segs = type == T_FLUSH ? rn(2) : 1 + rn(3);
    uint64_t sector = rand_sector();
    if (clean) {
        const uint32_t ok[] = { T_IN, T_IN, T_IN, T_GET_ID, T_FLUSH, nowrite ? T_IN : T_OUT };
        type = pick(ok, 6);
        dev_writes = type == T_IN || type == T_GET_ID;
        segs = type == T_FLUSH ? 0 : type == T_GET_ID ? 1 : segs;
        sector = capacity > 64 ? rnd() % (capacity - 32) : 0;
    }
    unsigned total = segs + 2;
    for (unsigned i = 0; i < total; i++) {
        volatile struct virtq_desc *d = &tab[(start + i) % n];
        uint16_t next = (uint16_t)((start + i + 1) % n);
        uint16_t flags = i + 1 < total ? VIRTQ_DESC_F_NEXT : 0;
        struct fuzz_addr a;
        if (i == 0) {                       /* header */
            a.addr = header(type, sector);
            a.len = 16;
        } else if (i + 1 < total) {         /* data */
            uint32_t len = type == T_GET_ID ? 20 : 512 * (1 + rn(8));
            if (type == T_DISCARD || type == T_WRITE_ZEROES)
                len = 16;
            if (dev_writes)
                flags |= VIRTQ_DESC_F_WRITE;
            a = fuzz_addr(&map, dev_writes ? ROLE_WRITE : ROLE_READ, len, rnd);
            if (!one_in(8) || clean) {      /* mostly a plain buffer in the arena */
                a.addr = dev_writes ? map.wbuf + 512 * (uint64_t)rn(WBUF_SPAN / 512)
                                    : map.hdr + rn(HDR_SPAN);
                a.len = len;
            }
        } else {                            /* status byte */
            flags |= VIRTQ_DESC_F_WRITE;
            a.addr = map.wbuf + WBUF_SPAN + rn(4096);
            a.len = 1;
        }
        if (one_in(16) && !clean) {         /* mutate */
            switch (rn(5)) {
            case 0: flags ^= VIRTQ_DESC_F_WRITE; break;
            case 1: flags ^= VIRTQ_DESC_F_NEXT; break;
            case 2: a.len = rand_len(); break;
            case 3: next = rand_next(n); break;
            default: a.len = 0; break;
            }
            a = fuzz_clamp(&map, fuzz_role_of_flags(flags), a);
        }
        /* a flipped WRITE bit changes the address's role: keep it harmless */
        if (fuzz_role_of_flags(flags) == ROLE_WRITE && !fuzz_writable(&map, a.addr, a.len))
            a = fuzz_addr(&map, ROLE_WRITE, a.len, rnd);
        d->addr = a.addr;
        d->len = a.len;
        d->flags = flags;
        d->next = next;
    }
}

/* Fills an indirect table in the descriptor region; returns its address and sets *bytes. */
static uint64_t indirect_table(uint32_t *bytes)
{
    uint32_t n = 1 + rn(one_in(4) ? 64 : 6);
    uint64_t t = map.desc + DESC_TABLE_SPAN + 16 * (uint64_t)rn(INDIRECT_SPAN / 16 - 64);
    volatile struct virtq_desc *tab = (volatile struct virtq_desc *)(uintptr_t)t;
    if (one_in(2)) {
        request(tab, n < 3 ? 3 : n, 0);
        n = n < 3 ? 3 : n;
    } else {
        for (uint32_t i = 0; i < n; i++)
            put(&tab[i], rand_len(), rand_flags(), one_in(4) ? rand_next(n) : (uint16_t)(i + 1));
    }
    *bytes = n * 16;
    if (one_in(8))
        *bytes = rand_len();
    return t;
}

/* Writes one chain into the queue's table and returns its head (which may be out of range). */
static uint16_t chain(void)
{
    uint32_t n = q.nslots;
    volatile struct virtq_desc *tab = q.desc;
    uint32_t start = rn(n);
    switch (rn(10)) {
    case 0: case 1: case 2: case 3:         /* a (mostly) well-formed request */
        request(tab, n, start);
        return (uint16_t)start;
    case 4: {                               /* random chain, possibly longer than the queue */
        uint32_t len = 1 + rn(one_in(4) ? n + 8 : 8);
        uint32_t i = start;
        for (uint32_t k = 0; k < len; k++) {
            uint32_t nx = one_in(3) ? rn(n) : (i + 1) % n;
            put(&tab[i], rand_len(), (uint16_t)(rand_flags() | (k + 1 < len ? VIRTQ_DESC_F_NEXT : 0)),
                one_in(12) ? rand_next(n) : (uint16_t)nx);
            i = nx;
        }
        return (uint16_t)start;
    }
    case 5: case 6: {                       /* indirect */
        uint32_t bytes;
        uint64_t t = indirect_table(&bytes);
        uint16_t flags = VIRTQ_DESC_F_INDIRECT;
        if (one_in(6))
            flags |= VIRTQ_DESC_F_NEXT;
        if (one_in(8))
            flags |= VIRTQ_DESC_F_WRITE;
        struct fuzz_addr a = { t, bytes };
        if (one_in(10))
            a = fuzz_addr(&map, fuzz_role_of_flags(flags), bytes, rnd);
        tab[start].addr = a.addr;
        tab[start].len = a.len;
        tab[start].flags = flags;
        tab[start].next = rand_next(n);
        if (one_in(3)) {                    /* indirect in the middle of a chain */
            uint32_t h = (start + n - 1) % n;
            put(&tab[h], 16, VIRTQ_DESC_F_NEXT, (uint16_t)start);
            return (uint16_t)h;
        }
        return (uint16_t)start;
    }
    case 7: {                               /* a NEXT loop */
        uint32_t b = rn(n);
        put(&tab[start], 16, VIRTQ_DESC_F_NEXT, (uint16_t)b);
        put(&tab[b], 512, (uint16_t)(VIRTQ_DESC_F_NEXT | (rn(2) ? VIRTQ_DESC_F_WRITE : 0)), (uint16_t)start);
        return (uint16_t)start;
    }
    case 8:                                 /* a head out of range */
        return (uint16_t)(one_in(2) ? q.num + rn(4) : rnd());
    default:                                /* whatever is there */
        return (uint16_t)rn(n);
    }
}

/* Puts chains on the avail ring and publishes the idx; returns how many. */
static unsigned publish(void)
{
    unsigned heads = 1 + rn(one_in(4) ? 16 : 3);
    uint32_t ring = q.num >= 1 && q.num <= 65536 ? q.num : 1 + rn(256);
    if (clean) {                /* back-to-back requests that do not overlap */
        unsigned max = q.nslots / 5 < 4 ? q.nslots / 5 : 4;
        heads = 1 + rn(max);
        for (unsigned i = 0; i < heads; i++) {
            uint32_t start = q.cursor;
            request(q.desc, q.nslots, start);
            q.cursor = (start + 5) % q.nslots;
            q.avail[2 + (q.avail_idx % ring)] = (uint16_t)start;
            q.avail_idx++;
        }
        barrier();
        q.avail[1] = q.avail_idx;
        mb();
        return heads;
    }
    for (unsigned i = 0; i < heads; i++) {
        uint16_t h = q.desc ? chain() : (uint16_t)rn(q.num ? q.num : 1);
        if (q.avail)
            q.avail[2 + (q.avail_idx % ring)] = one_in(20) ? (uint16_t)rnd() : h;
        q.avail_idx++;
    }
    if (one_in(10))
        q.avail_idx += (uint16_t)(one_in(2) ? rnd() : rn(2 * ring + 2));   /* idx jump */
    if (q.avail) {
        if (one_in(12))
            q.avail[0] = (uint16_t)rnd();                                   /* flags */
        if (one_in(8) && ring <= AVAIL_SPAN / 2 - 8)
            q.avail[2 + ring] = (uint16_t)rnd();                            /* used_event */
        barrier();
        q.avail[1] = q.avail_idx;
    }
    mb();
    return heads;
}

static void kick(void)
{
    uint32_t v = one_in(6) && !clean ? value_for(K_NOTIFY, VMMIO_QUEUE_NOTIFY) : q.qidx;
    wr32(VMMIO_QUEUE_NOTIFY, v);
    st.kicks++;
    if (one_in(8))
        wr32(VMMIO_QUEUE_NOTIFY, v);        /* twice */
}

/* Bounded wait for the used index to move by `want`; counts what moved. */
static void poll_used(unsigned want)
{
    if (q.used) {
        uint64_t t0 = rdtsc(), last = t0;
        for (unsigned spin = 0; spin < (1u << 22); spin++) {
            if ((uint16_t)(q.used[1] - q.used_seen) >= want)
                break;
            uint64_t now = rdtsc();
            if (now - t0 > POLL_CYCLES)
                break;
            if (now - last > POLL_CYCLES / 8) {     /* given up on the queue? */
                last = now;
                if (rd32(VMMIO_STATUS) & VIRTIO_S_NEEDS_RESET)
                    break;
            }
            __asm__ volatile("pause");
        }
        uint16_t now = q.used[1];
        uint16_t moved = (uint16_t)(now - q.used_seen);
        if (moved <= q.num)
            st.completions += moved;
        q.used_seen = now;
    }
    vmmio_ack(&dev);
    st.reads++;
    uint32_t s = rd32(VMMIO_STATUS);
    if ((s & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED)) || !(s & VIRTIO_S_DRIVER_OK)) {
        if (s & VIRTIO_S_NEEDS_RESET)
            st.broken++;
        q.live = 0;
    }
}

static int good_queue(void)
{
    return q.live && q.desc && q.avail && q.used && q.nslots >= 8 && q.num == q.nslots;
}

static void structured(void)
{
    clean = one_in(2);
    if (clean) {
        if (!good_queue())
            bring_up(1);
        if (!good_queue()) {
            clean = 0;
            return;
        }
        unsigned n = publish();
        kick();
        poll_used(n);
        clean = 0;
        return;
    }
    if (!q.live || one_in(16))
        bring_up(0);
    if (one_in(6))
        pokes(1 + rn(3));
    publish();
    if (one_in(10))
        pokes(1 + rn(2));
    kick();
    poll_used(1);
}

/* ---- the end: every device reset and checked ---- */
static struct virtq vq;
static uint8_t sane_hdr[16] __attribute__((aligned(16)));
static uint8_t sane_buf[512] __attribute__((aligned(512)));
static volatile uint8_t sane_status;

/* One result line for the device being checked; virtio-blk keeps its old form. */
static void sane_say(const char *what)
{
    if (dev.device_id == VIRTIO_ID_BLOCK)
        printf("fuzz sane: %s\n", what);
    else
        printf("fuzz sane device %u at 0x%lx: %s\n", dev.device_id, (uint64_t)dev.base, what);
}

/*
 * Reset (bounded wait for Status 0), the identity registers as they were
 * found, VERSION_1 only, FEATURES_OK, queue qidx (at most 8 entries in
 * lib/virtio.c's ring), DRIVER_OK.  Returns 1, or 0 after saying what failed.
 */
static int sane_bring_up(unsigned qidx)
{
    if (!reset_dev(1000)) {
        sane_say("reset did not complete");
        return 0;
    }
    if (rd32(VMMIO_MAGIC) != VIRTIO_MMIO_MAGIC || rd32(VMMIO_VERSION) != dev.version ||
        rd32(VMMIO_DEVICE_ID) != dev.device_id) {
        sane_say("magic, version or device id changed");
        return 0;
    }
    wr32(VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE);
    wr32(VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
    wr32(VMMIO_DEVICE_FEATURES_SEL, 1);
    uint32_t hi = rd32(VMMIO_DEVICE_FEATURES);
    wr32(VMMIO_DRIVER_FEATURES_SEL, 0);
    wr32(VMMIO_DRIVER_FEATURES, 0);
    wr32(VMMIO_DRIVER_FEATURES_SEL, 1);
    wr32(VMMIO_DRIVER_FEATURES, hi & 1);    /* VERSION_1 only */
    wr32(VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
    if (!(rd32(VMMIO_STATUS) & VIRTIO_S_FEATURES_OK)) {
        sane_say("FEATURES_OK did not latch");
        return 0;
    }
    if (!vmmio_queue_setup(&dev, &vq, qidx, 8)) {
        char m[32];
        snprintf(m, sizeof(m), "queue %u unavailable", qidx);
        sane_say(m);
        return 0;
    }
    wr32(VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK);
    return 1;
}

/*
 * Publishes the chain at descriptor 0 of vq, notifies queue qidx and waits
 * up to SANE_CYCLES (Status checked every 2^24 cycles).  Returns the used
 * length, or -1 after saying why not.
 */
static int64_t sane_request(unsigned qidx)
{
    vq_add(&vq, 0);
    vq_kick(&dev, &vq, qidx);
    uint64_t t0 = rdtsc(), last = t0;
    for (;;) {
        if (vq.used[1] != vq.last_used) {
            uint32_t id, len = 0;
            vq_get(&vq, &id, &len);
            vmmio_ack(&dev);
            return len;
        }
        uint64_t now = rdtsc();
        if (now - last > (1ull << 24)) {
            last = now;
            if (rd32(VMMIO_STATUS) & VIRTIO_S_NEEDS_RESET) {
                sane_say("device needs reset");
                return -1;
            }
        }
        if (now - t0 > SANE_CYCLES) {
            sane_say("no completion");
            return -1;
        }
        __asm__ volatile("pause");
    }
}

/* virtio-blk: a well-formed read of sector 0; prints its status byte. */
static void sane_blk(void)
{
    if (!sane_bring_up(0))
        return;
    memset(sane_hdr, 0, sizeof(sane_hdr));  /* T_IN, sector 0 */
    memset(sane_buf, 0, sizeof(sane_buf));
    sane_status = 0xff;
    vq.desc[0] = (struct virtq_desc){ (uintptr_t)sane_hdr, 16, VIRTQ_DESC_F_NEXT, 1 };
    vq.desc[1] = (struct virtq_desc){ (uintptr_t)sane_buf, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2 };
    vq.desc[2] = (struct virtq_desc){ (uintptr_t)&sane_status, 1, VIRTQ_DESC_F_WRITE, 0 };
    if (sane_request(0) >= 0)
        printf("fuzz sane status=%u\n", sane_status);
}

/*
 * Other devices: the bring-up, then one request where its format is known
 * (virtio-rng: 64 bytes of entropy into requestq; virtio-console: a
 * transmit of "fuzz sane\n" on port 0's transmitq; virtio-net: one
 * 60-byte broadcast frame, EtherType 0x88b5 (IEEE local experimental),
 * behind a zeroed 12-byte virtio_net_hdr_v1 on transmitq1), else DRIVER_OK
 * must have stuck without NEEDS_RESET or FAILED.
 */
static void sane_other(void)
{
    static const char line[] = "fuzz sane\n";
    unsigned qidx = dev.device_id == VIRTIO_ID_CONSOLE || dev.device_id == VIRTIO_ID_NET ? 1 : 0;
    if (!sane_bring_up(qidx))
        return;
    int64_t len;
    switch (dev.device_id) {
    case VIRTIO_ID_RNG:
        vq.desc[0] = (struct virtq_desc){ (uintptr_t)sane_buf, 64, VIRTQ_DESC_F_WRITE, 0 };
        if ((len = sane_request(qidx)) < 0)
            return;
        if (len > 64) {
            char m[40];
            snprintf(m, sizeof(m), "used len %u > 64", (unsigned)len);
            sane_say(m);
            return;
        }
        break;
    case VIRTIO_ID_NET:
        memset(sane_buf, 0, 12 + 60);
        memset(sane_buf + 12, 0xff, 6);                 /* to everyone */
        sane_buf[12 + 6] = 0x02;                        /* from 02:00:00:00:00:00 */
        sane_buf[12 + 12] = 0x88;
        sane_buf[12 + 13] = 0xb5;
        memcpy(sane_buf + 12 + 14, line, sizeof(line) - 1);
        vq.desc[0] = (struct virtq_desc){ (uintptr_t)sane_buf, 12 + 60, 0, 0 };
        if (sane_request(qidx) < 0)
            return;
        break;
    case VIRTIO_ID_CONSOLE:
        memcpy(sane_buf, line, sizeof(line) - 1);
        vq.desc[0] = (struct virtq_desc){ (uintptr_t)sane_buf, sizeof(line) - 1, 0, 0 };
        if (sane_request(qidx) < 0)
            return;
        break;
    default: {
        uint32_t status = rd32(VMMIO_STATUS);
        if ((status & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED)) || !(status & VIRTIO_S_DRIVER_OK)) {
            sane_say("device refused DRIVER_OK");
            return;
        }
    }
    }
    sane_say("ok");
}

/* First every device is reset (none keeps working on fuzzed rings), then each is checked and reset. */
static void sane_all(void)
{
    for (unsigned i = 0; i < ndevs; i++) {
        switch_to(i);
        reset_dev(1000);
    }
    for (unsigned i = 0; i < ndevs; i++) {
        switch_to(i);
        if (dev.device_id == VIRTIO_ID_BLOCK)
            sane_blk();
        else
            sane_other();
        reset_dev(1000);
    }
}

/* Config reads under ConfigGeneration, with a bounded retry. */
static uint64_t read_capacity(void)
{
    uint32_t g, lo = 0, hi = 0;
    for (unsigned i = 0; i < 16; i++) {
        g = rd32(VMMIO_CONFIG_GENERATION);
        lo = rd32(VMMIO_CONFIG);
        hi = rd32(VMMIO_CONFIG + 4);
        if (g == rd32(VMMIO_CONFIG_GENERATION))
            break;
    }
    return lo | (uint64_t)hi << 32;
}

/* Every transport with a device (lib/virtio.c's order), at most DEVS_MAX; 0 or an exit status. */
static int find_devices(void)
{
    struct vmmio_iter it;
    struct vmmio d;
    int how;
    vmmio_iter_init(&it);
    while (ndevs < DEVS_MAX && (how = vmmio_next(&it, &d))) {
        if (d.version != 2) {
            printf("fuzz: virtio-mmio version %u unsupported\n", d.version);
            return 2;
        }
        if (d.size < 0x200 || d.size > 0x1000)
            d.size = d.size < 0x200 ? 0x200 : 0x1000;
        struct target *t = &devs[ndevs++];
        t->dev = d;
        t->how = how;
        for (t->nq = 0; t->nq < QUEUES_PROBED; t->nq++) {  /* not counted in the stats */
            vmmio_wr(&d, VMMIO_QUEUE_SEL, t->nq);
            if (!vmmio_rd(&d, VMMIO_QUEUE_NUM_MAX))
                break;
        }
    }
    if (!ndevs) {
        puts("fuzz: no virtio-mmio device");
        return 2;
    }
    return 0;
}

static const struct boot_info *boot;

static uint64_t fuzz_main(void *arg)    /* ring 3 */
{
    (void)arg;
    int err_exit = find_devices();
    if (err_exit)
        return (uint64_t)err_exit;
    unsigned first = 0;     /* the first line's device: the first virtio-blk, else the first */
    for (unsigned i = ndevs; i-- > 0;)
        if (devs[i].dev.device_id == VIRTIO_ID_BLOCK)
            first = i;
    const char *err = fuzz_map_init(&map, boot, devs[first].dev.base, devs[first].dev.size);
    if (err) {
        printf("fuzz: %s\n", err);
        return 2;
    }
    for (unsigned i = 0; i < ndevs; i++)
        fuzz_map_exclude(&map, devs[i].dev.base);
    uint64_t seed = cmdline_u64("fuzz.seed", 1);
    uint64_t rounds = cmdline_u64("fuzz.rounds", 5000);
    size_t n;
    qemu_quirk = cmdline_get("fuzz.qemu", &n) != 0;
    map.no_dma_window = qemu_quirk;
    nowrite = cmdline_get("fuzz.nowrite", &n) != 0;
    rng = fuzz_mix(seed);
    for (unsigned i = 0; i < ndevs; i++) {
        if (devs[i].dev.device_id != VIRTIO_ID_BLOCK)
            continue;
        switch_to(i);
        devs[i].capacity = capacity = read_capacity();
    }
    switch_to(first);
    printf("fuzz: device at 0x%lx (%s) seed=%lu rounds=%lu capacity=%lu arena=0x%lx-0x%lx\n",
           (uint64_t)dev.base, devs[first].how == 1 ? "cmdline" : "probed", seed, rounds, capacity,
           map.arena, map.arena_end);
    for (unsigned i = 0; i < ndevs; i++)
        printf("fuzz: device %u at 0x%lx irq %u queues %u\n", devs[i].dev.device_id,
               (uint64_t)devs[i].dev.base, devs[i].dev.irq, devs[i].nq);

    for (uint64_t r = 1; r <= rounds; r++) {
        if (ndevs > 1)
            switch_to((unsigned)((r - 1) % ndevs));
        devs[cur].rounds++;
        if (rn(10) < 3)
            pokes(1 + rn(12));
        else
            structured();
        if (r % 500 == 0)
            printf("fuzz round %lu\n", r);
    }
    for (unsigned i = 0; i < ndevs; i++)
        printf("fuzz: device %u at 0x%lx: %lu rounds\n", devs[i].dev.device_id,
               (uint64_t)devs[i].dev.base, devs[i].rounds);
    printf("fuzz stats: writes=%lu reads=%lu bringups=%lu kicks=%lu completions=%lu needs_reset=%lu reset_stuck=%lu\n",
           st.writes, st.reads, st.bringups, st.kicks, st.completions, st.broken, st.reset_stuck);
    sane_all();
    puts("fuzz done");
    return 0;
}

int guest_main(const struct boot_info *bi)
{
    boot = bi;
    return (int)run_user(fuzz_main, 0, 0);
}
