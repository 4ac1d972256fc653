#include "lib.h"

/* CRC-32/ISO-HDLC: reflected poly 0xEDB88320, init/xorout 0xFFFFFFFF.
 * The table is built on first use; call from ring 3 for large buffers. */
static uint32_t table[256];
static int table_ready;

uint32_t crc32_update(uint32_t crc, const void *buf, size_t n)
{
    if (!table_ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c >> 1) ^ (0xEDB88320u & -(c & 1));
            table[i] = c;
        }
        table_ready = 1;
    }
    const uint8_t *p = buf;
    crc = ~crc;
    while (n--)
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}
