/*
 * bootinfo: prints what the loader handed over and checks it against
 * expectations on the command line (see README.md).  One source, three
 * images: bootinfo.elf (PVH), bootinfo64.elf (ELF64, 64-bit boot protocol)
 * and bootinfo.bzimage (32- or 64-bit bzImage entry).  lib/boot.c turns
 * start_info / boot_params into the struct boot_info checked here; only
 * the `loader:` line and expect.magic look at the raw structures.
 */
#include "lib/lib.h"

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
static void check_e820(const char *s, size_t n, const struct boot_e820 *map, unsigned count)
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
            const struct boot_e820 *e = &map[idx];
            if (e->addr != a || e->size != sz || e->type != t)
                MISMATCH("e820[%u] got=0x%lx:0x%lx:%u want=0x%lx:0x%lx:%lu\n", idx, e->addr,
                         e->size, e->type, a, sz, t);
        }
        idx++;
    }
    if (idx != count)
        MISMATCH("e820 count got=%u want=%u\n", count, idx);
}

/* expect.magic: the protocol's own identification of its boot structure. */
static void check_magic(const struct boot_info *bi)
{
    if (bi->protocol == BOOT_PVH) {
        uint32_t magic = bi->pvh ? bi->pvh->magic : 0, version = bi->pvh ? bi->pvh->version : 0;
        if (magic != HVM_START_MAGIC)
            MISMATCH("magic got=0x%x want=0x%x\n", magic, HVM_START_MAGIC);
        if (version < 1)
            MISMATCH("version got=%u want>=1\n", version);
        return;
    }
    const uint8_t *bp = bi->zero_page;
    uint16_t flag = bp ? bp_u16(bp, HDR_BOOT_FLAG) : 0;
    uint32_t magic = bp ? bp_u32(bp, HDR_HEADER) : 0;
    if (flag != BOOT_FLAG_MAGIC)
        MISMATCH("boot_flag got=0x%x want=0x%x\n", flag, BOOT_FLAG_MAGIC);
    if (magic != HDRS_MAGIC)
        MISMATCH("magic got=0x%x want=0x%x\n", magic, HDRS_MAGIC);
    if (bi->protocol != BOOT_ELF64) {   /* a bzImage's header comes from the file */
        uint16_t version = bp ? bp_u16(bp, HDR_VERSION) : 0;
        if (version != 0x020f)
            MISMATCH("version got=0x%x want=0x20f\n", version);
    }
}

int guest_main(const struct boot_info *bi)
{
    size_t n;
    const char *v;
    int linux_boot = bi->protocol != BOOT_PVH;
    unsigned loader = 0;

    if (linux_boot) {
        printf("bootinfo: protocol %s\n", bi->protocol_name);
        loader = bi->zero_page ? bp_u8(bi->zero_page, HDR_TYPE_OF_LOADER) : 0;
        printf("loader: 0x%x\n", loader);
    }
    printf("cmdline: %s\n", cmdline());
    for (unsigned i = 0; i < bi->e820_count; i++)
        printf("e820: 0x%lx 0x%lx %u\n", bi->e820[i].addr, bi->e820[i].size, bi->e820[i].type);

    uint64_t isize = bi->initrd_size, iaddr = bi->initrd_addr;
    uint32_t icrc = 0;
    if (bi->have_initrd) {
        if (iaddr + isize > 0x100000000ull || iaddr + isize < iaddr) {
            MISMATCH("initrd at 0x%lx size 0x%lx is not below 4 GiB\n", iaddr, isize);
        } else {
            struct crc_job j = { (const void *)(uintptr_t)iaddr, isize };
            icrc = (uint32_t)run_user(crc_user, &j, 0);
        }
        printf("initrd: %lu crc32=%08x\n", isize, icrc);
    }

    if (linux_boot && loader == 0)
        MISMATCH("type_of_loader got=0x0 want!=0\n");

    if ((v = cmdline_get("expect.magic", &n)))
        check_magic(bi);

    if ((v = cmdline_get("expect.e820", &n)))
        check_e820(v, n, bi->e820, bi->e820_count);

    if ((v = cmdline_get("expect.initrd", &n))) {
        if (n == 4 && memcmp(v, "none", 4) == 0) {
            if (bi->have_initrd)
                MISMATCH("initrd got=%lu:%08x want=none\n", isize, icrc);
        } else {
            uint64_t wsize, wcrc;
            size_t k = parse_u64(v, n, 10, &wsize);
            if (!k || k >= n || v[k] != ':' || parse_u64(v + k + 1, n - k - 1, 16, &wcrc) != n - k - 1)
                MISMATCH("expect.initrd unparsable\n");
            else if (!bi->have_initrd)
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
