/*
 * virtio-mmio (version 2) transport and one split virtqueue, polled
 * (virtio 1.2 §2.7, §4.2).  No interrupts: the driver polls the used ring
 * and acknowledges InterruptStatus itself.  All of it runs in ring 3 (the
 * identity map is user-accessible, MMIO window included).
 */
#ifndef GUEST_VIRTIO_H
#define GUEST_VIRTIO_H

#include "lib.h"

#define VIRTIO_MMIO_MAGIC 0x74726976u   /* "virt" */

/* virtio-mmio registers (§4.2.2) */
#define VMMIO_MAGIC             0x000
#define VMMIO_VERSION           0x004
#define VMMIO_DEVICE_ID         0x008
#define VMMIO_VENDOR_ID         0x00c
#define VMMIO_DEVICE_FEATURES   0x010
#define VMMIO_DEVICE_FEATURES_SEL 0x014
#define VMMIO_DRIVER_FEATURES   0x020
#define VMMIO_DRIVER_FEATURES_SEL 0x024
#define VMMIO_QUEUE_SEL         0x030
#define VMMIO_QUEUE_NUM_MAX     0x034
#define VMMIO_QUEUE_NUM         0x038
#define VMMIO_QUEUE_READY       0x044
#define VMMIO_QUEUE_NOTIFY      0x050
#define VMMIO_INTERRUPT_STATUS  0x060
#define VMMIO_INTERRUPT_ACK     0x064
#define VMMIO_STATUS            0x070
#define VMMIO_QUEUE_DESC_LOW    0x080
#define VMMIO_QUEUE_DESC_HIGH   0x084
#define VMMIO_QUEUE_DRIVER_LOW  0x090
#define VMMIO_QUEUE_DRIVER_HIGH 0x094
#define VMMIO_QUEUE_DEVICE_LOW  0x0a0
#define VMMIO_QUEUE_DEVICE_HIGH 0x0a4
#define VMMIO_CONFIG_GENERATION 0x0fc
#define VMMIO_CONFIG            0x100

/* device status (§2.1) */
#define VIRTIO_S_ACKNOWLEDGE    1
#define VIRTIO_S_DRIVER         2
#define VIRTIO_S_DRIVER_OK      4
#define VIRTIO_S_FEATURES_OK    8
#define VIRTIO_S_NEEDS_RESET    64
#define VIRTIO_S_FAILED         128

/* transport feature bits (§6) */
#define VIRTIO_F_INDIRECT_DESC  28
#define VIRTIO_F_EVENT_IDX      29
#define VIRTIO_F_VERSION_1      32

/* split virtqueue (§2.7) */
struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
#define VIRTQ_DESC_F_NEXT       1
#define VIRTQ_DESC_F_WRITE      2   /* device writes this buffer */
#define VIRTQ_DESC_F_INDIRECT   4

struct virtq_used_elem {
    uint32_t id;
    uint32_t len;
};
#define VIRTQ_USED_F_NO_NOTIFY  1

#define VIRTQ_MAX 128   /* queue size used: min(QueueNumMax, VIRTQ_MAX) */

struct virtq {
    volatile struct virtq_desc *desc;
    volatile uint16_t *avail;               /* flags, idx, ring[size], used_event */
    volatile uint16_t *used;                /* flags, idx, then elems */
    volatile struct virtq_used_elem *used_ring;
    uint16_t size;
    uint16_t avail_idx;                     /* next avail->idx to publish */
    uint16_t last_used;                     /* next used entry to consume */
};

/* Ring memory for one queue: descriptor table, driver area, device area. */
struct virtq_mem {
    struct virtq_desc desc[VIRTQ_MAX];                          /* 16 * 128 */
    uint16_t avail[2 + VIRTQ_MAX + 1] __attribute__((aligned(4096)));
    uint16_t used[2 + 4 * VIRTQ_MAX + 1] __attribute__((aligned(4096)));
} __attribute__((aligned(4096)));

struct vmmio {
    uintptr_t base;
    uint64_t size;
    unsigned irq;
    uint32_t version, device_id, vendor_id;
    uint64_t device_features, features;     /* offered, accepted */
};

static inline uint32_t vmmio_rd(const struct vmmio *d, unsigned r) { return mmio_read32(d->base + r); }
static inline void vmmio_wr(const struct vmmio *d, unsigned r, uint32_t v) { mmio_write32(d->base + r, v); }
static inline int vmmio_has(const struct vmmio *d, unsigned bit) { return (d->features >> bit) & 1; }

/* If the device has set DEVICE_NEEDS_RESET in its status: die(code, msg). */
void vmmio_check_status(const struct vmmio *d, int code, const char *msg);

/* Reads magic/version/ids at base; returns 1 if the magic matches. */
int vmmio_probe(struct vmmio *d, uintptr_t base);

/*
 * Walks every transport that holds a device, in order: first the command
 * line's `virtio_mmio.device=<size>@<base>:<irq>` words; only if there is no
 * such word, QEMU microvm's window (0xfeb00000 + 0x200*n, n < 32).  Windows
 * without the magic, above 4 GiB, or with DeviceID 0 (an empty transport)
 * are skipped.  Start with vmmio_iter_init(); vmmio_next() returns 1 (from
 * the command line), 2 (probed) or 0 (no more).
 */
