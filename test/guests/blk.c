/*
 * blk: a polled virtio-blk driver over virtio-mmio version 2 (README.md).
 *
 * Everything after guest_start() runs in ring 3: the identity map is
 * user-accessible, including the MMIO window, so a register access from
 * ring 3 is the same single trapped (emulated) instruction it would be in
 * ring 0, while the rest (building chains, polling the used ring, CRC,
 * benchmark loops) runs natively instead of through KVM-PVM's emulator.
 */
#include "lib/lib.h"
#include "lib/virtio.h"

#define VIRTIO_ID_BLOCK     2

#define BLK_F_SIZE_MAX      1
#define BLK_F_SEG_MAX       2
#define BLK_F_RO            5
#define BLK_F_BLK_SIZE      6
#define BLK_F_FLUSH         9

#define CFG_CAPACITY        0   /* le64, 512-byte sectors */
#define CFG_SIZE_MAX        8
#define CFG_SEG_MAX         12
#define CFG_BLK_SIZE        20

#define T_IN                0
#define T_OUT               1
#define T_FLUSH             4
#define T_GET_ID            8

#define S_OK                0
#define S_IOERR             1
#define S_UNSUPP            2

#define QD_MAX              32          /* requests in flight */
#define REQ_MAX             0x10000     /* data bytes per request */
#define SEGS_MAX            16          /* data descriptors per request */
#define ID_BYTES            20

#define TIMEOUT_REQ         (1ull << 34)    /* TSC cycles: several seconds */
#define TIMEOUT_BAD         (1ull << 31)

#define ERR_TIMEOUT         (-1)
#define ERR_NEEDS_RESET     (-2)
#define ERR_BOGUS           (-3)

struct blk_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

static struct vmmio dev;
static struct virtq vq;
static unsigned qsize;
static int want_indirect, use_indirect;
static unsigned per_req;        /* ring descriptors per slot (1 with indirect) */
static unsigned qd_max;         /* slots usable at once */
static uint32_t seg_bytes;      /* bytes per data descriptor */
static uint32_t req_bytes;      /* data bytes per request (multiple of 512) */
static uint64_t capacity;
static uint32_t blk_size;
static int ro, can_flush, failed;

static int irq_mode;                   /* blk.irq: ring 0, PIC interrupts on */
static volatile unsigned irqs;          /* device interrupts taken */

static struct blk_hdr hdr[QD_MAX] __attribute__((aligned(16)));
static uint8_t status[QD_MAX];
static uint32_t slot_len[QD_MAX];
static uint64_t slot_sector[QD_MAX];
static struct virtq_desc itab[QD_MAX][SEGS_MAX + 2] __attribute__((aligned(16)));
static uint8_t buf[QD_MAX][REQ_MAX] __attribute__((aligned(4096)));

static void set_desc(volatile struct virtq_desc *d, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    d->addr = addr;
    d->len = len;
    d->flags = flags;
    d->next = next;
}

/* ---- device bring-up (virtio 1.2 §3.1.1) ---- */
static void init_device(void)
{
    uint64_t wanted = 1ull << VIRTIO_F_VERSION_1 | 1u << BLK_F_FLUSH | 1u << BLK_F_RO |
                      1u << BLK_F_SEG_MAX | 1u << BLK_F_BLK_SIZE | 1u << BLK_F_SIZE_MAX;
    if (want_indirect)
        wanted |= 1u << VIRTIO_F_INDIRECT_DESC;
    if (vmmio_negotiate(&dev, wanted) < 0)
        die(2, "blk: FEATURES_OK did not latch");
    if (!vmmio_has(&dev, VIRTIO_F_VERSION_1))
        die(2, "blk: device does not offer VERSION_1");
    unsigned qmax = VIRTQ_MAX;      /* blk.qsize=N: a smaller ring (power of 2) */
    while (qmax > 1 && qmax > cmdline_u64("blk.qsize", VIRTQ_MAX))
        qmax >>= 1;
    if (!(qsize = vmmio_queue_setup(&dev, &vq, 0, qmax)))
        die(2, "blk: queue 0 unavailable");
    vmmio_driver_ok(&dev);
    if (vmmio_rd(&dev, VMMIO_STATUS) & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED))
        die(2, "blk: device refused DRIVER_OK");

    use_indirect = vmmio_has(&dev, VIRTIO_F_INDIRECT_DESC);
    seg_bytes = REQ_MAX;
    if (vmmio_has(&dev, BLK_F_SIZE_MAX)) {
        uint32_t m = vmmio_config32(&dev, CFG_SIZE_MAX) & ~511u;
        if (m < seg_bytes)
            seg_bytes = m < 512 ? 512 : m;
    }
    uint64_t force = cmdline_u64("blk.seg", REQ_MAX) & ~511ull;    /* blk.seg=B: smaller segments */
    if (force >= 512 && force < seg_bytes)
        seg_bytes = (uint32_t)force;
    uint32_t segs = SEGS_MAX;
    if (vmmio_has(&dev, BLK_F_SEG_MAX)) {
        uint32_t m = vmmio_config32(&dev, CFG_SEG_MAX);
        if (m >= 1 && m < segs)
            segs = m;
    }
    req_bytes = seg_bytes * segs < REQ_MAX ? seg_bytes * segs : REQ_MAX;
    unsigned data_descs = (req_bytes + seg_bytes - 1) / seg_bytes;
    per_req = use_indirect ? 1 : data_descs + 2;
    qd_max = qsize / per_req < QD_MAX ? qsize / per_req : QD_MAX;
    if (!qd_max)
        die(2, "blk: queue too small for one request");
    capacity = vmmio_config64(&dev, CFG_CAPACITY);
    blk_size = vmmio_has(&dev, BLK_F_BLK_SIZE) ? vmmio_config32(&dev, CFG_BLK_SIZE) : 512;
    ro = vmmio_has(&dev, BLK_F_RO);
    can_flush = vmmio_has(&dev, BLK_F_FLUSH);
}

