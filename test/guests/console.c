/*
 * console: a polled virtio-console driver over virtio-mmio version 2
 * (virtio 1.2 §5.3, README.md).
 *
 * Without VIRTIO_CONSOLE_F_MULTIPORT the device has one port and two queues:
 * receiveq (0, device -> driver, device-writable buffers) and transmitq
 * (1, driver -> device, device-readable buffers).  The driver keeps
 * RX_BUFS buffers of RX_BUF bytes posted on receiveq at all times (each one
 * is reposted as soon as its bytes are consumed), assembles what arrives into
 * lines and answers every line L with "console: L\n" on transmitq; the line
 * "quit" ends the guest (exit 0).  A transmit buffer is reused only after
 * its used entry has come back.  COM1 (the 16550) stays the diagnostic
 * channel: the device line at start and every failure go there.
 * console.flood=N transmits N bytes of text (the same 64-byte lines as
 * hello.flood, README.md) in 4 KiB requests right after "console: ready",
 * before the echo loop: a host that does not read makes it wait.
 *
 * Everything runs in ring 3 like blk.c: register accesses are single trapped
 * instructions, the rings, polling and line assembly run natively.
 */
#include "lib/lib.h"
#include "lib/virtio.h"

#define VIRTIO_ID_CONSOLE   3

#define CONSOLE_F_SIZE          0
#define CONSOLE_F_MULTIPORT     1       /* never accepted */
#define CONSOLE_F_EMERG_WRITE   2

/* struct virtio_console_config { le16 cols, rows; le32 max_nr_ports, emerg_wr; } */
#define CFG_EMERG_WR        8

#define Q_RX                0           /* receiveq (port 0) */
#define Q_TX                1           /* transmitq (port 0) */
#define RX_BUFS             8
#define RX_BUF              256
#define QMAX                16          /* ring entries asked for, per queue */
#define LINE_MAX            200         /* longer lines are echoed in pieces */
#define PREFIX              "console: "
#define TX_BUF              (sizeof(PREFIX) - 1 + LINE_MAX + 1)
#define FLOOD_CHUNK         4096        /* bytes per console.flood request */

#define TIMEOUT_TX          (1ull << 36)    /* TSC cycles for a transmit without console.timeout_ms */

/* Exit codes (README.md). */
#define EXIT_QUIT           0           /* got the line "quit" */
#define EXIT_NODEV          2           /* no usable device */
#define EXIT_TIMEOUT        3           /* console.timeout_ms passed without input, or a transmit timed out */
#define EXIT_FEATURES       4           /* FEATURES_OK did not latch, or no VERSION_1 */
#define EXIT_QUEUE          5           /* receiveq / transmitq unavailable, or DRIVER_OK refused */
#define EXIT_NEEDS_RESET    6           /* Status has DEVICE_NEEDS_RESET */
#define EXIT_BOGUS          7           /* used id not a posted buffer, or used len > its size */

static struct vmmio dev;
static struct virtq rxq, txq;
static struct virtq_mem rx_mem, tx_mem;
static unsigned rx_size, tx_size;

static uint8_t rx_buf[RX_BUFS][RX_BUF] __attribute__((aligned(4096)));
static uint8_t rx_posted[RX_BUFS];  /* buffer i is on receiveq */
static char tx_buf[TX_BUF] __attribute__((aligned(64)));
static char flood_buf[FLOOD_CHUNK] __attribute__((aligned(4096)));

static char line[LINE_MAX];
static unsigned line_len;
static int line_cont;               /* the current line already had a piece echoed */

static uint64_t timeout;            /* TSC cycles per wait; 0: none (input) / TIMEOUT_TX (transmit) */
static uint64_t timeout_ms;

/* ---- TSC rate for console.timeout_ms ---- */
#define LAPIC_LVTT  0x320
#define LAPIC_TMICT 0x380
#define LAPIC_TMCCT 0x390
#define LAPIC_TDCR  0x3e0

/*
 * TSC cycles per millisecond, measured against the LAPIC timer: started
 * at 10 ms (one-shot, masked, divide by 1: KVM and QEMU clock it at 1 GHz,
 * as lib/smp.c assumes), read until at least 5 ms have passed.  CPUID
 * 0x15/0x16 are empty on many hosts (this one's too).  Without a running
 * timer it assumes 3 GHz: waits then last at least as long as asked on
 * CPUs up to 3 GHz.
 */
