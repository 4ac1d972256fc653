/*
 * bootinfo: prints what the PVH loader handed over and checks it against
 * expectations on the command line (see README.md).
 */
#include "lib/lib.h"

#define MAX_E820 128

static unsigned mismatches;

#define MISMATCH(...) do { printf("mismatch: " __VA_ARGS__); mismatches++; } while (0)

struct crc_job {
    const void *buf;
    uint64_t size;
};

static uint64_t crc_user(void *arg)     /* ring 3 */
{
    struct crc_job *j = arg;
    return crc32_update(0, j->buf, j->size);
}

/* expect.e820=<addr>:<size>:<type>,... (hex addr/size, decimal type) */
static void check_e820(const char *s, size_t n, const struct hvm_memmap_table_entry *map,
                       unsigned count)
{
    unsigned idx = 0;
    size_t i = 0;
    while (i < n) {
        uint64_t a, sz, t;
        size_t k;
        if (!(k = parse_u64(s + i, n - i, 16, &a)) || (i += k) >= n || s[i++] != ':' ||
            !(k = parse_u64(s + i, n - i, 16, &sz)) || (i += k) >= n || s[i++] != ':' ||
            !(k = parse_u64(s + i, n - i, 10, &t)) || ((i += k) < n && s[i] != ',')) {
            MISMATCH("expect.e820 unparsable at offset %lu\n", (uint64_t)i);
            return;
        }
        i++;    /* ',' */
        if (idx < count) {
            const struct hvm_memmap_table_entry *e = &map[idx];
            if (e->addr != a || e->size != sz || e->type != t)
                MISMATCH("e820[%u] got=0x%lx:0x%lx:%u want=0x%lx:0x%lx:%lu\n", idx, e->addr,
                         e->size, e->type, a, sz, t);
        }
        idx++;
    }
    if (idx != count)
        MISMATCH("e820 count got=%u want=%u\n", count, idx);
}

int guest_main(struct hvm_start_info *si)
{
    size_t n;
    const char *v;

    printf("cmdline: %s\n", cmdline());

    unsigned count = 0;
    const struct hvm_memmap_table_entry *map = 0;
    if (si->version >= 1 && si->memmap_paddr) {
        map = (const void *)(uintptr_t)si->memmap_paddr;
        count = si->memmap_entries > MAX_E820 ? MAX_E820 : si->memmap_entries;
    }
    for (unsigned i = 0; i < count; i++)
        printf("e820: 0x%lx 0x%lx %u\n", map[i].addr, map[i].size, map[i].type);

    int have_initrd = si->nr_modules > 0 && si->modlist_paddr;
    uint64_t isize = 0;
    uint32_t icrc = 0;
    if (have_initrd) {
        const struct hvm_modlist_entry *m = (const void *)(uintptr_t)si->modlist_paddr;
        isize = m->size;
        if (m->paddr + m->size > 0x100000000ull || m->paddr + m->size < m->paddr) {
            MISMATCH("initrd at 0x%lx size 0x%lx is not below 4 GiB\n", m->paddr, m->size);
        } else {
            struct crc_job j = { (const void *)(uintptr_t)m->paddr, m->size };
            icrc = (uint32_t)run_user(crc_user, &j, 0);
        }
        printf("initrd: %lu crc32=%08x\n", isize, icrc);
    }

    if ((v = cmdline_get("expect.magic", &n))) {
        if (si->magic != HVM_START_MAGIC)
            MISMATCH("magic got=0x%x want=0x%x\n", si->magic, HVM_START_MAGIC);
        if (si->version < 1)
            MISMATCH("version got=%u want>=1\n", si->version);
    }

    if ((v = cmdline_get("expect.e820", &n)))
        check_e820(v, n, map, count);

    if ((v = cmdline_get("expect.initrd", &n))) {
        if (n == 4 && memcmp(v, "none", 4) == 0) {
            if (have_initrd)
                MISMATCH("initrd got=%lu:%08x want=none\n", isize, icrc);
        } else {
            uint64_t wsize, wcrc;
            size_t k = parse_u64(v, n, 10, &wsize);
            if (!k || k >= n || v[k] != ':' || parse_u64(v + k + 1, n - k - 1, 16, &wcrc) != n - k - 1)
                MISMATCH("expect.initrd unparsable\n");
            else if (!have_initrd)
                MISMATCH("initrd got=none want=%lu:%08x\n", wsize, (uint32_t)wcrc);
            else if (isize != wsize || icrc != wcrc)
                MISMATCH("initrd got=%lu:%08x want=%lu:%08x\n", isize, icrc, wsize, (uint32_t)wcrc);
        }
    }

    if (mismatches) {
        printf("bootinfo FAILED %u\n", mismatches);
        return 1;
    }
    puts("bootinfo ok");
    return 0;
}
