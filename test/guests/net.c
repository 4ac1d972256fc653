/*
 * net: a polled virtio-net driver over virtio-mmio version 2 (virtio 1.2
 * §5.1, README.md), the guest half of kindling's network tests.  It is a
 * tiny IPv4 host on one address:
 *   - ARP (RFC 826): answers requests for its address;
 *   - ICMP echo (RFC 792): answers echo requests (ping);
 *   - UDP echo (RFC 862) on port net.echo (default 7): sends every datagram
 *     back to where it came from, byte for byte;
 *   - UDP discard (RFC 863) on port 9: counts datagrams and bytes; a datagram
 *     whose payload starts with "STAT" is answered (to its source) with one
 *     ASCII line of counters, `rx=<frames> bytes=<n> echoed=<n> discarded=<n>
 *     dbytes=<n> dropped=<n> badcsum=<n>` (how a benchmark reads the guest's
 *     side without the serial console).
 * Everything else is counted as dropped or ignored (IPv6, multicast, other
 * protocols and ports, IP fragments, options beyond the header length).
 *
 * Features: VERSION_1, MAC (the address in config space), STATUS, MTU and
 * MRG_RXBUF; no offloads, so the device must hand over frames with complete
 * checksums (every IPv4 header checksum and non-zero UDP checksum received is
 * verified; a wrong one is counted in badcsum and the frame dropped).
 * Queues: receiveq1 (0) with NET_RX device-writable buffers of net.rxbuf
 * bytes each (the 12-byte virtio_net_hdr_v1, then the frame; a frame spread
 * over num_buffers > 1 buffers is gathered), laid back to back as Linux's
 * virtio_net carves its mergeable buffers from page fragments: by default
 * ALIGN(12 + 1518, 64) = 1536 bytes, Linux's size at MTU 1500, so their
 * offsets in a page vary; transmitq1 (1) with NET_TX slots of
 * one device-readable buffer each (header, then frame).  Both rings set
 * VIRTQ_AVAIL_F_NO_INTERRUPT: the driver polls, as DPDK's does.
 *
 * Command line: net.ip=A.B.C.D (default 10.0.2.15), net.echo=PORT (7),
 * net.count=N (print a progress line after every N UDP echoes; default
 * 1000), net.exit=N (exit 0 after N UDP echoes; default 0, never),
 * net.rxbuf=N (receive buffer size, 64..2048 in steps of 64; default 1536;
 * 2048 puts every buffer at offset 0 or 2048 of a page: see
 * docs/architecture.md on receive copies and 4 KiB aliasing).
 *
 * Serial lines (the tests read them):
 *   net: mac <mac> mtu <n> status <n> device at 0x<base>
 *   net: ip <a.b.c.d> up
 *   net: arp reply to <a.b.c.d>                      (the first 4)
 *   net: icmp echo from <a.b.c.d> seq <n> len <n>    (the first 8)
 *   net: udp echoed <n> bytes=<b>                    (every net.count echoes)
 * Exit codes: 2 no usable device, 4 features, 5 queues, 6 needs reset, 7 a
 * used id that was not posted, 8 a malformed rx buffer (used len shorter
 * than the header or beyond the buffer, num_buffers 0 or beyond what is
 * posted).
 *
 * Everything runs in ring 3 like blk.c: only the kicks and status reads trap.
 */
#include "lib/lib.h"
#include "lib/virtio.h"

#define VIRTIO_ID_NET       1

#define NET_F_MTU           3
#define NET_F_MAC           5
#define NET_F_MRG_RXBUF     15
#define NET_F_STATUS        16

#define CFG_MAC             0         /* then status (le16) at 6, max_virtqueue_pairs at 8, mtu at 10 */

#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

#define NET_RX              128
#define NET_TX              128
#define NET_BUF             2048        /* a tx slot; the largest rx buffer */
#define RX_BUF_DEFAULT      1536
#define HDR                 12          /* struct virtio_net_hdr_v1 */
#define FRAME_MAX           (NET_RX * NET_BUF)
#define ETH_HLEN            14
#define ETH_P_IP            0x0800
#define ETH_P_ARP           0x0806
#define IPPROTO_ICMP        1
#define IPPROTO_UDP         17
#define DISCARD_PORT        9
#define STATUS_EVERY        (1u << 16)
#define WAIT_CYCLES         (1ull << 33)    /* TSC cycles: a few seconds */