static uint64_t tsc_per_ms(void)
{
    const uint32_t ticks = 10000000;            /* 10 ms at 1 GHz */
    mmio_write32(LAPIC_BASE + LAPIC_TDCR, 0xb);
    mmio_write32(LAPIC_BASE + LAPIC_LVTT, 0x10000 | 0xef);
    mmio_write32(LAPIC_BASE + LAPIC_TMICT, ticks);
    uint64_t t0 = rdtsc();
    uint32_t c;
    while ((c = mmio_read32(LAPIC_BASE + LAPIC_TMCCT)) != 0 && c > ticks / 2 &&
           rdtsc() - t0 < (1ull << 32))
        __asm__ volatile("pause");
    uint64_t dt = rdtsc() - t0;
    mmio_write32(LAPIC_BASE + LAPIC_TMICT, 0);
    if (c == 0 || c > ticks / 2)                /* not running (or stuck): no reading */
        return 3000000;
    return dt * 1000000 / (ticks - c);          /* cycles per (ticks - c) ns, scaled to 1 ms */
}

/* ---- bring-up (virtio 1.2 §3.1.1, §5.3.5) ---- */
static void init_device(int want_emerg)
{
    uint64_t wanted = 1ull << VIRTIO_F_VERSION_1 | 1u << CONSOLE_F_SIZE;
    if (want_emerg)
        wanted |= 1u << CONSOLE_F_EMERG_WRITE;
    if (vmmio_negotiate(&dev, wanted) < 0)
        die(EXIT_FEATURES, "console: FEATURES_OK did not latch");
    if (!vmmio_has(&dev, VIRTIO_F_VERSION_1))
        die(EXIT_FEATURES, "console: device does not offer VERSION_1");
    if (!(rx_size = vmmio_queue_setup_mem(&dev, &rxq, Q_RX, QMAX, &rx_mem)))
        die(EXIT_QUEUE, "console: receiveq (queue 0) unavailable");
    if (!(tx_size = vmmio_queue_setup_mem(&dev, &txq, Q_TX, QMAX, &tx_mem)))
        die(EXIT_QUEUE, "console: transmitq (queue 1) unavailable");
    vmmio_driver_ok(&dev);
    if (vmmio_rd(&dev, VMMIO_STATUS) & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED))
        die(EXIT_QUEUE, "console: device refused DRIVER_OK");
}

/* ---- receiveq: buffer i is descriptor i ---- */
static void rx_post(unsigned i)
{
    volatile struct virtq_desc *d = &rxq.desc[i];
    d->addr = (uintptr_t)rx_buf[i];
    d->len = RX_BUF;
    d->flags = VIRTQ_DESC_F_WRITE;
    d->next = 0;
    rx_posted[i] = 1;
    vq_add(&rxq, (uint16_t)i);
}

static void check_status(void) { vmmio_check_status(&dev, EXIT_NEEDS_RESET, "console: device needs reset"); }

/* ---- transmitq: one buffer (tx_buf or flood_buf, descriptor 0), waited for ---- */
static void transmit_buf(const char *buf, size_t n)
{
    volatile struct virtq_desc *d = &txq.desc[0];
    d->addr = (uintptr_t)buf;
    d->len = (uint32_t)n;
    d->flags = 0;
    d->next = 0;
    vq_add(&txq, 0);
    vq_kick(&dev, &txq, Q_TX);
    uint64_t t0 = rdtsc(), limit = timeout ? timeout : TIMEOUT_TX;
    for (unsigned spin = 1; txq.used[1] == txq.last_used; spin++) {
        if (spin % 4096 == 0) {
            check_status();
            if (rdtsc() - t0 > limit)
                die(EXIT_TIMEOUT, "console: transmit timed out");
        }
        __asm__ volatile("pause");
    }
    uint32_t id = ~0u, len;
    vq_get(&txq, &id, &len);
    vmmio_ack(&dev);
    if (id != 0) {
        printf("console: bogus transmit used id %u\n", id);
        guest_exit(EXIT_BOGUS);
    }
}

static void transmit(size_t n)
{
    transmit_buf(tx_buf, n);
}

/* "console: " + s[0..n) + "\n" through the virtio console (n <= LINE_MAX). */
static void echo(const char *s, size_t n)
{
    size_t p = sizeof(PREFIX) - 1;
    memcpy(tx_buf, PREFIX, p);
    memcpy(tx_buf + p, s, n);
    tx_buf[p + n] = '\n';
    transmit(p + n + 1);
}

/* console.emerg=1: the same kind of line, one byte at a time into emerg_wr. */
static void emerg_write(const char *s)
{
    for (; *s; s++)
        vmmio_wr(&dev, VMMIO_CONFIG + CFG_EMERG_WR, (uint8_t)*s);
}

