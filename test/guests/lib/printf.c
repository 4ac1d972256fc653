#include "lib.h"

struct sink {
    char *buf;          /* NULL: serial */
    size_t size, len;
};

static void emit(struct sink *k, char c)
{
    if (!k->buf)
        serial_putc(c);
    else if (k->len + 1 < k->size)
        k->buf[k->len] = c;
    k->len++;
}

static void emit_num(struct sink *k, uint64_t v, unsigned base, int upper, int neg,
                     int width, int zero)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    int len = n + neg;
    if (neg && zero)
        emit(k, '-');
    for (; len < width; len++)
        emit(k, zero ? '0' : ' ');
    if (neg && !zero)
        emit(k, '-');
    while (n)
        emit(k, tmp[--n]);
}

static void format(struct sink *k, const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            emit(k, *fmt);
            continue;
        }
        fmt++;
        int zero = 0, width = 0, lng = 0;
        if (*fmt == '0') {
            zero = 1;
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l' || *fmt == 'z') {
            lng = 1;
            fmt++;
        }
        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            emit_num(k, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, 0, v < 0, width, zero);
            break;
        }
        case 'u':
            emit_num(k, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, 0, 0, width, zero);
            break;
        case 'x':
        case 'X':
            emit_num(k, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, *fmt == 'X', 0,
                     width, zero);
            break;
        case 'p':
            emit(k, '0');
            emit(k, 'x');
            emit_num(k, (uintptr_t)va_arg(ap, void *), 16, 0, 0, width, zero);
            break;
        case 'c':
            emit(k, (char)va_arg(ap, int));
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = (int)strlen(s);
            for (; n < width; n++)
                emit(k, ' ');
            while (*s)
                emit(k, *s++);
            break;
        }
        case '%':
            emit(k, '%');
            break;
        case 0:
            return;
        default:
            emit(k, '%');
            emit(k, *fmt);
        }
    }
}

int vprintf(const char *fmt, va_list ap)
{
    struct sink k = { 0, 0, 0 };
    format(&k, fmt, ap);
    return (int)k.len;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    struct sink k = { buf, size, 0 };
    va_list ap;
    va_start(ap, fmt);
    format(&k, fmt, ap);
    va_end(ap);
    if (size)
        buf[k.len < size ? k.len : size - 1] = 0;
    return (int)k.len;
}

void puts(const char *s)
{
    while (*s)
        serial_putc(*s++);
    serial_putc('\n');
}
