/* hello: prints one line, exits with status `exit=N` (default 0). */
#include "lib/lib.h"

int guest_main(struct hvm_start_info *si)
{
    (void)si;
    puts("hello from guest");
    return (int)cmdline_u64("exit", 0);
}