struct vmmio_iter {
    const char *p;          /* next command-line word */
    int listed;             /* the command line named at least one transport */
    unsigned slot;          /* next probe slot */
    unsigned irq_base;      /* probed GSIs: 5 + n or 16 + n (0: not known yet) */
};
void vmmio_iter_init(struct vmmio_iter *it);
int vmmio_next(struct vmmio_iter *it, struct vmmio *d);

/* The first transport (in vmmio_next order) with device_id; 1, 2 as vmmio_next, or 0. */
int vmmio_find(struct vmmio *d, uint32_t device_id);

/* Writes 0 to Status and waits for it to read back 0. */
void vmmio_reset(struct vmmio *d);

/*
 * Reset, ACKNOWLEDGE, DRIVER, features &= wanted (VERSION_1 always), FEATURES_OK
 * and check that it latched.  Returns 0, or -1 (sets FAILED) if it did not.
 */
int vmmio_negotiate(struct vmmio *d, uint64_t wanted);

/*
 * Sets up queue idx with size min(QueueNumMax, max, VIRTQ_MAX) in mem (zeroed
 * here) and sets QueueReady; returns the size, 0 if the queue does not exist
 * (QueueNumMax 0) or is already ready.
 */
unsigned vmmio_queue_setup_mem(struct vmmio *d, struct virtq *q, unsigned idx, unsigned max,
                               struct virtq_mem *mem);

/* The same in lib/virtio.c's one static ring (one queue per program). */
unsigned vmmio_queue_setup(struct vmmio *d, struct virtq *q, unsigned idx, unsigned max);

static inline void vmmio_driver_ok(struct vmmio *d)
{
    vmmio_wr(d, VMMIO_STATUS, vmmio_rd(d, VMMIO_STATUS) | VIRTIO_S_DRIVER_OK);
}

/* Reads InterruptStatus and acknowledges whatever is set; returns it. */
static inline uint32_t vmmio_ack(struct vmmio *d)
{
    uint32_t s = vmmio_rd(d, VMMIO_INTERRUPT_STATUS);
    if (s)
        vmmio_wr(d, VMMIO_INTERRUPT_ACK, s);
    return s;
}

/* Device config space, read under ConfigGeneration (64-bit fields as 2 x 32). */
uint32_t vmmio_config32(struct vmmio *d, unsigned off);
uint64_t vmmio_config64(struct vmmio *d, unsigned off);

/* ---- split virtqueue ---- */
#define barrier() __asm__ volatile("" ::: "memory")
/* x86 is TSO: only store->load needs a real fence (used before reading used->flags). */
#define mb() __asm__ volatile("lock; addl $0, -8(%%rsp)" ::: "memory", "cc")

/* Puts chain head on the avail ring (not yet visible to the device). */
static inline void vq_add(struct virtq *q, uint16_t head)
{
    q->avail[2 + (q->avail_idx % q->size)] = head;
    q->avail_idx++;
}

/* Publishes added heads, then notifies unless the device asked not to. */
static inline void vq_kick(struct vmmio *d, struct virtq *q, unsigned idx)
{
    barrier();
    q->avail[1] = q->avail_idx;
    mb();
    if (!(q->used[0] & VIRTQ_USED_F_NO_NOTIFY))
        vmmio_wr(d, VMMIO_QUEUE_NOTIFY, idx);
}

/* Takes one used element; returns 1 if there was one. */
static inline int vq_get(struct virtq *q, uint32_t *id, uint32_t *len)
{
    if (q->used[1] == q->last_used)
        return 0;
    barrier();
    volatile struct virtq_used_elem *e = &q->used_ring[q->last_used % q->size];
    *id = e->id;
    *len = e->len;
    q->last_used++;
    return 1;
}

/*
 * A pool of one-descriptor slots on a queue (slot i = descriptor i), for drivers that send buffers
 * and take them back in any order (vsock.c and net.c transmit queues).  `who` prefixes the one line
 * printed before exit 7 when the device returns an id that is not out.
 */
struct vq_slots {
    struct virtq *q;
    unsigned n, free;
    const char *who;
    uint8_t busy[VIRTQ_MAX];
};
void vq_slots_init(struct vq_slots *p, struct virtq *q, unsigned n, const char *who);
/* Takes every used entry back (exits 7 on an id that is not out). */
void vq_slots_reclaim(struct vq_slots *p);
/* A free slot, reclaiming (and calling idle(), if not NULL, on every spin) until one is. */
unsigned vq_slots_get(struct vq_slots *p, void (*idle)(unsigned spin));
/* Puts slot s on the avail ring as one device-readable buffer [addr, addr+len) (not yet kicked). */
void vq_slots_add(struct vq_slots *p, unsigned s, uint64_t addr, uint32_t len);

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return lo | (uint64_t)hi << 32;
}

#endif