static struct vmmio dev;
static struct virtq rxq, txq;
static struct virtq_mem rxm, txm;
static unsigned rxn, txn;
static uint8_t mac[6];
static uint32_t my_ip;          /* host order */
static uint16_t echo_port;
static uint64_t count_every, exit_after;
static int mergeable;

static uint8_t rxmem[NET_RX * NET_BUF] __attribute__((aligned(4096)));
static uint32_t rx_len;          /* net.rxbuf: buffer i is rxmem[i * rx_len …] */
#define RXBUF(id)           (rxmem + (size_t)(id) * rx_len)
static uint8_t txbuf[NET_TX][NET_BUF] __attribute__((aligned(4096)));
static uint8_t frame_buf[FRAME_MAX];        /* a frame gathered from several buffers */
static struct vq_slots txs;

static uint64_t n_rx, n_rx_bytes, n_echoed, n_echo_bytes, n_discarded, n_discard_bytes,
                n_dropped, n_badcsum, n_arp, n_icmp;

static void check_status(void) { vmmio_check_status(&dev, 6, "net: device needs reset"); }

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }

/* RFC 1071: the ones' complement sum of n bytes, folded, added to sum. */
static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
    for (; n > 1; p += 2, n -= 2)
        sum += be16(p);
    if (n)
        sum += (uint32_t)p[0] << 8;
    return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static const char *ip_str(uint32_t ip)
{
    static char s[16];
    snprintf(s, sizeof(s), "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
    return s;
}

/* "a.b.c.d" (n bytes) -> host-order address; 0 if malformed. */
static uint32_t parse_ip(const char *s, size_t n)
{
    uint32_t ip = 0;
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        uint64_t v;
        size_t k = parse_u64(s + i, n - i, 10, &v);
        if (!k || v > 255)
            return 0;
        ip = ip << 8 | (uint32_t)v;
        i += k;
        if (part < 3) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
    }
    return i == n ? ip : 0;
}

/* ---- tx ---- */
static void tx_idle(unsigned spin)
{
    if (spin % STATUS_EVERY == 0)
        check_status();
}

/* A free tx slot (its frame area is txbuf[s] + HDR), waiting for one if need be. */
static int tx_slot(void)
{
    return (int)vq_slots_get(&txs, tx_idle);
}

/* Sends the n-byte frame built in slot s's frame area. */
static void tx_send(int s, uint32_t n)
{
    memset(txbuf[s], 0, HDR);       /* no offloads: flags 0, gso_type NONE */
    vq_slots_add(&txs, (unsigned)s, (uintptr_t)txbuf[s], HDR + n);
    vq_kick(&dev, &txq, 1);
}

/* ---- protocols ---- */
static void arp(const uint8_t *f, uint32_t n)
{
    const uint8_t *a = f + ETH_HLEN;
    if (n < ETH_HLEN + 28 || be16(a) != 1 || be16(a + 2) != ETH_P_IP || a[4] != 6 || a[5] != 4) {
        n_dropped++;
        return;
    }
    if (be16(a + 6) != 1 || be32(a + 24) != my_ip)     /* not a request for us */
        return;
    int s = tx_slot();
    uint8_t *r = txbuf[s] + HDR;
    memcpy(r, a + 8, 6);                /* to the sender's hardware address */
    memcpy(r + 6, mac, 6);
    put16(r + 12, ETH_P_ARP);
    uint8_t *ra = r + ETH_HLEN;
    put16(ra, 1);
    put16(ra + 2, ETH_P_IP);
    ra[4] = 6;
    ra[5] = 4;
    put16(ra + 6, 2);                   /* reply */
    memcpy(ra + 8, mac, 6);
    put32(ra + 14, my_ip);
    memcpy(ra + 18, a + 8, 10);         /* target = the requester's hardware and protocol address */
    tx_send(s, ETH_HLEN + 28);
    if (n_arp++ < 4)
        printf("net: arp reply to %s\n", ip_str(be32(a + 14)));
}

/*
 * Builds the reply to IPv4 frame f (n bytes, header ihl bytes, total_len tot)
 * in a tx slot: Ethernet and IP addresses swapped, TTL 64, header checksum
 * recomputed; the payload (ICMP or UDP) is copied for the caller to edit.
 * Returns the slot; *out points at the reply's IP header.
 */
