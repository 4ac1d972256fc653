/*
 * vsock: a polled virtio-vsock driver over virtio-mmio version 2 (virtio 1.2
 * §5.10, README.md), the guest half of kindling's vsock tests.
 *
 * Queues: rx (0) with VS_RX device-writable buffers of VS_BUF bytes (header
 * and payload in one buffer), tx (1) with VS_TX slots (one device-readable
 * buffer each, header then payload), event (2) with a few 4-byte buffers (a
 * TRANSPORT_RESET drops every connection).  Config space: guest_cid (le64).
 *
 * It does two things at once, until the host stops the VM:
 *   - listens on port vsock.listen (default 1234) and echoes every byte it
 *     receives on each connection back to it (up to VS_CONNS at once).  A
 *     REQUEST to any other port gets RST.  A SHUTDOWN from the peer is
 *     answered, once the echo is out, with RST (the connection is closed).
 *   - connects to the host (CID 2) port vsock.connect (default 5678; 0: no)
 *     and sends vsock.bytes (default 16 MiB) of a pattern (byte i is the top
 *     byte of i * 0x9E3779B1), then the CRC-32 of those bytes (le32), then
 *     SHUTDOWN; a refused connect is retried (vsock.tries, default 100).
 *
 * Flow control both ways (§5.10.6.3): each connection advertises buf_alloc
 * = VS_ECHO (the echo buffer) and fwd_cnt = bytes taken out of it, so a host
 * that does not read its echo stalls its own writer after VS_ECHO bytes; the
 * driver sends only within the peer's credit (buf_alloc - (tx_cnt -
 * fwd_cnt)) and asks with CREDIT_REQUEST when it has none.  Data beyond the
 * advertised credit, or for an unknown connection, is answered with RST.
 * vsock.delay=N spins N TSC cycles per received data packet (a slow reader).
 *
 * Serial lines (the tests read them):
 *   vsock: cid <cid> device at 0x<base>
 *   vsock: listening on <port>
 *   vsock: stream connected | vsock: stream refused, retrying | vsock: stream gave up
 *   vsock: stream done bytes=<n> crc=<8 hex>
 *   vsock: conn <n> closed echoed=<bytes>             (an echo connection ended)
 * vsock.exit=1: exit 0 once the stream is done and no echo connection is left.
 * Exit codes: 2 no usable device, 4 features, 5 queues, 6 needs reset, 7 a
 * used id that was not posted, 8 a malformed rx packet (len beyond its buffer).
 *
 * Everything runs in ring 3 like blk.c: only the kicks and status reads trap.
 */
#include "lib/lib.h"
#include "lib/virtio.h"

#define VIRTIO_ID_VSOCK     19

#define OP_REQUEST          1
#define OP_RESPONSE         2
#define OP_RST              3
#define OP_SHUTDOWN         4
#define OP_RW               5
#define OP_CREDIT_UPDATE    6
#define OP_CREDIT_REQUEST   7
#define TYPE_STREAM         1
#define SHUT_RCV            1
#define SHUT_SEND           2
#define HOST_CID            2
#define EVENT_TRANSPORT_RESET 0

#define VS_RX               64          /* rx buffers posted */
#define VS_TX               64          /* tx slots */
#define VS_EV               4
#define VS_BUF              4096        /* bytes per rx buffer / tx slot */
#define HDR                 44
#define VS_PAYLOAD          (VS_BUF - HDR)
#define VS_CONNS            80          /* echo connections at once */
#define VS_ECHO             16384       /* echo buffer per connection = our buf_alloc */
#define STREAM_PORT         49152       /* our port for the stream connection */
#define RETRY_CYCLES        (1ull << 26)
#define STATUS_EVERY        (1u << 16)

struct hdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct hdr) == HDR, "virtio_vsock_hdr is 44 bytes");

struct conn {
    int used;
    uint32_t port;              /* the peer's port (host side) */
    uint32_t peer_alloc, peer_fwd;
    uint32_t tx_cnt;            /* bytes we sent */
    uint32_t rx_cnt, fwd_cnt;   /* bytes received / taken out of the echo buffer */
    uint32_t adv_fwd;           /* fwd_cnt the peer last heard */
    uint32_t head, fill;        /* echo ring */
    int peer_shut, need_credit_req;
    uint8_t buf[VS_ECHO];
};