/* ---- requests ---- */

/* Builds slot s's chain: header, data (split at seg_bytes), status.  Returns the head. */
static uint16_t build(unsigned s, uint32_t type, uint64_t sector, void *data, uint32_t len, int dev_writes)
{
    hdr[s] = (struct blk_hdr){ type, 0, sector };
    status[s] = 0xff;
    slot_len[s] = len;
    slot_sector[s] = sector;
    volatile struct virtq_desc *t = use_indirect ? itab[s] : vq.desc;
    unsigned base = use_indirect ? 0 : s * per_req, n = 0;
    set_desc(&t[base + n], (uintptr_t)&hdr[s], sizeof(hdr[s]), VIRTQ_DESC_F_NEXT, (uint16_t)(base + n + 1));
    n++;
    for (uint32_t off = 0; off < len; off += seg_bytes, n++) {
        uint32_t chunk = len - off < seg_bytes ? len - off : seg_bytes;
        set_desc(&t[base + n], (uintptr_t)data + off, chunk,
                 VIRTQ_DESC_F_NEXT | (dev_writes ? VIRTQ_DESC_F_WRITE : 0), (uint16_t)(base + n + 1));
    }
    set_desc(&t[base + n], (uintptr_t)&status[s], 1, VIRTQ_DESC_F_WRITE, 0);
    n++;
    if (!use_indirect)
        return (uint16_t)base;
    set_desc(&vq.desc[s], (uintptr_t)itab[s], n * sizeof(struct virtq_desc), VIRTQ_DESC_F_INDIRECT, 0);
    return (uint16_t)s;
}

/* Waits until the used ring has an entry: 0, ERR_TIMEOUT or ERR_NEEDS_RESET. */
static int poll_used(uint64_t timeout)
{
    uint64_t t0 = rdtsc();
    for (unsigned spin = 1;; spin++) {
        if (vq.used[1] != vq.last_used)
            return 0;
        if (spin % 4096 == 0) {
            if (vmmio_rd(&dev, VMMIO_STATUS) & VIRTIO_S_NEEDS_RESET)
                return ERR_NEEDS_RESET;
            if (rdtsc() - t0 > timeout)
                return ERR_TIMEOUT;
        }
        __asm__ volatile("pause");
    }
}

/* Used id -> slot, or -1 if it is not the head of a chain we made. */
static int slot_of(uint32_t id)
{
    if (id >= qsize || id % per_req || id / per_req >= qd_max)
        return -1;
    return (int)(id / per_req);
}

/* One request in slot 0, waited for: its status byte, or ERR_*. */
static int do_req(uint32_t type, uint64_t sector, void *data, uint32_t len, int dev_writes, uint32_t *used_len)
{
    vq_add(&vq, build(0, type, sector, data, len, dev_writes));
    vq_kick(&dev, &vq, 0);
    int r = poll_used(TIMEOUT_REQ);
    if (r < 0)
        return r;
    uint32_t id = ~0u, ulen = 0;
    vq_get(&vq, &id, &ulen);
    vmmio_ack(&dev);
    if (slot_of(id) != 0)
        return ERR_BOGUS;
    if (used_len)
        *used_len = ulen;
    return status[0];
}

