/*
 * AP start-up (BSP side) and the AP's C entry.
 *
 * The BSP sends INIT (assert, deassert) to every listed CPU but itself, waits
 * 10 ms, sends SIPI, waits 200 us, sends SIPI again, then polls a shared
 * counter until every AP has checked in or the timeout passes.  Delays and
 * the timeout use the LAPIC timer (one-shot, masked, divide by 128; KVM and
 * QEMU clock it at 1 GHz) read back through its current-count register, so
 * the number of (emulated) ring-0 instructions stays small.
 */
#include "smp.h"

#define LAPIC_ID    0x020
#define LAPIC_SVR   0x0f0
#define LAPIC_ICR0  0x300
#define LAPIC_ICR1  0x310
#define LAPIC_LVTT  0x320
#define LAPIC_TMICT 0x380
#define LAPIC_TMCCT 0x390
#define LAPIC_TDCR  0x3e0

#define ICR_BUSY    (1u << 12)      /* delivery status: send pending */
#define ICR_INIT    0x0500
#define ICR_SIPI    0x0600
#define ICR_ASSERT  0x4000
#define ICR_LEVEL   0x8000

struct __attribute__((packed)) desc_reg {
    uint16_t limit;
    uint64_t base;
};

struct desc_reg smp_ap_idtr;        /* loaded by smp_ap_start64 */
static volatile uint32_t ap_count;
static volatile uint32_t print_lock;
static int timer_ok;

static inline uint32_t lapic_rd(unsigned reg) { return mmio_read32(LAPIC_BASE + reg); }
static inline void lapic_wr(unsigned reg, uint32_t v) { mmio_write32(LAPIC_BASE + reg, v); }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

uint32_t lapic_id(void) { return lapic_rd(LAPIC_ID) >> 24; }

void smp_lock(void)
{
    while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))     /* xchg */
        while (print_lock)
            cpu_relax();
}

void smp_unlock(void) { __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE); }

/* Console stress (`spam=N`): every CPU writes its letter N times straight to the UART's THR,
 * with no guest-side lock, so the VMM sees concurrent THR writes from all vCPUs. */
volatile unsigned smp_spam_n;
volatile unsigned smp_spam_go;
volatile unsigned smp_spam_done;

void smp_spam(uint32_t apic_id)
{
    char c = (char)('a' + apic_id % 26);
    for (unsigned i = 0; i < smp_spam_n; i++) {
        while (!(inb(0x3f8 + 5) & 0x20))
            cpu_relax();
        outb(0x3f8, (uint8_t)c);
    }
}

