/*
 * rng: a polled virtio-rng (entropy device) driver over virtio-mmio version 2
 * (virtio 1.2 §5.4, README.md).
 *
 * The device has one queue, requestq (0), and no configuration space.  The
 * driver posts device-writable buffers; the device fills a prefix of each and
 * returns it with the number of bytes written as the used length, which may
 * be short (even 0).  The driver keeps RNG_INFLIGHT buffers posted and asks
 * again until rng.bytes (default 65536) bytes have arrived, then counts the
 * distinct byte values among them.  64 KiB of good entropy holds all 256
 * values (each is missing with probability (255/256)^65536 ~ e^-256).
 *
 * Everything runs in ring 3 like blk.c: register accesses are single trapped
 * instructions, posting buffers, polling and counting run natively.
 */
#include "lib/lib.h"
#include "lib/virtio.h"

#define VIRTIO_ID_RNG       4

#define RNG_BUF             4096            /* bytes per request */
#define RNG_INFLIGHT        8               /* requests posted at once */
#define RNG_QMAX            16              /* ring entries asked for */
#define TIMEOUT_PROGRESS    (1ull << 34)    /* TSC cycles without a new byte: several seconds */

/* Exit codes (README.md). */
#define EXIT_OK             0               /* all 256 byte values seen */
#define EXIT_FEW            1               /* fewer than 256 */
#define EXIT_NODEV          2               /* no usable device */
#define EXIT_TIMEOUT        3               /* no new byte for TIMEOUT_PROGRESS */
#define EXIT_FEATURES       4               /* FEATURES_OK did not latch, or no VERSION_1 */
#define EXIT_QUEUE          5               /* requestq unavailable, or DRIVER_OK refused */
#define EXIT_NEEDS_RESET    6               /* Status has DEVICE_NEEDS_RESET */
#define EXIT_BOGUS          7               /* used id not a posted buffer, or used len > its size */

static struct vmmio dev;
static struct virtq vq;
static unsigned qsize;

static uint8_t buf[RNG_INFLIGHT][RNG_BUF] __attribute__((aligned(4096)));
static uint32_t posted[RNG_INFLIGHT];       /* bytes asked for in slot i; 0 = free */
static uint64_t seen[256];                  /* occurrences of each byte value */

/* ---- bring-up (virtio 1.2 §3.1.1): VERSION_1 only, requestq ---- */
static void init_device(void)
{
    if (vmmio_negotiate(&dev, 1ull << VIRTIO_F_VERSION_1) < 0)
        die(EXIT_FEATURES, "rng: FEATURES_OK did not latch");
    if (!vmmio_has(&dev, VIRTIO_F_VERSION_1))
        die(EXIT_FEATURES, "rng: device does not offer VERSION_1");
    if (!(qsize = vmmio_queue_setup(&dev, &vq, 0, RNG_QMAX)))
        die(EXIT_QUEUE, "rng: queue 0 unavailable");
    vmmio_driver_ok(&dev);
    if (vmmio_rd(&dev, VMMIO_STATUS) & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED))
        die(EXIT_QUEUE, "rng: device refused DRIVER_OK");
}

/* Posts slot s (descriptor s, one device-writable buffer of len bytes). */
static void post(unsigned s, uint32_t len)
{
    volatile struct virtq_desc *d = &vq.desc[s];
    d->addr = (uintptr_t)buf[s];
    d->len = len;
    d->flags = VIRTQ_DESC_F_WRITE;
    d->next = 0;
    posted[s] = len;
    vq_add(&vq, (uint16_t)s);
}

static void check_progress(uint64_t since)
{
    if (rdtsc() - since > TIMEOUT_PROGRESS)
        die(EXIT_TIMEOUT, "rng: timed out waiting for entropy");
}

/* Waits for a used entry; exits on NEEDS_RESET or when no byte came since `since`. */
static void wait_used(uint64_t since)
{
    for (unsigned spin = 1;; spin++) {
        if (vq.used[1] != vq.last_used)
            return;
        if (spin % 4096 == 0) {
            if (vmmio_rd(&dev, VMMIO_STATUS) & VIRTIO_S_NEEDS_RESET)
                die(EXIT_NEEDS_RESET, "rng: device needs reset");
            check_progress(since);
        }
        __asm__ volatile("pause");
    }
}

/*
 * Reads `want` bytes: keeps up to min(RNG_INFLIGHT, ring) buffers posted,
 * each asking for at most what is still missing (received + asked <= want),
 * so a device that fills every buffer ends exactly at `want`; short used
 * lengths just mean more requests.  The timeout counts from the last
 * completion that brought bytes (a device that only returns empty buffers
 * times out too).
 */
static void read_entropy(uint64_t want)
{
    unsigned slots = qsize < RNG_INFLIGHT ? qsize : RNG_INFLIGHT;
    uint64_t got = 0, asked = 0;        /* asked: posted and not yet used */
    uint64_t progress = rdtsc();
    while (got < want) {
        check_progress(progress);
        unsigned added = 0;
        for (unsigned s = 0; s < slots && got + asked < want; s++) {
            if (posted[s])
                continue;
            uint64_t left = want - got - asked;
            uint32_t len = left < RNG_BUF ? (uint32_t)left : RNG_BUF;
            post(s, len);
            asked += len;
            added++;
        }
        if (added)
            vq_kick(&dev, &vq, 0);
        wait_used(progress);
        uint32_t id, len;
        while (vq_get(&vq, &id, &len)) {
            if (id >= slots || !posted[id]) {
                printf("rng: bogus used id %u\n", id);
                guest_exit(EXIT_BOGUS);
            }
            if (len > posted[id]) {
                printf("rng: used len %u > buffer %u\n", len, posted[id]);
                guest_exit(EXIT_BOGUS);
            }
            for (uint32_t i = 0; i < len; i++)
                seen[buf[id][i]]++;
            if (len)
                progress = rdtsc();
            got += len;
            asked -= posted[id];
            posted[id] = 0;
        }
        vmmio_ack(&dev);
    }
}

static uint64_t rng_main(void *arg)     /* ring 3 */
{
    (void)arg;
    if (!vmmio_find(&dev, VIRTIO_ID_RNG))
        die(EXIT_NODEV, "rng: no virtio-rng device");
    if (dev.version != 2) {
        printf("rng: virtio-mmio version %u unsupported\n", dev.version);
        guest_exit(EXIT_NODEV);
    }
    uint64_t want = cmdline_u64("rng.bytes", 65536);
    init_device();
    read_entropy(want);
    unsigned k = 0;
    for (unsigned v = 0; v < 256; v++)
        k += seen[v] != 0;
    printf("rng: read %lu bytes, %u distinct byte values\n", want, k);
    return k == 256 ? EXIT_OK : EXIT_FEW;
}

int guest_main(const struct boot_info *bi)
{
    (void)bi;
    return (int)run_user(rng_main, 0, 0);
}
