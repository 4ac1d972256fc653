/*
 * echo: serial RX via IRQ4 through the 8259 PIC (vector 0x24) and LAPIC
 * LINT0 (ExtINT).  Every received byte is echoed; 0x04 (EOT) ends the run.
 */
#include "lib/lib.h"

#define PIC_VEC 0x20
#define IRQ_COM1 4

static volatile int done;
static volatile unsigned irqs;

static void com1_irq(struct frame *f)
{
    (void)f;
    irqs++;
    while (!done && (inb(COM1 + 5) & 0x01)) {   /* LSR.DR */
        uint8_t c = inb(COM1);                  /* RBR */
        if (c == 0x04)
            done = 1;
        else
            serial_putc((char)c);
    }
    pic_eoi(IRQ_COM1);
}

static void spurious(struct frame *f)
{
    (void)f;    /* PIC IRQ7/IRQ15 or LAPIC spurious: no EOI */
}

int guest_main(const struct boot_info *bi)
{
    (void)bi;
    idt_set_handler(PIC_VEC + IRQ_COM1, com1_irq);
    idt_set_handler(PIC_VEC + 7, spurious);
    idt_set_handler(PIC_VEC + 15, spurious);
    idt_set_handler(0xff, spurious);
    pic_remap(PIC_VEC, PIC_VEC + 8, (uint8_t)~((1 << IRQ_COM1) | (1 << 2)), 0xff);
    lapic_enable_extint();

    /* Bytes that arrived before this point are not lost: with data pending,
     * enabling the RX interrupt raises IRQ4 at once. */
    outb(COM1 + 4, 0x0b);           /* MCR: DTR | RTS | OUT2 (IRQ line enable) */
    outb(COM1 + 1, 0x01);           /* IER: received data available */

    puts("echo ready");
    for (;;) {
        __asm__ volatile("cli");
        if (done)
            break;
        __asm__ volatile("sti; hlt" ::: "memory");
    }
    printf("\r\necho bye irqs=%u\n", irqs);
    return 0;
}