/* A normal request that did not complete at all: nothing sensible can follow. */
static void check_alive(const char *what, int r)
{
    if (r == ERR_TIMEOUT)
        printf("blk: %s timed out\n", what);
    else if (r == ERR_NEEDS_RESET)
        printf("blk: %s: device needs reset\n", what);
    else if (r == ERR_BOGUS)
        printf("blk: %s: bogus used id\n", what);
    else
        return;
    guest_exit(1);
}

/* ---- commands ---- */

/* blk.write=S:B (S decimal or 0x hex, B hex): fill sector S with B, write, flush. */
static void cmd_write(const char *v, size_t n)
{
    uint64_t sector, byte;
    size_t k = parse_u64(v, n, 10, &sector);
    if (!k || k >= n || v[k] != ':' || parse_u64(v + k + 1, n - k - 1, 16, &byte) != n - k - 1 || byte > 0xff) {
        puts("blk write: unparsable (want blk.write=<sector>:<hex byte>)");
        failed = 1;
        return;
    }
    memset(buf[0], (int)byte, 512);
    int r = do_req(T_OUT, sector, buf[0], 512, 0, 0);
    check_alive("write", r);
    if (r != S_OK) {
        printf("blk write status %d\n", r);
        failed = 1;
        return;
    }
    if (can_flush) {
        r = do_req(T_FLUSH, 0, 0, 0, 0, 0);
        check_alive("flush", r);
        if (r != S_OK) {
            printf("blk flush status %d\n", r);
            failed = 1;
            return;
        }
    }
    puts("blk write ok");
}

/* blk.read=N: sectors 0..N-1 in requests of req_bytes, CRC-32 of the bytes. */
static void cmd_read(uint64_t sectors)
{
    uint32_t crc = 0;
    for (uint64_t s = 0; s < sectors;) {
        uint64_t left = (sectors - s) * 512;
        uint32_t len = left < req_bytes ? (uint32_t)left : req_bytes, ulen = 0;
        int r = do_req(T_IN, s, buf[0], len, 1, &ulen);
        check_alive("read", r);
        if (r != S_OK) {
            printf("blk read status %d at sector %lu\n", r, s);
            failed = 1;
            return;
        }
        if (ulen < len + 1)
            printf("blk read: warning: used len %u < %u at sector %lu\n", ulen, len + 1, s);
        crc = crc32_update(crc, buf[0], len);
        s += len / 512;
    }
    printf("blk read %lu crc32=%08x\n", sectors, crc);
}

static void cmd_id(void)
{
    char id[ID_BYTES + 1];
    memset(buf[0], 0, ID_BYTES);
    int r = do_req(T_GET_ID, 0, buf[0], ID_BYTES, 1, 0);
    check_alive("get id", r);
    if (r != S_OK) {
        printf("blk id status %d\n", r);
        failed = 1;
        return;
    }
    memcpy(id, buf[0], ID_BYTES);
    id[ID_BYTES] = 0;
    printf("blk id %s\n", id);
}