static struct vmmio dev;
static struct virtq rxq, txq, evq;
static struct virtq_mem rxm, txm, evm;
static unsigned rxn, txn, evn;
static uint64_t cid;
static uint32_t listen_port;

static uint8_t rxbuf[VS_RX][VS_BUF] __attribute__((aligned(4096)));
static uint8_t txbuf[VS_TX][VS_BUF] __attribute__((aligned(4096)));
static uint32_t evbuf[VS_EV][2];
static struct vq_slots txs;
static int tx_pending;          /* added, not kicked */
static struct conn conns[VS_CONNS];
static uint64_t delay;

/* The stream connection. */
static uint32_t s_port;         /* host port, 0: none */
static int s_state;             /* 0 idle, 1 requested, 2 connected, 3 done, 4 gave up */
static uint64_t s_total, s_sent, s_tries, s_max_tries, s_retry_at;
static uint32_t s_crc, s_tx_cnt, s_peer_alloc, s_peer_fwd;
static int s_crc_sent, s_credit_req;

static void check_status(void) { vmmio_check_status(&dev, 6, "vsock: device needs reset"); }

/* ---- tx ---- */
static void tx_reclaim(void)
{
    vq_slots_reclaim(&txs);
}

static void tx_flush(void)
{
    if (tx_pending) {
        vq_kick(&dev, &txq, 1);
        tx_pending = 0;
    }
}

static void tx_idle(unsigned spin)
{
    tx_flush();     /* what is added but not kicked may be what the device must complete first */
    if (spin % STATUS_EVERY == 0)
        check_status();
}

/* A free tx slot, waiting for one if need be. */
static int tx_slot(void)
{
    return (int)vq_slots_get(&txs, tx_idle);
}

/* Sends one packet to the host from `sport` to `dport` (payload copied). */
static void send_pkt(uint32_t sport, uint32_t dport, uint16_t op, uint32_t flags,
                     uint32_t buf_alloc, uint32_t fwd_cnt, const void *data, uint32_t len)
{
    int s = tx_slot();
    struct hdr *h = (struct hdr *)txbuf[s];
    h->src_cid = cid;
    h->dst_cid = HOST_CID;
    h->src_port = sport;
    h->dst_port = dport;
    h->len = len;
    h->type = TYPE_STREAM;
    h->op = op;
    h->flags = flags;
    h->buf_alloc = buf_alloc;
    h->fwd_cnt = fwd_cnt;
    if (len)
        memcpy(txbuf[s] + HDR, data, len);
    vq_slots_add(&txs, (unsigned)s, (uintptr_t)txbuf[s], HDR + len);
    if (++tx_pending >= 8)
        tx_flush();
}

static void rst(uint32_t sport, uint32_t dport)
{
    send_pkt(sport, dport, OP_RST, 0, 0, 0, 0, 0);
}

/* ---- echo connections ---- */
static struct conn *find(uint32_t port)
{
    for (unsigned i = 0; i < VS_CONNS; i++)
        if (conns[i].used && conns[i].port == port)
            return &conns[i];
    return 0;
}

static unsigned closed_count;

static void conn_close(struct conn *c, int send_rst)
{
    if (send_rst)
        rst(listen_port, c->port);
    printf("vsock: conn %u closed echoed=%u\n", closed_count++, c->tx_cnt);
    c->used = 0;
}

static unsigned live_conns(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < VS_CONNS; i++)
        n += conns[i].used;
    return n;
}

