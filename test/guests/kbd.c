/*
 * kbd: counts the i8042 keyboard interrupt (IRQ 1 through the 8259 PIC,
 * vector 0x21, LAPIC LINT0 ExtINT) and prints every scancode it reads from
 * the data port 0x60, for the host's Ctrl-Alt-Del injection (Firecracker's
 * SendCtrlAltDel, kindling's vm.sendCtrlAltDel()).  Prints "kbd ready", then
 * once kbd.count=N scancodes (default 4: Ctrl, Alt, E0-prefixed Del in set 1
 * as the controller translates) have arrived prints
 * "kbd irqs=<n> scancodes=1d 38 e0 53" and exits 0.
 */
#include "lib/lib.h"

#define PIC_VEC 0x20
#define IRQ_KBD 1
#define I8042_DATA 0x60
#define I8042_STATUS 0x64
#define MAX_CODES 32

static volatile unsigned irqs;
static volatile unsigned ncodes;
static uint8_t codes[MAX_CODES];

static void kbd_irq(struct frame *f)
{
    (void)f;
    irqs++;
    while (inb(I8042_STATUS) & 0x01) {      /* OBF: a byte waits */
        uint8_t c = inb(I8042_DATA);
        if (ncodes < MAX_CODES)
            codes[ncodes] = c;
        ncodes++;
    }
    pic_eoi(IRQ_KBD);
}

static void spurious(struct frame *f)
{
    (void)f;
}

int guest_main(const struct boot_info *bi)
{
    (void)bi;
    size_t n;
    unsigned want = 4;
    const char *v = cmdline_get("kbd.count", &n);
    if (v && n == 1 && v[0] >= '1' && v[0] <= '9')
        want = (unsigned)(v[0] - '0');
    idt_set_handler(PIC_VEC + IRQ_KBD, kbd_irq);
    idt_set_handler(PIC_VEC + 7, spurious);
    idt_set_handler(PIC_VEC + 15, spurious);
    idt_set_handler(0xff, spurious);
    /* Drain whatever the controller holds, then unmask IRQ 1 (and the cascade). */
    while (inb(I8042_STATUS) & 0x01)
        (void)inb(I8042_DATA);
    pic_remap(PIC_VEC, PIC_VEC + 8, (uint8_t)~((1 << IRQ_KBD) | (1 << 2)), 0xff);
    lapic_enable_extint();
    puts("kbd ready");
    for (;;) {
        __asm__ volatile("cli");
        if (ncodes >= want)
            break;
        __asm__ volatile("sti; hlt" ::: "memory");
    }
    printf("kbd irqs=%u scancodes=", irqs);
    for (unsigned i = 0; i < ncodes && i < MAX_CODES; i++)
        printf(i ? " %02x" : "%02x", codes[i]);
    printf("\n");
    return 0;
}
