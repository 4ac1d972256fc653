/* pioloop: pio.count=N (default 1000000) `outb` to port 0x80 from ring 3
 * (pio.ring=0: from ring 0 instead). */
#include "lib/lib.h"

static uint64_t loop(void *arg)
{
    uint64_t n = *(uint64_t *)arg;
    for (uint64_t i = 0; i < n; i++)
        outb(0x80, (uint8_t)i);
    return n;
}

int guest_main(const struct boot_info *bi)
{
    (void)bi;
    uint64_t n = cmdline_u64("pio.count", 1000000);
    puts("pioloop start");
    uint64_t done = cmdline_u64("pio.ring", 3) == 0 ? loop(&n) : run_user(loop, &n, 0);
    printf("pioloop done %lu\n", done);
    return 0;
}