static int ip_reply(const uint8_t *f, unsigned ihl, unsigned tot, uint8_t **out)
{
    int s = tx_slot();
    uint8_t *r = txbuf[s] + HDR;
    const uint8_t *ip = f + ETH_HLEN;
    memcpy(r, f + 6, 6);
    memcpy(r + 6, mac, 6);
    put16(r + 12, ETH_P_IP);
    uint8_t *rip = r + ETH_HLEN;
    memcpy(rip, ip, tot);
    rip[0] = 0x45;                      /* options dropped */
    memmove(rip + 20, ip + ihl, tot - ihl);
    put16(rip + 2, (uint16_t)(tot - ihl + 20));
    put16(rip + 6, 0);                  /* no fragment bits */
    rip[8] = 64;
    put32(rip + 12, my_ip);
    memcpy(rip + 16, ip + 12, 4);
    put16(rip + 10, 0);
    put16(rip + 10, csum_fold(csum_add(0, rip, 20)));
    *out = rip;
    return s;
}

static void icmp(const uint8_t *f, unsigned ihl, unsigned tot)
{
    const uint8_t *ip = f + ETH_HLEN, *ic = ip + ihl;
    unsigned len = tot - ihl;
    if (len < 8 || csum_fold(csum_add(0, ic, len)) != 0) {
        n_badcsum++;
        n_dropped++;
        return;
    }
    if (ic[0] != 8 || ic[1] != 0)       /* only echo requests are answered */
        return;
    uint8_t *rip;
    int s = ip_reply(f, ihl, tot, &rip);
    uint8_t *ric = rip + 20;
    ric[0] = 0;                         /* echo reply */
    put16(ric + 2, 0);
    put16(ric + 2, csum_fold(csum_add(0, ric, len)));
    tx_send(s, ETH_HLEN + 20 + len);
    if (n_icmp++ < 8)
        printf("net: icmp echo from %s seq %u len %u\n", ip_str(be32(ip + 12)), be16(ic + 6), len);
}

static void stat_reply(const uint8_t *f, unsigned ihl, unsigned tot)
{
    char line[256];
    int k = snprintf(line, sizeof(line), "rx=%lu bytes=%lu echoed=%lu discarded=%lu dbytes=%lu dropped=%lu badcsum=%lu\n",
                     n_rx, n_rx_bytes, n_echoed, n_discarded, n_discard_bytes, n_dropped, n_badcsum);
    const uint8_t *ip = f + ETH_HLEN, *u = ip + ihl;
    uint8_t *rip;
    /* The reply is built from the request's first 28 bytes (IP + UDP header), then the text. */
    int s = ip_reply(f, ihl, ihl + 8, &rip);
    uint8_t *ru = rip + 20;
    (void)tot;
    put16(ru, be16(u + 2));
    put16(ru + 2, be16(u));
    put16(ru + 4, (uint16_t)(8 + k));
    put16(ru + 6, 0);                   /* no checksum (RFC 768) */
    memcpy(ru + 8, line, (size_t)k);
    put16(rip + 2, (uint16_t)(20 + 8 + k));
    put16(rip + 10, 0);
    put16(rip + 10, csum_fold(csum_add(0, rip, 20)));
    tx_send(s, ETH_HLEN + 20 + 8 + (uint32_t)k);
}

static void udp(const uint8_t *f, unsigned ihl, unsigned tot)
{
    const uint8_t *ip = f + ETH_HLEN, *u = ip + ihl;
    unsigned ulen = tot - ihl;
    if (ulen < 8 || be16(u + 4) < 8 || be16(u + 4) > ulen) {
        n_dropped++;
        return;
    }
    ulen = be16(u + 4);
    if (be16(u + 6) != 0) {             /* verify: pseudo-header + datagram */
        uint32_t sum = csum_add(0, ip + 12, 8);
        sum += IPPROTO_UDP + ulen;
        if (csum_fold(csum_add(sum, u, ulen)) != 0) {
            n_badcsum++;
            n_dropped++;
            return;
        }
    }
    uint16_t dport = be16(u + 2);
    if (dport == DISCARD_PORT) {
        if (ulen >= 12 && memcmp(u + 8, "STAT", 4) == 0) {
            stat_reply(f, ihl, tot);
            return;
        }
        n_discarded++;
        n_discard_bytes += ulen - 8;
        return;
    }
    if (dport != echo_port) {
        n_dropped++;
        return;
    }
    uint8_t *rip;
    int s = ip_reply(f, ihl, ihl + ulen, &rip);
    uint8_t *ru = rip + 20;
    /* Ports swapped; the checksum stays valid (the pseudo-header's addresses swapped too). */
    put16(ru, dport);
    put16(ru + 2, be16(u));
    tx_send(s, ETH_HLEN + 20 + ulen);
    n_echoed++;
    n_echo_bytes += ulen - 8;
    if (count_every && n_echoed % count_every == 0)
        printf("net: udp echoed %lu bytes=%lu\n", n_echoed, n_echo_bytes);
}

