/*
 * ACPI CPU list: RSDP (hvm_start_info.rsdp_paddr, else a scan of the EBDA's
 * first KiB and 0xE0000-0xFFFFF) -> XSDT (revision >= 2 and non-zero) or RSDT
 * -> "APIC" (MADT): enabled Processor Local APIC (type 0) and x2APIC (type 9)
 * entries.  Every table on the path has its checksum checked.
 */
#include "smp.h"

typedef uint16_t u16u __attribute__((aligned(1), may_alias));
typedef uint32_t u32u __attribute__((aligned(1), may_alias));
typedef uint64_t u64u __attribute__((aligned(1), may_alias));
#define RD16(p) (*(const u16u *)(p))
#define RD32(p) (*(const u32u *)(p))
#define RD64(p) (*(const u64u *)(p))

#define RSDP_SIG 0x2052545020445352ull      /* "RSD PTR " */
#define SDT_HDR  36


/* 0: valid RSDP at p; else TABLE_BAD with err set. */
static int rsdp_check(struct table_ctx *c, const uint8_t *p)
{
    if (!table_sum_ok(c, p, 20, "rsdp"))
        return table_fail(c, TABLE_BAD, "RSDP checksum", (uintptr_t)p);
    if (p[15] >= 2) {
        uint32_t len = RD32(p + 20);
        if (len < 36 || len > 4096)
            return table_fail(c, TABLE_BAD, "RSDP length", (uintptr_t)p);
        if (!table_sum_ok(c, p, len, "rsdp"))
            return table_fail(c, TABLE_BAD, "RSDP extended checksum", (uintptr_t)p);
    }
    return TABLE_OK;
}

/* Scans [start, end) on 16-byte boundaries; first valid RSDP wins.  A
 * signature with a bad checksum is reported only if no valid one is found. */
static int rsdp_scan(struct table_ctx *c, uintptr_t start, uintptr_t end, const uint8_t **found, int *bad)
{
    for (uintptr_t a = start; a + 20 <= end; a += 16) {
        if (RD64(a) != RSDP_SIG)
            continue;
        if (rsdp_check(c, (const uint8_t *)a) == TABLE_OK) {
            *found = (const uint8_t *)a;
            return 1;
        }
        *bad = 1;
    }
    return 0;
}

static int sdt_check(struct table_ctx *c, uint64_t addr, const char *sig, const char *name, const char *label)
{
    char what[32];
    if (addr == 0 || addr + SDT_HDR > 0x100000000ull) {
        snprintf(what, sizeof what, "%s address", label);
        return table_fail(c, TABLE_BAD, what, addr);
    }
    const uint8_t *p = (const uint8_t *)(uintptr_t)addr;
    uint32_t len = RD32(p + 4);
    if (memcmp(p, sig, 4) != 0) {
        snprintf(what, sizeof what, "%s signature", label);
        return table_fail(c, TABLE_BAD, what, addr);
    }
    if (len < SDT_HDR || len > 0x100000 || addr + len > 0x100000000ull) {
        snprintf(what, sizeof what, "%s length", label);
        return table_fail(c, TABLE_BAD, what, addr);
    }
    if (!table_sum_ok(c, p, len, name)) {
        snprintf(what, sizeof what, "%s checksum", label);
        return table_fail(c, TABLE_BAD, what, addr);
    }
    return TABLE_OK;
}

static void add_cpu(struct cpu_list *out, uint32_t id)
{
    if (out->n < SMP_MAX_CPUS)
        out->apic_id[out->n] = id;
    out->n++;
}

int acpi_find_cpus(uint64_t rsdp_paddr, struct cpu_list *out, char *err, size_t errlen,
                   const char *corrupt, size_t corrupt_len)
{
    struct table_ctx c = { err, errlen, corrupt, corrupt_len };
    const uint8_t *rsdp = 0;
    int r;
    out->n = 0;

    if (rsdp_paddr) {
        if (rsdp_paddr >= 0x100000000ull || RD64((uintptr_t)rsdp_paddr) != RSDP_SIG)
            return table_fail(&c, TABLE_BAD, "RSDP signature (rsdp_paddr)", rsdp_paddr);
        rsdp = (const uint8_t *)(uintptr_t)rsdp_paddr;
        if ((r = rsdp_check(&c, rsdp)) != TABLE_OK)
            return r;
    } else {
        int bad = 0;
        uintptr_t ebda = (uintptr_t)low_read16(0x40e) << 4;
        if (!((ebda >= 0x80000 && ebda < 0xa0000 && rsdp_scan(&c, ebda, ebda + 1024, &rsdp, &bad)) ||
              rsdp_scan(&c, 0x9fc00, 0xa0000, &rsdp, &bad) ||
              rsdp_scan(&c, 0xe0000, 0x100000, &rsdp, &bad))) {
            if (bad)
                return TABLE_BAD;       /* err already says which */
            snprintf(err, errlen, "no RSDP (rsdp_paddr=0, EBDA and 0xE0000-0xFFFFF scanned)");
            return TABLE_NONE;
        }
    }

    /* Root table: XSDT if revision >= 2 and present, else RSDT. */
    int x = rsdp[15] >= 2 && RD64(rsdp + 24) != 0;
    uint64_t root = x ? RD64(rsdp + 24) : RD32(rsdp + 16);
    if ((r = sdt_check(&c, root, x ? "XSDT" : "RSDT", x ? "xsdt" : "rsdt", x ? "XSDT" : "RSDT")) != TABLE_OK)
        return r;
    const uint8_t *rt = (const uint8_t *)(uintptr_t)root;
    uint32_t esz = x ? 8 : 4, n = (RD32(rt + 4) - SDT_HDR) / esz;
    uint64_t madt = 0;
    for (uint32_t i = 0; i < n && !madt; i++) {
        const uint8_t *e = rt + SDT_HDR + i * esz;
        uint64_t a = x ? RD64(e) : RD32(e);
        if (a && a + SDT_HDR <= 0x100000000ull && memcmp((const void *)(uintptr_t)a, "APIC", 4) == 0)
            madt = a;
    }
    if (!madt) {
        snprintf(err, errlen, "no MADT (\"APIC\") in the %s", x ? "XSDT" : "RSDT");
        return TABLE_NONE;
    }
    if ((r = sdt_check(&c, madt, "APIC", "madt", "MADT")) != TABLE_OK)
        return r;
    const uint8_t *m = (const uint8_t *)(uintptr_t)madt;
    uint32_t mlen = RD32(m + 4);
    if (mlen < SDT_HDR + 8)
        return table_fail(&c, TABLE_BAD, "MADT length", madt);
    for (uint32_t off = SDT_HDR + 8; off < mlen;) {
        const uint8_t *e = m + off;
        if (off + 2 > mlen || e[1] < 2 || off + e[1] > mlen)
            return table_fail(&c, TABLE_BAD, "MADT entry length", madt + off);
        if (e[0] == 0 && e[1] >= 8 && (RD32(e + 4) & 1))        /* Processor Local APIC */
            add_cpu(out, e[3]);
        else if (e[0] == 9 && e[1] >= 16 && (RD32(e + 8) & 1))  /* Processor Local x2APIC */
            add_cpu(out, RD32(e + 4));
        off += e[1];
    }
    return TABLE_OK;
}