/* Echo what is buffered, within the peer's credit. */
static void conn_pump(struct conn *c)
{
    while (c->fill) {
        uint32_t credit = c->peer_alloc - (c->tx_cnt - c->peer_fwd);
        if (credit == 0 || credit > 0x80000000u) {
            if (!c->need_credit_req) {
                send_pkt(listen_port, c->port, OP_CREDIT_REQUEST, 0, VS_ECHO, c->fwd_cnt, 0, 0);
                c->adv_fwd = c->fwd_cnt;
                c->need_credit_req = 1;
            }
            return;
        }
        uint32_t n = c->fill;
        if (n > VS_PAYLOAD)
            n = VS_PAYLOAD;
        if (n > credit)
            n = credit;
        if (n > VS_ECHO - c->head)
            n = VS_ECHO - c->head;      /* contiguous part of the ring */
        c->head = (c->head + n) % VS_ECHO;
        c->fill -= n;
        c->fwd_cnt += n;
        c->tx_cnt += n;
        send_pkt(listen_port, c->port, OP_RW, 0, VS_ECHO, c->fwd_cnt, c->buf + ((c->head + VS_ECHO - n) % VS_ECHO), n);
        c->adv_fwd = c->fwd_cnt;
    }
    if (c->peer_shut) {
        conn_close(c, 1);
        return;
    }
    /* Credit the peer lost sight of: tell it (a writer stalled on a full buffer waits for this). */
    if (c->fwd_cnt - c->adv_fwd >= VS_ECHO / 2) {
        send_pkt(listen_port, c->port, OP_CREDIT_UPDATE, 0, VS_ECHO, c->fwd_cnt, 0, 0);
        c->adv_fwd = c->fwd_cnt;
    }
}

static void spin(uint64_t cycles)
{
    uint64_t t = rdtsc();
    while (rdtsc() - t < cycles)
        __asm__ volatile("pause");
}

/* ---- the stream to the host ---- */
static uint8_t pattern(uint64_t i)
{
    return (uint8_t)(((uint32_t)i * 0x9E3779B1u) >> 24);
}

static void stream_request(void)
{
    send_pkt(STREAM_PORT, s_port, OP_REQUEST, 0, VS_ECHO, 0, 0, 0);
    s_state = 1;
}

static void stream_pump(void)
{
    static uint8_t chunk[VS_PAYLOAD];
    if (s_state == 0 && s_port && rdtsc() >= s_retry_at)
        stream_request();
    if (s_state != 2)
        return;
    for (int k = 0; k < 16; k++) {
        uint32_t credit = s_peer_alloc - (s_tx_cnt - s_peer_fwd);
        if (credit == 0 || credit > 0x80000000u) {
            if (!s_credit_req) {
                send_pkt(STREAM_PORT, s_port, OP_CREDIT_REQUEST, 0, VS_ECHO, 0, 0, 0);
                s_credit_req = 1;
            }
            return;
        }
        uint32_t n;
        if (s_sent < s_total) {
            uint64_t left = s_total - s_sent;
            n = left < VS_PAYLOAD ? (uint32_t)left : VS_PAYLOAD;
            if (n > credit)
                n = credit;
            for (uint32_t i = 0; i < n; i++)
                chunk[i] = pattern(s_sent + i);
            s_crc = crc32_update(s_crc, chunk, n);
            s_sent += n;
        } else if (!s_crc_sent) {
            if (credit < 4)
                return;
            n = 4;
            memcpy(chunk, &s_crc, 4);
            s_crc_sent = 1;
        } else {
            send_pkt(STREAM_PORT, s_port, OP_SHUTDOWN, SHUT_RCV | SHUT_SEND, VS_ECHO, 0, 0, 0);
            printf("vsock: stream done bytes=%lu crc=%08x\n", s_total, s_crc);
            s_state = 3;
            return;
        }
        s_tx_cnt += n;
        send_pkt(STREAM_PORT, s_port, OP_RW, 0, VS_ECHO, 0, chunk, n);
    }
}