/* blk.bad[=nostatus|oob] */
static void cmd_bad(const char *v, size_t n)
{
    int oob = n == 3 && memcmp(v, "oob", 3) == 0;
    /* (1) a malformed chain in slot 0 */
    hdr[0] = (struct blk_hdr){ T_IN, 0, 0 };
    status[0] = 0xff;
    uint16_t head = 0;
    volatile struct virtq_desc *d = vq.desc;
    if (oob) {  /* header, a data buffer far outside RAM, status */
        set_desc(&d[0], (uintptr_t)&hdr[0], sizeof(hdr[0]), VIRTQ_DESC_F_NEXT, 1);
        set_desc(&d[1], 0xfff0000000000000ull, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
        set_desc(&d[2], (uintptr_t)&status[0], 1, VIRTQ_DESC_F_WRITE, 0);
    } else {    /* header only: no data, no status byte (status[0] is a sentinel outside the chain) */
        set_desc(&d[0], (uintptr_t)&hdr[0], sizeof(hdr[0]), 0, 0);
    }
    vq_add(&vq, head);
    vq_kick(&dev, &vq, 0);
    int r = poll_used(TIMEOUT_BAD);
    if (r == 0) {
        uint32_t id = ~0u, ulen = 0;
        vq_get(&vq, &id, &ulen);
        vmmio_ack(&dev);
        printf("blk bad chain: used len=%u status=%u\n", ulen, status[0]);
    } else {
        puts(r == ERR_NEEDS_RESET ? "blk bad chain: device needs reset" : "blk bad chain: no completion");
        init_device();      /* reset and start over */
    }

    /* (2) one sector just past the end */
    r = do_req(T_IN, capacity, buf[0], 512, 1, 0);
    check_alive("bad range", r);
    printf("blk bad range: status %d\n", r);

    /* (3) an unknown request type; a write to a read-only device */
    r = do_req(0x7f, 0, 0, 0, 0, 0);
    check_alive("bad type", r);
    printf("blk bad type: status %d\n", r);
    if (ro) {
        memset(buf[0], 0, 512);
        r = do_req(T_OUT, 0, buf[0], 512, 0, 0);
        check_alive("bad ro-write", r);
        printf("blk bad ro-write: status %d\n", r);
    }
}

/*
 * blk.swap=N: wait (polling InterruptStatus, up to about a minute) for a config-change interrupt,
 * as the host's hot swap of the backing file raises it; acknowledge it, re-read the capacity and
 * read the first N sectors (default 8) of the new medium.
 */
static void cmd_swap(uint64_t nsect)
{
    puts("blk waiting for a config change");
    uint64_t t0 = rdtsc();
    while (!(vmmio_rd(&dev, VMMIO_INTERRUPT_STATUS) & 2)) {
        if (rdtsc() - t0 > (1ull << 37)) {
            puts("blk: config change timed out");
            guest_exit(3);
        }
        for (int i = 0; i < 4096; i++)
            __asm__ volatile("pause");
    }
    vmmio_wr(&dev, VMMIO_INTERRUPT_ACK, 2);
    capacity = vmmio_config64(&dev, CFG_CAPACITY);
    printf("blk config change: capacity %lu\n", capacity);
    cmd_read(nsect < capacity ? nsect : capacity);
}

/* ---- blk.irq: the device's used-buffer interrupts through the 8259 PIC (IRQ = its GSI) ---- */
#define PIC_VEC 0x20

static void blk_irq(struct frame *f)
{
    (void)f;
    irqs++;
    vmmio_ack(&dev);
    pic_eoi(dev.irq);
}

static void spurious(struct frame *f)
{
    (void)f;
}

static void irq_setup(void)
{
    if (dev.irq >= 16) {
        puts("blk: irq above 15, no PIC route");
        guest_exit(2);
    }
    idt_set_handler(PIC_VEC + dev.irq, blk_irq);
    idt_set_handler(PIC_VEC + 7, spurious);
    idt_set_handler(PIC_VEC + 15, spurious);
    idt_set_handler(0xff, spurious);
    unsigned unmask = 1u << dev.irq | 1u << 2;
    pic_remap(PIC_VEC, PIC_VEC + 8, (uint8_t)~unmask, (uint8_t)~(unmask >> 8));
    lapic_enable_extint();
    __asm__ volatile("sti");
}

/* ---- blk.bench=mmio: blk.ops reads of a device register (one trapped access each) ---- */
static void bench_mmio(void)
{
    uint64_t ops = cmdline_u64("blk.ops", 100000), sum = 0;
    puts("blk bench start");
    for (uint64_t i = 0; i < ops; i++)
        sum += vmmio_rd(&dev, VMMIO_CONFIG_GENERATION);
    printf("blk bench done bytes=0 ops=%lu (%lu)\n", ops, sum);
}

/* ---- benchmark: blk.bench=seq|rand ---- */
static uint64_t xorshift64(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void cmd_bench(const char *v, size_t n)
{
    int seq;
    if (n == 4 && memcmp(v, "mmio", 4) == 0) {
        bench_mmio();
        return;
    }
    if (n == 3 && memcmp(v, "seq", 3) == 0)
        seq = 1;
    else if (n == 4 && memcmp(v, "rand", 4) == 0)
        seq = 0;
    else {
        puts("blk bench: want blk.bench=seq|rand|mmio");
        failed = 1;
        return;
    }
    uint64_t qd = cmdline_u64("blk.qd", 1);
    if (qd < 1)
        qd = 1;
    if (qd > qd_max)
        qd = qd_max;
    uint64_t ops, per_pass = 0, span = 0, blocks = 0, seed = cmdline_u64("blk.seed", 1);
    uint32_t rsz;
    if (seq) {
        span = cmdline_u64("blk.mib", 64) << 20;
        if (span > capacity * 512)
            span = capacity * 512;
        rsz = req_bytes;
        per_pass = (span + rsz - 1) / rsz;
        ops = per_pass * cmdline_u64("blk.passes", 1);
    } else {
        rsz = 4096;
        blocks = capacity / 8;
        ops = cmdline_u64("blk.ops", 20000);
        if (!seed)
            seed = 1;
    }
    if (!seq && req_bytes < rsz) {
        puts("blk bench: requests limited below 4 KiB");
        failed = 1;
        return;
    }
    if (!blocks && !seq) {
        puts("blk bench: disk smaller than 4 KiB");
        failed = 1;
        return;
    }

    unsigned freelist[QD_MAX], nfree = 0;
    for (unsigned s = 0; s < qd; s++)
        freelist[nfree++] = s;
    uint64_t issued = 0, done = 0, bytes = 0;
    puts("blk bench start");
    while (done < ops) {
        unsigned added = 0;
        while (nfree && issued < ops) {
            unsigned s = freelist[--nfree];
            uint64_t sector;
            uint32_t len = rsz;
            if (seq) {
                uint64_t off = (issued % per_pass) * rsz;
                sector = off / 512;
                if (span - off < len)
                    len = (uint32_t)(span - off);
            } else {
                sector = (xorshift64(&seed) % blocks) * 8;
            }
            vq_add(&vq, build(s, T_IN, sector, buf[s], len, 1));
            issued++;
            added++;
        }
        if (added)
            vq_kick(&dev, &vq, 0);
        int r = poll_used(TIMEOUT_REQ);
        check_alive("bench", r);
        uint32_t id = ~0u, ulen = 0;
        while (vq_get(&vq, &id, &ulen)) {
            int s = slot_of(id);
            if (s < 0)
                check_alive("bench", ERR_BOGUS);
            if (status[s] != S_OK) {
                printf("blk bench status %u at sector %lu\n", status[s], slot_sector[s]);
                guest_exit(1);
            }
            bytes += slot_len[s];
            done++;
            freelist[nfree++] = (unsigned)s;
        }
        vmmio_ack(&dev);
    }
    printf("blk bench done bytes=%lu ops=%lu\n", bytes, done);
}

static uint64_t blk_main(void *arg)     /* ring 3 */
{
    (void)arg;
    const char *v;
    size_t n;
    int how = vmmio_find(&dev, VIRTIO_ID_BLOCK);
    if (!how)
        die(2, "blk: no virtio-blk device");
    printf("blk: device at 0x%lx irq %u (%s)\n", (uint64_t)dev.base, dev.irq, how == 1 ? "cmdline" : "probed");
    if (dev.version == 1)
        die(2, "blk: legacy device unsupported");
    if (dev.version != 2) {
        printf("blk: virtio-mmio version %u unsupported\n", dev.version);
        guest_exit(2);
    }
    want_indirect = cmdline_get("blk.indirect", &n) != 0;
    init_device();
    if (irq_mode)
        irq_setup();
    if (want_indirect && !use_indirect)
        puts("blk: indirect descriptors not offered");
    if (cmdline_get("blk.verbose", &n))
        printf("blk: features 0x%lx accepted 0x%lx queue %u seg %u req %u qd %u blk_size %u\n",
               dev.device_features, dev.features, qsize, seg_bytes, req_bytes, qd_max, blk_size);

    if ((v = cmdline_get("blk.write", &n)))
        cmd_write(v, n);
    if (cmdline_get("blk.read", &n))
        cmd_read(cmdline_u64("blk.read", 0));
    if (cmdline_get("blk.id", &n))
        cmd_id();
    if (cmdline_get("blk.capacity", &n))
        printf("blk capacity %lu ro=%d\n", capacity, ro);
    if (cmdline_get("blk.swap", &n))
        cmd_swap(cmdline_u64("blk.swap", 8));
    if ((v = cmdline_get("blk.bad", &n)))
        cmd_bad(v, n);
    if ((v = cmdline_get("blk.bench", &n)))
        cmd_bench(v, n);
    if (irq_mode)
        printf("blk irqs %u\n", irqs);
    puts("blk done");
    return failed ? 1 : 0;
}

int guest_main(const struct boot_info *bi)
{
    (void)bi;
    size_t n;
    /* blk.irq runs in ring 0 (interrupts need IF=1; ring 0 code is slow under KVM-PVM). */
    if ((irq_mode = cmdline_get("blk.irq", &n) != 0))
        return (int)blk_main(0);
    return (int)run_user(blk_main, 0, 0);
}
