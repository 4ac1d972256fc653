/*
 * The flood text of hello.flood and console.flood (README.md): 64-byte lines
 * "<k as %08x> " + 54 letters ('a' + (k + j) % 26) + "\n", line k counting
 * from 0; the host tests compare what arrives with the same text.
 */
#include "lib.h"

static char flood_byte(uint64_t i)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t k = i / FLOOD_LINE;
    unsigned j = (unsigned)(i % FLOOD_LINE);
    if (j < 8)
        return hex[(k >> (4 * (7 - j))) & 0xf];
    if (j == 8)
        return ' ';
    if (j == FLOOD_LINE - 1)
        return '\n';
    return (char)('a' + (k + (j - 9)) % 26);
}

void flood_text(char *buf, uint64_t off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = flood_byte(off + i);
}