static void ipv4(const uint8_t *f, uint32_t n)
{
    const uint8_t *ip = f + ETH_HLEN;
    if (n < ETH_HLEN + 20 || (ip[0] >> 4) != 4) {
        n_dropped++;
        return;
    }
    unsigned ihl = (ip[0] & 15) * 4u, tot = be16(ip + 2);
    if (ihl < 20 || tot < ihl || tot > n - ETH_HLEN || tot - ihl + 20 > NET_BUF - HDR - ETH_HLEN) {
        n_dropped++;
        return;
    }
    if (csum_fold(csum_add(0, ip, ihl)) != 0) {
        n_badcsum++;
        n_dropped++;
        return;
    }
    if (be32(ip + 16) != my_ip || (be16(ip + 6) & 0x3fff) != 0) {   /* not ours, or a fragment */
        n_dropped++;
        return;
    }
    if (ip[9] == IPPROTO_ICMP)
        icmp(f, ihl, tot);
    else if (ip[9] == IPPROTO_UDP)
        udp(f, ihl, tot);
    else
        n_dropped++;
}

static void frame(const uint8_t *f, uint32_t n)
{
    static const uint8_t bcast[6] = { 255, 255, 255, 255, 255, 255 };
    n_rx++;
    n_rx_bytes += n;
    if (n < ETH_HLEN) {
        n_dropped++;
        return;
    }
    if (memcmp(f, mac, 6) != 0 && memcmp(f, bcast, 6) != 0)
        return;                         /* multicast (IPv6 neighbour discovery, ...) */
    uint16_t type = be16(f + 12);
    if (type == ETH_P_ARP)
        arp(f, n);
    else if (type == ETH_P_IP)
        ipv4(f, n);
}

/* ---- rx ---- */
static void rx_post(unsigned id)
{
    volatile struct virtq_desc *d = &rxq.desc[id];
    d->addr = (uintptr_t)RXBUF(id);
    d->len = rx_len;
    d->flags = VIRTQ_DESC_F_WRITE;
    d->next = 0;
    vq_add(&rxq, (uint16_t)id);
}

static void bad_rx(const char *what, uint32_t v)
{
    printf("net: malformed rx buffer: %s %u\n", what, v);
    guest_exit(8);
}

/* Takes the next used rx buffer, waiting for it (the rest of a merged frame). */
static void rx_next(uint32_t *id, uint32_t *len)
{
    uint64_t t = rdtsc();
    while (!vq_get(&rxq, id, len)) {
        if (rdtsc() - t > WAIT_CYCLES)
            bad_rx("num_buffers beyond what was used, waited for buffer", rxq.last_used);
        __asm__ volatile("pause");
    }
    if (*id >= rxn)
        die(7, "net: bogus rx used id");
    if (*len > rx_len)
        bad_rx("used len beyond the buffer", *len);
}

static int rx_poll(void)
{
    uint32_t id, len;
    int got = 0;
    while (vq_get(&rxq, &id, &len)) {
        if (id >= rxn)
            die(7, "net: bogus rx used id");
        if (len < HDR || len > rx_len)
            bad_rx("used len", len);
        unsigned nbuf = mergeable ? (unsigned)RXBUF(id)[10] | (unsigned)RXBUF(id)[11] << 8 : 1;
        if (nbuf == 0 || nbuf > rxn)
            bad_rx("num_buffers", nbuf);
        if (nbuf == 1) {
            frame(RXBUF(id) + HDR, len - HDR);
        } else {
            uint32_t n = len - HDR;
            memcpy(frame_buf, RXBUF(id) + HDR, n);
            rx_post(id);
            for (unsigned k = 1; k < nbuf; k++) {
                rx_next(&id, &len);
                memcpy(frame_buf + n, RXBUF(id), len);
                n += len;
                if (k + 1 < nbuf)
                    rx_post(id);
            }
            frame(frame_buf, n);
        }
        rx_post(id);
        got = 1;
    }
    if (got)
        vq_kick(&dev, &rxq, 0);
    return got;
}

