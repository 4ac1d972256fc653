/*
 * smp: lists the CPUs from the ACPI MADT (default) or the MP table (`mp`),
 * starts every other listed CPU with INIT-SIPI-SIPI and counts who checks in.
 *
 *   smp: <acpi|mp> cpus in table: <N>
 *   ap <apic id> online                  one per AP, any order
 *   cpus: <1 + APs that checked in>
 *
 * Exit 0 if that count equals the table's, 1 if not, 2 if no table was
 * found (`no table: ...`), 3 on a checksum/structure error (`bad table: ...`).
 * Options: `mp`; `timeout=MS` (AP check-in wait, default 5000); `spam=N`: after
 * check-in every CPU writes its letter ('a' + APIC id) N times to the UART with
 * no guest-side lock, then the BSP prints `spam done` (a console stress test).
 * Test hooks: `scan` ignores the loader's RSDP pointer (exercises the memory
 * scan); `corrupt=rsdp|xsdt|rsdt|madt|mpfp|pcmp` treats that table's checksum
 * as bad; `fake=ID` also sends INIT-SIPI-SIPI to APIC id ID, which no CPU
 * answers (exercises the timeout: `cpus:` is one short, exit 1).
 */
#include "lib/lib.h"
#include "lib/smp.h"

static struct cpu_list cpus;

/* ACPI RSDP hint: hvm_start_info.rsdp_paddr (PVH) or boot_params.acpi_rsdp_addr (0x070). */
static uint64_t rsdp_hint(const struct boot_info *bi)
{
    if (bi->pvh)
        return bi->pvh->rsdp_paddr;
    if (bi->zero_page)
        return bp_u64(bi->zero_page, 0x070);
    return 0;
}

int guest_main(const struct boot_info *bi)
{
    size_t n, clen = 0;
    char err[128];
    int mp = cmdline_get("mp", &n) != 0;
    const char *corrupt = cmdline_get("corrupt", &clen);
    uint64_t rsdp = cmdline_get("scan", &n) ? 0 : rsdp_hint(bi);
    unsigned timeout_ms = (unsigned)cmdline_u64("timeout", 5000);

    int r = mp ? mp_find_cpus(&cpus, err, sizeof err, corrupt, clen)
               : acpi_find_cpus(rsdp, &cpus, err, sizeof err, corrupt, clen);
    if (r == TABLE_BAD) {
        printf("bad table: %s\n", err);
        return 3;
    }
    if (r == TABLE_NONE) {
        printf("no table: %s\n", err);
        return 2;
    }
    printf("smp: %s cpus in table: %u\n", mp ? "mp" : "acpi", cpus.n);
    uint64_t fake = cmdline_u64("fake", ~0ull);
    if (fake < SMP_MAX_APIC_ID && cpus.n < SMP_MAX_CPUS)
        cpus.apic_id[cpus.n++] = (uint32_t)fake;

    smp_spam_n = (unsigned)cmdline_u64("spam", 0);
    unsigned up = 1 + smp_boot_aps(&cpus, timeout_ms);
    if (smp_spam_n) {
        __atomic_store_n(&smp_spam_go, 1, __ATOMIC_SEQ_CST);
        smp_spam(lapic_id());
        while (__atomic_load_n(&smp_spam_done, __ATOMIC_SEQ_CST) < up - 1)
            __asm__ volatile("pause");
        printf("\nspam done\n");
    }
    smp_lock();
    printf("cpus: %u\n", up);
    smp_unlock();
    return up == cpus.n ? 0 : 1;
}
