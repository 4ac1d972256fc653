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
 */
#include "lib/lib.h"

int guest_main(const struct boot_info *bi)
{
    (void)bi;
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
    if (cmdline_get("reboot", &n)) {
        outb(0x64, 0xfe);
        puts("reboot: still running");
    }
    return (int)cmdline_u64("exit", 0);
}
