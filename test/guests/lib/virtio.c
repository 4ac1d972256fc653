/* virtio-mmio transport and split virtqueue (see virtio.h). */
#include "virtio.h"

/* Ring memory for vmmio_queue_setup(). */
static struct virtq_mem ring;

int vmmio_probe(struct vmmio *d, uintptr_t base)
{
    d->base = base;
    if (mmio_read32(base + VMMIO_MAGIC) != VIRTIO_MMIO_MAGIC)
        return 0;
    d->version = mmio_read32(base + VMMIO_VERSION);
    d->device_id = mmio_read32(base + VMMIO_DEVICE_ID);
    d->vendor_id = mmio_read32(base + VMMIO_VENDOR_ID);
    return 1;
}

/* `<size>@<base>:<irq>[:<id>]`, size with an optional K/M/G suffix (Linux memparse). */
static int parse_device(const char *s, size_t n, uint64_t *size, uint64_t *base, uint64_t *irq)
{
    size_t i, k;
    if (!(k = parse_u64(s, n, 10, size)))
        return 0;
    i = k;
    if (i < n && (s[i] == 'K' || s[i] == 'k'))
        *size <<= 10, i++;
    else if (i < n && (s[i] == 'M' || s[i] == 'm'))
        *size <<= 20, i++;
    else if (i < n && (s[i] == 'G' || s[i] == 'g'))
        *size <<= 30, i++;
    if (i >= n || s[i++] != '@' || !(k = parse_u64(s + i, n - i, 10, base)))
        return 0;
    i += k;
    if (i >= n || s[i++] != ':' || !(k = parse_u64(s + i, n - i, 10, irq)))
        return 0;
    return 1;
}

void vmmio_iter_init(struct vmmio_iter *it)
{
    it->p = cmdline();
    it->listed = 0;
    it->slot = 0;
    it->irq_base = 0;
}

int vmmio_next(struct vmmio_iter *it, struct vmmio *d)
{
    static const char key[] = "virtio_mmio.device=";
    const size_t klen = sizeof(key) - 1;
    const char *w;
    size_t wlen;
    while ((w = cmdline_word(&it->p, &wlen))) {
        uint64_t size, base, irq;
        if (wlen <= klen || memcmp(w, key, klen) != 0)
            continue;
        it->listed = 1;
        if (!parse_device(w + klen, wlen - klen, &size, &base, &irq) || base >= 0x100000000ull)
            continue;
        if (vmmio_probe(d, (uintptr_t)base) && d->device_id != 0) {
            d->size = size;
            d->irq = (unsigned)irq;
            return 1;
        }
    }
    if (it->listed)     /* the loader told us where its devices are: do not poke elsewhere */
        return 0;
    /* QEMU microvm: 8 transports on GSI 5 + n, or, with its second IOAPIC
     * (the default when ACPI is on), 24 transports on GSI 16 + n. */
    if (!it->irq_base) {
        struct vmmio t;
        it->irq_base = vmmio_probe(&t, 0xfeb00000u + 0x200u * 8) ? 16 : 5;
    }
    while (it->slot < 32) {
        unsigned n = it->slot++;
        if (vmmio_probe(d, 0xfeb00000u + 0x200u * n) && d->device_id != 0) {
            d->size = 0x200;
            d->irq = it->irq_base + n;
            return 2;
        }
    }
    return 0;
}

int vmmio_find(struct vmmio *d, uint32_t device_id)
{
    struct vmmio_iter it;
    int how;
    vmmio_iter_init(&it);
    while ((how = vmmio_next(&it, d)))
        if (d->device_id == device_id)
            return how;
    return 0;
}

void vmmio_reset(struct vmmio *d)
{
    vmmio_wr(d, VMMIO_STATUS, 0);
    while (vmmio_rd(d, VMMIO_STATUS) != 0)
        __asm__ volatile("pause");
}