static void stream_packet(const struct hdr *h)
{
    s_peer_alloc = h->buf_alloc;
    s_peer_fwd = h->fwd_cnt;
    switch (h->op) {
    case OP_RESPONSE:
        if (s_state == 1) {
            s_state = 2;
            puts("vsock: stream connected");
        }
        break;
    case OP_RST:
        if (s_state == 1) {
            if (++s_tries >= s_max_tries) {
                puts("vsock: stream gave up");
                s_state = 4;
            } else {
                if (s_tries == 1)
                    puts("vsock: stream refused, retrying");
                s_state = 0;
                s_retry_at = rdtsc() + RETRY_CYCLES;
            }
        } else if (s_state == 2) {
            puts("vsock: stream reset by the host");
            s_state = 4;
        }
        break;
    case OP_CREDIT_UPDATE:
        s_credit_req = 0;
        break;
    case OP_CREDIT_REQUEST:
        send_pkt(STREAM_PORT, s_port, OP_CREDIT_UPDATE, 0, VS_ECHO, 0, 0, 0);
        break;
    case OP_RW:         /* the host should not write: counted as consumed at once */
        send_pkt(STREAM_PORT, s_port, OP_CREDIT_UPDATE, 0, VS_ECHO, 0, 0, 0);
        break;
    default:
        break;
    }
    if (h->op != OP_RST && h->op != OP_CREDIT_REQUEST)
        s_credit_req = 0;
}

/* ---- rx ---- */
static void rx_post(unsigned i)
{
    volatile struct virtq_desc *d = &rxq.desc[i];
    d->addr = (uintptr_t)rxbuf[i];
    d->len = VS_BUF;
    d->flags = VIRTQ_DESC_F_WRITE;
    d->next = 0;
    vq_add(&rxq, (uint16_t)i);
}

static void packet(const struct hdr *h, const uint8_t *data)
{
    if (h->type != TYPE_STREAM || h->dst_cid != cid || h->src_cid != HOST_CID)
        return;
    if (s_port && h->dst_port == STREAM_PORT && h->src_port == s_port) {
        stream_packet(h);
        return;
    }
    struct conn *c = find(h->src_port);
    if (h->dst_port != listen_port) {
        if (h->op != OP_RST)
            rst(h->dst_port, h->src_port);
        return;
    }
    if (h->op == OP_REQUEST) {
        if (c) {                        /* a second REQUEST for a live connection */
            conn_close(c, 1);
            return;
        }
        for (unsigned i = 0; i < VS_CONNS && !c; i++)
            if (!conns[i].used)
                c = &conns[i];
        if (!c) {
            rst(listen_port, h->src_port);
            return;
        }
        memset(c, 0, sizeof(*c) - VS_ECHO);
        c->used = 1;
        c->port = h->src_port;
        c->peer_alloc = h->buf_alloc;
        c->peer_fwd = h->fwd_cnt;
        send_pkt(listen_port, c->port, OP_RESPONSE, 0, VS_ECHO, 0, 0, 0);
        return;
    }
    if (!c) {
        if (h->op != OP_RST)
            rst(listen_port, h->src_port);
        return;
    }
    c->peer_alloc = h->buf_alloc;
    c->peer_fwd = h->fwd_cnt;
    c->need_credit_req = 0;
    switch (h->op) {
    case OP_RW:
        if (h->len > VS_ECHO - c->fill || c->peer_shut) {   /* beyond our credit */
            conn_close(c, 1);
            return;
        }
        for (uint32_t i = 0; i < h->len; i++)
            c->buf[(c->head + c->fill + i) % VS_ECHO] = data[i];
        c->fill += h->len;
        c->rx_cnt += h->len;
        if (delay)
            spin(delay);
        break;
    case OP_SHUTDOWN:
        c->peer_shut = 1;
        break;
    case OP_RST:
        conn_close(c, 0);
        return;
    case OP_CREDIT_REQUEST:
        send_pkt(listen_port, c->port, OP_CREDIT_UPDATE, 0, VS_ECHO, c->fwd_cnt, 0, 0);
        c->adv_fwd = c->fwd_cnt;
        break;
    default:
        break;
    }
    conn_pump(c);
}

static void events(void)
{
    uint32_t id, len;
    int any = 0;
    while (vq_get(&evq, &id, &len)) {
        if (id >= evn)
            die(7, "vsock: bogus event used id");
        if (len >= 4 && evbuf[id][0] == EVENT_TRANSPORT_RESET) {
            puts("vsock: transport reset");
            for (unsigned i = 0; i < VS_CONNS; i++)
                conns[i].used = 0;
            if (s_state == 1 || s_state == 2) {
                s_state = 0;
                s_sent = 0;
                s_crc = 0;
                s_crc_sent = 0;
                s_tx_cnt = 0;
            }
        }
        volatile struct virtq_desc *d = &evq.desc[id];
        d->addr = (uintptr_t)evbuf[id];
        d->len = sizeof(evbuf[id]);
        d->flags = VIRTQ_DESC_F_WRITE;
        vq_add(&evq, (uint16_t)id);
        any = 1;
    }
    if (any)
        vq_kick(&dev, &evq, 2);
}