static void init_device(void)
{
    uint64_t want = 1ull << NET_F_MAC | 1ull << NET_F_STATUS | 1ull << NET_F_MTU | 1ull << NET_F_MRG_RXBUF;
    if (vmmio_negotiate(&dev, want) < 0 || !vmmio_has(&dev, VIRTIO_F_VERSION_1))
        die(4, "net: FEATURES_OK did not latch");
    mergeable = vmmio_has(&dev, NET_F_MRG_RXBUF);
    if (!(rxn = vmmio_queue_setup_mem(&dev, &rxq, 0, NET_RX, &rxm)) ||
        !(txn = vmmio_queue_setup_mem(&dev, &txq, 1, NET_TX, &txm)))
        die(5, "net: a queue is unavailable");
    rxq.avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
    txq.avail[0] = VIRTQ_AVAIL_F_NO_INTERRUPT;
    if (vmmio_has(&dev, NET_F_MAC)) {
        uint32_t lo = vmmio_config32(&dev, CFG_MAC), hi = vmmio_config32(&dev, CFG_MAC + 4);
        memcpy(mac, &lo, 4);
        memcpy(mac + 4, &hi, 2);
    } else {
        static const uint8_t dflt[6] = { 0x02, 0x00, 0x00, 0x00, 0x00, 0x0f };
        memcpy(mac, dflt, 6);
    }
    vmmio_driver_ok(&dev);
    if (vmmio_rd(&dev, VMMIO_STATUS) & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED))
        die(5, "net: device refused DRIVER_OK");
    for (unsigned i = 0; i < rxn; i++)
        rx_post(i);
    vq_kick(&dev, &rxq, 0);
    vq_slots_init(&txs, &txq, txn, "net");
}

static uint64_t net_main(void *arg)     /* ring 3 */
{
    (void)arg;
    if (!vmmio_find(&dev, VIRTIO_ID_NET))
        die(2, "net: no virtio-net device");
    if (dev.version != 2)
        die(2, "net: legacy device unsupported");
    size_t n;
    const char *s = cmdline_get("net.ip", &n);
    my_ip = s ? parse_ip(s, n) : (10u << 24 | 2u << 8 | 15u);
    if (!my_ip)
        die(2, "net: net.ip must be a.b.c.d");
    echo_port = (uint16_t)cmdline_u64("net.echo", 7);
    count_every = cmdline_u64("net.count", 1000);
    exit_after = cmdline_u64("net.exit", 0);
    uint64_t rb = cmdline_u64("net.rxbuf", RX_BUF_DEFAULT);
    if (rb < 64 || rb > NET_BUF || rb % 64)
        die(2, "net: net.rxbuf must be 64..2048 in steps of 64");
    rx_len = (uint32_t)rb;
    init_device();
    /* STATUS and MTU are 16-bit fields inside the 32-bit words at 4 and 8. */
    uint32_t w4 = vmmio_config32(&dev, 4), w8 = vmmio_config32(&dev, 8);
    unsigned status = vmmio_has(&dev, NET_F_STATUS) ? (w4 >> 16) & 0xffff : 1;
    unsigned mtu = vmmio_has(&dev, NET_F_MTU) ? (w8 >> 16) & 0xffff : 1500;
    printf("net: mac %02x:%02x:%02x:%02x:%02x:%02x mtu %u status %u device at 0x%lx\n",
           mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], mtu, status, (uint64_t)dev.base);
    printf("net: ip %s up\n", ip_str(my_ip));
    for (unsigned idle = 1;; idle++) {
        if (rx_poll())
            idle = 1;
        vq_slots_reclaim(&txs);
        if (exit_after && n_echoed >= exit_after) {
            while (txs.free < txs.n)
                vq_slots_reclaim(&txs);
            printf("net: done echoed=%lu dropped=%lu badcsum=%lu\n", n_echoed, n_dropped, n_badcsum);
            return 0;
        }
        if (idle % STATUS_EVERY == 0) {
            check_status();
            vmmio_ack(&dev);
        }
        __asm__ volatile("pause");
    }
}

int guest_main(const struct boot_info *bi)
{
    (void)bi;
    return (int)run_user(net_main, 0, 0);
}
