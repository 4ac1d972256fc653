/*
 * MP table CPU list (Intel MP spec 1.4): "_MP_" floating pointer in the EBDA's
 * first KiB (BDA 0x40E), the last KiB of base memory (BDA 0x413; 0x9FC00 is
 * always tried) or 0xF0000-0xFFFFF -> "PCMP" configuration table -> enabled
 * processor entries (type 0, flags bit 0).  Both checksums are checked.
 */
#include "smp.h"

typedef uint16_t u16u __attribute__((aligned(1), may_alias));
typedef uint32_t u32u __attribute__((aligned(1), may_alias));
#define RD16(p) (*(const u16u *)(p))
#define RD32(p) (*(const u32u *)(p))

#define MP_SIG   0x5f504d5fu        /* "_MP_" */
#define PCMP_HDR 44


static int mpfp_scan(struct table_ctx *c, uintptr_t start, uintptr_t end, const uint8_t **found, int *bad)
{
    for (uintptr_t a = start; a + 16 <= end; a += 16) {
        const uint8_t *p = (const uint8_t *)a;
        if (RD32(p) != MP_SIG)
            continue;
        if (p[8] >= 1 && p[8] <= 4 && table_sum_ok(c, p, 16u * p[8], "mpfp")) {   /* length in 16-byte units */
            *found = p;
            return 1;
        }
        if (!*bad)
            table_fail(c, TABLE_BAD, "MP floating pointer checksum", a);
        *bad = 1;
    }
    return 0;
}

int mp_find_cpus(struct cpu_list *out, char *err, size_t errlen, const char *corrupt, size_t corrupt_len)
{
    struct table_ctx c = { err, errlen, corrupt, corrupt_len };
    const uint8_t *fp = 0;
    int bad = 0;
    out->n = 0;

    uintptr_t ebda = (uintptr_t)low_read16(0x40e) << 4;
    uintptr_t base_end = (uintptr_t)low_read16(0x413) * 1024;
    if (!((ebda >= 0x80000 && ebda < 0xa0000 && mpfp_scan(&c, ebda, ebda + 1024, &fp, &bad)) ||
          (base_end >= 0x80000 && base_end < 0xa0000 &&
           mpfp_scan(&c, base_end - 1024, base_end, &fp, &bad)) ||
          mpfp_scan(&c, 0x9fc00, 0xa0000, &fp, &bad) ||
          mpfp_scan(&c, 0xf0000, 0x100000, &fp, &bad))) {
        if (bad)
            return TABLE_BAD;
        snprintf(err, errlen, "no MP floating pointer (EBDA, 0x9FC00 and 0xF0000-0xFFFFF scanned)");
        return TABLE_NONE;
    }
    uintptr_t fpa = (uintptr_t)fp;
    if (fp[11] != 0) {
        snprintf(err, errlen, "MP default configuration %u (no table) at 0x%lx", fp[11], fpa);
        return TABLE_NONE;
    }
    uint32_t ta = RD32(fp + 4);
    if (ta == 0)
        return table_fail(&c, TABLE_BAD, "MP floating pointer: no table address", fpa);
    const uint8_t *t = (const uint8_t *)(uintptr_t)ta;
    if (memcmp(t, "PCMP", 4) != 0)
        return table_fail(&c, TABLE_BAD, "PCMP signature", ta);
    uint16_t len = RD16(t + 4);
    if (len < PCMP_HDR)
        return table_fail(&c, TABLE_BAD, "PCMP length", ta);
    if (!table_sum_ok(&c, t, len, "pcmp"))
        return table_fail(&c, TABLE_BAD, "PCMP checksum", ta);
    /* Walk the entries by the base table length, as Linux does: the entry
     * count (offset 34) is not relied on (qboot, QEMU microvm's firmware,
     * leaves it 0). */
    for (uint32_t off = PCMP_HDR; off < len;) {
        const uint8_t *e = t + off;
        unsigned esz = e[0] == 0 ? 20 : (e[0] <= 4 ? 8 : 0);
        if (esz == 0)
            return table_fail(&c, TABLE_BAD, "PCMP entry type", ta + off);
        if (off + esz > len)
            return table_fail(&c, TABLE_BAD, "PCMP entry past the table", ta + off);
        if (e[0] == 0 && (e[3] & 1)) {      /* processor, enabled */
            if (out->n < SMP_MAX_CPUS)
                out->apic_id[out->n] = e[1];
            out->n++;
        }
        off += esz;
    }
    return TABLE_OK;
}