/* ---- console.flood=N: 64-byte lines "<k as %08x> " + 54 letters + "\n", cut at N bytes ---- */
static void flood(uint64_t n)
{
    for (uint64_t off = 0; off < n;) {
        size_t k = n - off < FLOOD_CHUNK ? (size_t)(n - off) : FLOOD_CHUNK;
        flood_text(flood_buf, off, k);
        transmit_buf(flood_buf, k);
        off += k;
    }
}

/* ---- line assembly ---- */

/* Ends the current line (without its '\n'); returns 1 if it was "quit". */
static int line_done(void)
{
    unsigned n = line_len;
    if (n && line[n - 1] == '\r')
        n--;
    echo(line, n);
    int quit = !line_cont && n == 4 && memcmp(line, "quit", 4) == 0;
    line_len = 0;
    line_cont = 0;
    return quit;
}

/* Feeds received bytes; returns 1 once the line "quit" has been echoed. */
static int feed(const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (line_done())
                return 1;
            continue;
        }
        if (line_len == LINE_MAX) {     /* full: echo this piece, go on with the rest */
            echo(line, line_len);
            line_len = 0;
            line_cont = 1;
        }
        line[line_len++] = (char)p[i];
    }
    return 0;
}

/* Waits for receiveq's next used entry; exits on NEEDS_RESET or console.timeout_ms. */
static void wait_input(void)
{
    uint64_t t0 = rdtsc();
    for (unsigned spin = 1; rxq.used[1] == rxq.last_used; spin++) {
        if (spin % 4096 == 0) {
            check_status();
            if (timeout && rdtsc() - t0 > timeout) {
                printf("console: no input for %lu ms\n", timeout_ms);
                guest_exit(EXIT_TIMEOUT);
            }
        }
        __asm__ volatile("pause");
    }
}

static uint64_t console_main(void *arg)     /* ring 3 */
{
    (void)arg;
    size_t n;
    int how = vmmio_find(&dev, VIRTIO_ID_CONSOLE);
    if (!how)
        die(EXIT_NODEV, "console: no virtio-console device");
    printf("console: device at 0x%lx irq %u (%s)\n", (uint64_t)dev.base, dev.irq, how == 1 ? "cmdline" : "probed");
    if (dev.version != 2) {
        printf("console: virtio-mmio version %u unsupported\n", dev.version);
        guest_exit(EXIT_NODEV);
    }
    const char *v = cmdline_get("console.emerg", &n);
    int want_emerg = v && n == 1 && v[0] == '1';
    if ((timeout_ms = cmdline_u64("console.timeout_ms", 0)))
        timeout = timeout_ms * tsc_per_ms();
    init_device(want_emerg);
    if (cmdline_get("console.verbose", &n))
        printf("console: features 0x%lx accepted 0x%lx receiveq %u transmitq %u tsc/ms %lu\n",
               dev.device_features, dev.features, rx_size, tx_size, timeout ? timeout / timeout_ms : 0);

    unsigned bufs = rx_size < RX_BUFS ? rx_size : RX_BUFS;
    for (unsigned i = 0; i < bufs; i++)
        rx_post(i);
    vq_kick(&dev, &rxq, Q_RX);

    echo("ready", 5);
    if (want_emerg) {
        if (vmmio_has(&dev, CONSOLE_F_EMERG_WRITE))
            emerg_write(PREFIX "emerg\n");
        else
            puts("console: EMERG_WRITE not offered");
    }
    uint64_t flood_n = cmdline_u64("console.flood", 0);
    if (flood_n)
        flood(flood_n);

    for (;;) {
        wait_input();
        uint32_t id, len;
        while (vq_get(&rxq, &id, &len)) {
            if (id >= bufs || !rx_posted[id]) {
                printf("console: bogus receive used id %u\n", id);
                guest_exit(EXIT_BOGUS);
            }
            if (len > RX_BUF) {
                printf("console: receive used len %u > %u\n", len, RX_BUF);
                guest_exit(EXIT_BOGUS);
            }
            rx_posted[id] = 0;
            int quit = feed(rx_buf[id], len);
            rx_post(id);
            vq_kick(&dev, &rxq, Q_RX);
            if (quit)
                return EXIT_QUIT;
        }
        vmmio_ack(&dev);
    }
}

int guest_main(const struct boot_info *bi)
{
    (void)bi;
    return (int)run_user(console_main, 0, 0);
}
