#include "lib.h"

static const char *cmd = "";

void cmdline_set(const char *c) { cmd = c ? c : ""; }
const char *cmdline(void) { return cmd; }

const char *cmdline_get(const char *key, size_t *len)
{
    size_t klen = strlen(key);
    const char *found = 0;
    const char *p = cmd;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        const char *w = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n')
            p++;
        size_t wlen = (size_t)(p - w);
        if (wlen >= klen && memcmp(w, key, klen) == 0) {
            if (wlen == klen) {
                found = w + wlen;
                *len = 0;
            } else if (w[klen] == '=') {
                found = w + klen + 1;
                *len = wlen - klen - 1;
            }
        }
    }
    return found;
}

uint64_t cmdline_u64(const char *key, uint64_t dflt)
{
    size_t n;
    uint64_t v;
    const char *s = cmdline_get(key, &n);
    /* Absent, empty (`key=` or a bare `key`) or not all digits: the default. */
    if (!s || n == 0 || parse_u64(s, n, 10, &v) != n)
        return dflt;
    return v;
}
