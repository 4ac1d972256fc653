/*
 * hello: prints one line, exits with status `exit=N` (default 0).
 * fault=ud|gp|pf|int3 (optional) raises that exception in ring 0 after the
 * line, to exercise the IDT path (report line + exit status 0xEE).  int3 is
 * #BP on hardware; under KVM-PVM ring-0 int3 cannot be emulated, so the VMM
 * sees an emulation failure it must report.
 * probe=PORT (hex) reads that I/O port twice and prints `probe <port> <v1> <v2>`
 * (an unhandled port reads all-ones on kindling and QEMU alike).
 * reboot asks the i8042 keyboard controller to pulse the CPU reset line
 * (command 0xfe on port 0x64), as Linux's reboot=k does.
 * hello.boot-timer writes to Firecracker's boot timer at 0xd0000000 after the
 * line: first three writes the device must ignore (the magic 123 as a 32-bit
 * write, 123 at offset 1, 122 at offset 0), then the boot-complete byte 123
 * at offset 0, then prints "boot-timer: signalled".
 * hello.touch=M writes one byte in every 4 KiB page of M MiB of RAM from
 * 16 MiB up (clamped to the RAM the e820 map reports below 3 GiB), from ring 3,
 * then prints "touch: <pages> pages" (so the host sees guest RAM become resident).
 * hello.flood=N prints N more bytes of text on COM1 after the line: 64-byte
 * lines "<k as %08x> " + 54 letters ('a' + (k + j) % 26) + "\n", cut off
 * after N bytes (README.md).  Each 4 KiB piece is composed in ring 3 and
 * written from ring 0 with one `rep outsb` once LSR says THR is empty (under
 * KVM-PVM about 8 us a byte, four times faster than ring-3 `outb`); the VMM's
 * console back-pressure tests use it.
 */
#include "lib/lib.h"

#define FLOOD_CHUNK 4096

static char flood_buf[FLOOD_CHUNK];

struct flood_piece {
    uint64_t off;       /* offset of the piece in the flood text */
    size_t len;
};

static uint64_t flood_fill(void *arg)       /* ring 3: native speed under PVM */
{
    const struct flood_piece *p = arg;
    flood_text(flood_buf, p->off, p->len);
    return 0;
}

static void flood(uint64_t n)               /* ring 0 */
{
    for (uint64_t off = 0; off < n;) {
        struct flood_piece p = { off, n - off < FLOOD_CHUNK ? (size_t)(n - off) : FLOOD_CHUNK };
        run_user(flood_fill, &p, 0);
        while (!(inb(COM1 + 5) & 0x20))     /* LSR: THR empty */
            ;
        const char *src = flood_buf;
        size_t cnt = p.len;
        __asm__ volatile("rep outsb" : "+S"(src), "+c"(cnt) : "d"((uint16_t)COM1) : "memory");
        off += p.len;
    }
}

struct touch {
    uint64_t start, end;
};

/* The end of the usable (type 1) e820 region that holds 16 MiB, capped at limit. */
static uint64_t ram_top_below(uint64_t limit, const struct boot_info *bi)
{
    for (unsigned i = 0; i < bi->e820_count; i++) {
        const struct boot_e820 *e = &bi->e820[i];
        if (e->type == 1 && e->addr <= (16ull << 20) && e->addr + e->size > (16ull << 20))
            return e->addr + e->size < limit ? e->addr + e->size : limit;
    }
    return 16ull << 20;
}

static uint64_t touch_pages(void *arg)      /* ring 3 */
{
    const struct touch *t = arg;
    uint64_t n = 0;
    for (uint64_t a = t->start; a < t->end; a += 4096, n++)
        *(volatile uint8_t *)a = (uint8_t)n;
    return n;
}

int guest_main(const struct boot_info *bi)
{
    size_t n;
    puts("hello from guest");
    const char *f = cmdline_get("fault", &n);
    if (f && n == 2 && !memcmp(f, "ud", 2))
        __asm__ volatile("ud2");
    if (f && n == 2 && !memcmp(f, "gp", 2))
        (void)*(volatile uint8_t *)0x8000000000000000ull;     /* non-canonical */
    if (f && n == 2 && !memcmp(f, "pf", 2))
        (void)*(volatile uint8_t *)0x100000000ull;            /* above the 4 GiB map */
    if (f && n == 4 && !memcmp(f, "int3", 4))
        __asm__ volatile("int3");
    const char *p = cmdline_get("probe", &n);
    if (p) {
        uint64_t port = 0;
        parse_u64(p, n, 16, &port);
        uint8_t a = inb((uint16_t)port), b = inb((uint16_t)port);
        printf("probe %x %x %x\n", (unsigned)port, a, b);
    }
    if (cmdline_get("hello.boot-timer", &n)) {
        volatile uint8_t *bt = (volatile uint8_t *)0xd0000000ull;
        mmio_write32(0xd0000000ull, 123);
        bt[1] = 123;
        bt[0] = 122;
        bt[0] = 123;
        puts("boot-timer: signalled");
    }
    uint64_t touch_mib = cmdline_u64("hello.touch", 0);
    if (touch_mib) {
        struct touch t = { 16ull << 20, (16ull + touch_mib) << 20 };
        uint64_t top = ram_top_below(0xc0000000ull, bi);
        if (t.end > top)
            t.end = top;
        uint64_t pages = run_user(touch_pages, &t, 0);
        printf("touch: %lu pages\n", (unsigned long)pages);
    }
    uint64_t flood_n = cmdline_u64("hello.flood", 0);
    if (flood_n)
        flood(flood_n);
    if (cmdline_get("reboot", &n)) {
        outb(0x64, 0xfe);
        puts("reboot: still running");
    }
    return (int)cmdline_u64("exit", 0);
}