static void init_device(void)
{
    if (vmmio_negotiate(&dev, 1ull << VIRTIO_F_VERSION_1) < 0 || !vmmio_has(&dev, VIRTIO_F_VERSION_1))
        die(4, "vsock: FEATURES_OK did not latch");
    if (!(rxn = vmmio_queue_setup_mem(&dev, &rxq, 0, VS_RX, &rxm)) ||
        !(txn = vmmio_queue_setup_mem(&dev, &txq, 1, VS_TX, &txm)) ||
        !(evn = vmmio_queue_setup_mem(&dev, &evq, 2, VS_EV, &evm)))
        die(5, "vsock: a queue is unavailable");
    if (evn > VS_EV)
        evn = VS_EV;
    cid = vmmio_config64(&dev, 0);
    vmmio_driver_ok(&dev);
    if (vmmio_rd(&dev, VMMIO_STATUS) & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED))
        die(5, "vsock: device refused DRIVER_OK");
    for (unsigned i = 0; i < rxn; i++)
        rx_post(i);
    vq_kick(&dev, &rxq, 0);
    for (unsigned i = 0; i < evn; i++) {
        volatile struct virtq_desc *d = &evq.desc[i];
        d->addr = (uintptr_t)evbuf[i];
        d->len = sizeof(evbuf[i]);
        d->flags = VIRTQ_DESC_F_WRITE;
        d->next = 0;
        vq_add(&evq, (uint16_t)i);
    }
    vq_kick(&dev, &evq, 2);
    vq_slots_init(&txs, &txq, txn, "vsock");
}

static uint64_t vsock_main(void *arg)    /* ring 3 */
{
    (void)arg;
    if (!vmmio_find(&dev, VIRTIO_ID_VSOCK))
        die(2, "vsock: no virtio-vsock device");
    if (dev.version != 2)
        die(2, "vsock: legacy device unsupported");
    listen_port = (uint32_t)cmdline_u64("vsock.listen", 1234);
    s_port = (uint32_t)cmdline_u64("vsock.connect", 5678);
    s_total = cmdline_u64("vsock.bytes", 16ull << 20);
    s_max_tries = cmdline_u64("vsock.tries", 100);
    delay = cmdline_u64("vsock.delay", 0);
    int exit_when_done = (int)cmdline_u64("vsock.exit", 0);
    init_device();
    printf("vsock: cid %lu device at 0x%lx\n", cid, (uint64_t)dev.base);
    printf("vsock: listening on %u\n", listen_port);
    for (unsigned idle = 1;; idle++) {
        uint32_t id, len;
        int got = 0;
        while (vq_get(&rxq, &id, &len)) {
            if (id >= rxn)
                die(7, "vsock: bogus rx used id");
            const struct hdr *h = (const struct hdr *)rxbuf[id];
            if (len < HDR || h->len > len - HDR) {
                printf("vsock: malformed rx packet: used len %u, hdr len %u\n", len, h->len);
                guest_exit(8);
            }
            packet(h, rxbuf[id] + HDR);
            rx_post(id);
            got = 1;
        }
        if (got) {
            vq_kick(&dev, &rxq, 0);
            idle = 1;
        }
        events();
        tx_reclaim();
        for (unsigned i = 0; i < VS_CONNS; i++)
            if (conns[i].used && conns[i].fill)
                conn_pump(&conns[i]);
        stream_pump();
        tx_flush();
        if (exit_when_done && (s_state == 3 || s_state == 4 || !s_port) && live_conns() == 0) {
            spin(RETRY_CYCLES);     /* let the last packets go out */
            tx_reclaim();
            return s_state == 4 ? 1 : 0;
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
    return (int)run_user(vsock_main, 0, 0);
}