int vmmio_negotiate(struct vmmio *d, uint64_t wanted)
{
    vmmio_reset(d);
    vmmio_wr(d, VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE);
    vmmio_wr(d, VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);
    vmmio_wr(d, VMMIO_DEVICE_FEATURES_SEL, 0);
    uint64_t f = vmmio_rd(d, VMMIO_DEVICE_FEATURES);
    vmmio_wr(d, VMMIO_DEVICE_FEATURES_SEL, 1);
    f |= (uint64_t)vmmio_rd(d, VMMIO_DEVICE_FEATURES) << 32;
    d->device_features = f;
    d->features = f & (wanted | 1ull << VIRTIO_F_VERSION_1);
    vmmio_wr(d, VMMIO_DRIVER_FEATURES_SEL, 0);
    vmmio_wr(d, VMMIO_DRIVER_FEATURES, (uint32_t)d->features);
    vmmio_wr(d, VMMIO_DRIVER_FEATURES_SEL, 1);
    vmmio_wr(d, VMMIO_DRIVER_FEATURES, (uint32_t)(d->features >> 32));
    vmmio_wr(d, VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
    if (!(vmmio_rd(d, VMMIO_STATUS) & VIRTIO_S_FEATURES_OK)) {
        vmmio_wr(d, VMMIO_STATUS, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FAILED);
        return -1;
    }
    return 0;
}

unsigned vmmio_queue_setup_mem(struct vmmio *d, struct virtq *q, unsigned idx, unsigned max,
                               struct virtq_mem *mem)
{
    vmmio_wr(d, VMMIO_QUEUE_SEL, idx);
    if (vmmio_rd(d, VMMIO_QUEUE_READY) != 0)
        return 0;
    unsigned n = vmmio_rd(d, VMMIO_QUEUE_NUM_MAX);
    if (n == 0)
        return 0;
    if (n > max)
        n = max;
    if (n > VIRTQ_MAX)
        n = VIRTQ_MAX;
    memset(mem, 0, sizeof(*mem));
    q->desc = mem->desc;
    q->avail = mem->avail;
    q->used = mem->used;
    q->used_ring = (volatile struct virtq_used_elem *)(mem->used + 2);
    q->size = (uint16_t)n;
    q->avail_idx = 0;
    q->last_used = 0;
    uint64_t desc = (uintptr_t)mem->desc, drv = (uintptr_t)mem->avail, dev = (uintptr_t)mem->used;
    vmmio_wr(d, VMMIO_QUEUE_NUM, n);
    vmmio_wr(d, VMMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    vmmio_wr(d, VMMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    vmmio_wr(d, VMMIO_QUEUE_DRIVER_LOW, (uint32_t)drv);
    vmmio_wr(d, VMMIO_QUEUE_DRIVER_HIGH, (uint32_t)(drv >> 32));
    vmmio_wr(d, VMMIO_QUEUE_DEVICE_LOW, (uint32_t)dev);
    vmmio_wr(d, VMMIO_QUEUE_DEVICE_HIGH, (uint32_t)(dev >> 32));
    vmmio_wr(d, VMMIO_QUEUE_READY, 1);
    return n;
}

unsigned vmmio_queue_setup(struct vmmio *d, struct virtq *q, unsigned idx, unsigned max)
{
    return vmmio_queue_setup_mem(d, q, idx, max, &ring);
}

uint32_t vmmio_config32(struct vmmio *d, unsigned off)
{
    uint32_t g, v;
    do {
        g = vmmio_rd(d, VMMIO_CONFIG_GENERATION);
        v = vmmio_rd(d, VMMIO_CONFIG + off);
    } while (g != vmmio_rd(d, VMMIO_CONFIG_GENERATION));
    return v;
}

uint64_t vmmio_config64(struct vmmio *d, unsigned off)
{
    uint32_t g, lo, hi;
    do {
        g = vmmio_rd(d, VMMIO_CONFIG_GENERATION);
        lo = vmmio_rd(d, VMMIO_CONFIG + off);
        hi = vmmio_rd(d, VMMIO_CONFIG + off + 4);
    } while (g != vmmio_rd(d, VMMIO_CONFIG_GENERATION));
    return lo | (uint64_t)hi << 32;
}

void vq_slots_init(struct vq_slots *p, struct virtq *q, unsigned n, const char *who)
{
    p->q = q;
    p->n = n < VIRTQ_MAX ? n : VIRTQ_MAX;
    p->free = p->n;
    p->who = who;
    memset(p->busy, 0, sizeof(p->busy));
}

void vq_slots_reclaim(struct vq_slots *p)
{
    uint32_t id, len;
    while (vq_get(p->q, &id, &len)) {
        if (id >= p->n || !p->busy[id]) {
            printf("%s: bogus tx used id %u\n", p->who, id);
            guest_exit(7);
        }
        p->busy[id] = 0;
        p->free++;
    }
}

unsigned vq_slots_get(struct vq_slots *p, void (*idle)(unsigned spin))
{
    for (unsigned spin = 1; p->free == 0; spin++) {
        vq_slots_reclaim(p);
        if (idle)
            idle(spin);
        __asm__ volatile("pause");
    }
    for (unsigned i = 0; i < p->n; i++)
        if (!p->busy[i])
            return i;
    printf("%s: tx accounting\n", p->who);
    guest_exit(7);
}

void vq_slots_add(struct vq_slots *p, unsigned s, uint64_t addr, uint32_t len)
{
    volatile struct virtq_desc *d = &p->q->desc[s];
    d->addr = addr;
    d->len = len;
    d->flags = 0;
    d->next = 0;
    p->busy[s] = 1;
    p->free--;
    vq_add(p->q, (uint16_t)s);
}

void vmmio_check_status(const struct vmmio *d, int code, const char *msg)
{
    if (vmmio_rd(d, VMMIO_STATUS) & VIRTIO_S_NEEDS_RESET)
        die(code, msg);
}