void smp_ap_main(uint32_t apic_id)
{
    smp_lock();
    printf("ap %u online\n", apic_id);
    smp_unlock();
    __atomic_fetch_add(&ap_count, 1, __ATOMIC_SEQ_CST);                /* lock add */
    if (smp_spam_n) {
        while (!smp_spam_go)
            cpu_relax();
        smp_spam(apic_id);
        __atomic_fetch_add(&smp_spam_done, 1, __ATOMIC_SEQ_CST);
    }
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ---- LAPIC timer as a stopwatch ---- */
static void timer_start_us(uint64_t us)
{
    uint64_t ticks = us * 1000 / 128;           /* 1 GHz bus clock, divide by 128 */
    if (ticks == 0)
        ticks = 1;
    if (ticks > 0xffffffffu)
        ticks = 0xffffffffu;
    lapic_wr(LAPIC_TMICT, (uint32_t)ticks);
}

static int timer_running(void) { return lapic_rd(LAPIC_TMCCT) != 0; }

static void timer_init(void)
{
    lapic_wr(LAPIC_TDCR, 0xa);                  /* divide by 128 */
    lapic_wr(LAPIC_LVTT, 0x10000 | 0xef);       /* one-shot, masked */
    timer_start_us(1000000);
    timer_ok = timer_running();                 /* no timer: fall back to loop counts */
    lapic_wr(LAPIC_TMICT, 0);
}

static void delay_us(unsigned us)
{
    if (timer_ok) {
        timer_start_us(us);
        while (timer_running())
            cpu_relax();
    } else {
        for (volatile unsigned i = 0; i < us / 8; i++)
            cpu_relax();
    }
}

static void icr_send(uint32_t apic_id, uint32_t low)
{
    lapic_wr(LAPIC_ICR1, apic_id << 24);
    lapic_wr(LAPIC_ICR0, low);
    for (unsigned i = 0; i < 1000 && (lapic_rd(LAPIC_ICR0) & ICR_BUSY); i++)
        cpu_relax();
}

unsigned smp_boot_aps(const struct cpu_list *cpus, unsigned timeout_ms)
{
    /* Trampoline: code + the BSP's GDTR (32-bit base) and CR3. */
    struct desc_reg gdtr, idtr;
    uint64_t cr3;
    __asm__ volatile("sgdt %0; sidt %1; mov %%cr3, %2" : "=m"(gdtr), "=m"(idtr), "=r"(cr3));
    smp_ap_idtr = idtr;
    uint8_t *t = (uint8_t *)(uintptr_t)SMP_TRAMPOLINE;
    size_t len = (size_t)(smp_tramp_end - smp_tramp_start);
    memcpy(t, smp_tramp_start, len);
    uint16_t lim = gdtr.limit;
    uint32_t base = (uint32_t)gdtr.base, pml4 = (uint32_t)cr3;
    memcpy(t + (smp_tramp_gdtr - smp_tramp_start), &lim, 2);
    memcpy(t + (smp_tramp_gdtr - smp_tramp_start) + 2, &base, 4);
    memcpy(t + (smp_tramp_cr3 - smp_tramp_start), &pml4, 4);

    lapic_wr(LAPIC_SVR, 0x1ff);                 /* software-enable, spurious vector 0xff */
    timer_init();
    uint32_t self = lapic_id();
    unsigned want = 0, listed = cpus->n < SMP_MAX_CPUS ? cpus->n : SMP_MAX_CPUS;
    for (unsigned i = 0; i < listed; i++) {
        uint32_t id = cpus->apic_id[i];
        if (id == self || id >= SMP_MAX_APIC_ID)   /* not addressable in xAPIC mode */
            continue;
        want++;
        icr_send(id, ICR_INIT | ICR_ASSERT | ICR_LEVEL);
        icr_send(id, ICR_INIT | ICR_LEVEL);         /* deassert */
    }
    if (want == 0)
        return 0;
    delay_us(10000);
    for (int round = 0; round < 2; round++) {
        for (unsigned i = 0; i < listed; i++) {
            uint32_t id = cpus->apic_id[i];
            if (id != self && id < SMP_MAX_APIC_ID)
                icr_send(id, ICR_SIPI | (SMP_TRAMPOLINE >> 12));
        }
        if (round == 0)
            delay_us(200);
    }

    if (timer_ok) {
        timer_start_us((uint64_t)timeout_ms * 1000);
        while (ap_count < want && timer_running())
            cpu_relax();
    } else {
        for (volatile uint64_t i = 0; i < (uint64_t)timeout_ms * 200 && ap_count < want; i++)
            cpu_relax();
    }
    return __atomic_load_n(&ap_count, __ATOMIC_SEQ_CST);
}

/* ---- shared by acpi.c and mptable.c ---- */
uint8_t table_sum8(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t s = 0;
    while (n--)
        s = (uint8_t)(s + *b++);
    return s;
}

int table_corrupt_is(const char *corrupt, size_t len, const char *name)
{
    return corrupt && len == strlen(name) && memcmp(corrupt, name, len) == 0;
}

uint16_t low_read16(uintptr_t addr)
{
    __asm__("" : "+r"(addr));       /* hide the constant low address from -Warray-bounds */
    return *(volatile uint16_t *)addr;
}
