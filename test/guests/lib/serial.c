#include "lib.h"

#define THR 0   /* transmit holding (DLAB=0) */
#define DLL 0   /* divisor low (DLAB=1) */
#define IER 1
#define DLM 1
#define LCR 3
#define MCR 4
#define LSR 5

void serial_init(void)
{
    outb(COM1 + IER, 0x00);     /* no interrupts */
    outb(COM1 + LCR, 0x80);     /* DLAB */
    outb(COM1 + DLL, 0x01);     /* 115200 baud */
    outb(COM1 + DLM, 0x00);
    outb(COM1 + LCR, 0x03);     /* 8N1, DLAB off */
    /* FCR is left alone (FIFOs off after reset): toggling FCR.FE flushes the
     * RX FIFO and would drop input that arrived before boot. */
    outb(COM1 + MCR, 0x03);     /* DTR | RTS */
}

void serial_putc(char c)
{
    while (!(inb(COM1 + LSR) & 0x20))   /* THR empty */
        ;
    outb(COM1 + THR, (uint8_t)c);
}

void serial_write(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        serial_putc(s[i]);
}
