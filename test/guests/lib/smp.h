/* SMP support for smp.elf: CPU lists from ACPI/MP tables, AP start-up. */
#ifndef GUEST_SMP_H
#define GUEST_SMP_H

/*
 * Real-mode AP trampoline page.  SIPI vector = page number (0x03).  Free in
 * kindling's low-memory map (src/arch/x86_64/layout.ts: 0x500 GDT, 0x6000-0x7fff
 * PVH, 0x8ff0 bzImage stack, 0x9000-0xefff bzImage page tables) and under
 * QEMU microvm + qboot (which leaves 0x0, 0x1000, 0x7000 and 0x9f000 in use).
 */
#define SMP_TRAMPOLINE      0x3000
#define SMP_AP_STACK_SHIFT  12                      /* 4 KiB stack per APIC id */
#define SMP_AP_STACK_SIZE   (1 << SMP_AP_STACK_SHIFT)
#define SMP_MAX_APIC_ID     255                     /* xAPIC: 0..254, 0xff = broadcast */

#ifndef __ASSEMBLER__
#include "lib.h"

#define SMP_MAX_CPUS 256

struct cpu_list {
    unsigned n;                     /* enabled CPUs listed */
    uint32_t apic_id[SMP_MAX_CPUS];
};

/* Results of the table finders. */
#define TABLE_OK    0
#define TABLE_NONE  (-1)            /* no table found: err says what is missing */
#define TABLE_BAD   (-2)            /* checksum or structure error: err says which */

/* `corrupt`/`corrupt_len` (may be NULL/0): name of one table ("rsdp", "xsdt",
 * "rsdt", "madt", "mpfp", "pcmp") whose checksum is treated as failed, to
 * exercise the `bad table` path without writing to the tables. */
int acpi_find_cpus(uint64_t rsdp_paddr, struct cpu_list *out, char *err, size_t errlen,
                   const char *corrupt, size_t corrupt_len);
int mp_find_cpus(struct cpu_list *out, char *err, size_t errlen,
                 const char *corrupt, size_t corrupt_len);

/* Shared by acpi.c / mptable.c. */
uint8_t table_sum8(const void *p, size_t n);
int table_corrupt_is(const char *corrupt, size_t len, const char *name);
uint16_t low_read16(uintptr_t addr);            /* BIOS data area reads */

/* What a table walk reports into, and the two checks every walk uses. */
struct table_ctx {
    char *err;
    size_t errlen;
    const char *corrupt;
    size_t corrupt_len;
};

static inline int table_fail(struct table_ctx *c, int r, const char *what, uint64_t addr)
{
    snprintf(c->err, c->errlen, "%s at 0x%lx", what, addr);
    return r;
}

/* Checksum over n bytes is zero (and the table is not the one `corrupt` names). */
static inline int table_sum_ok(struct table_ctx *c, const void *p, size_t n, const char *name)
{
    return (uint8_t)(table_sum8(p, n) ^ table_corrupt_is(c->corrupt, c->corrupt_len, name)) == 0;
}

/* Copies the trampoline, sends INIT-SIPI-SIPI to every listed CPU except the
 * caller, waits (up to timeout_ms) for them to check in.  Returns how many APs
 * checked in. */
unsigned smp_boot_aps(const struct cpu_list *cpus, unsigned timeout_ms);
uint32_t lapic_id(void);

/* Console stress: set smp_spam_n before smp_boot_aps(); set smp_spam_go to start. */
extern volatile unsigned smp_spam_n, smp_spam_go, smp_spam_done;
void smp_spam(uint32_t apic_id);

/* Serial-output spinlock (xchg), shared with the APs. */
void smp_lock(void);
void smp_unlock(void);

/* AP side (lib/smp_tramp.S -> smp_ap_main). */
void smp_ap_main(uint32_t apic_id) __attribute__((noreturn));
extern char smp_tramp_start[], smp_tramp_end[], smp_tramp_gdtr[], smp_tramp_cr3[];
#endif

#endif
