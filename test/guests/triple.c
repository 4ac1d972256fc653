/* triple: prints one line, then triple-faults (empty IDT + ud2; no int3). */
#include "lib/lib.h"

int guest_main(const struct boot_info *bi)
{
    (void)bi;
    puts("triple: faulting");
    static const struct { uint16_t limit; uint64_t base; } __attribute__((packed)) empty = { 0, 0 };
    __asm__ volatile("lidt %0; ud2" :: "m"(empty));
    for (;;)
        __asm__ volatile("cli; hlt");
}
