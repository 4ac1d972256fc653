#include "lib.h"

static const char *cmd = "";

void cmdline_set(const char *c) { cmd = c ? c : ""; }
const char *cmdline(void) { return cmd; }

const char *cmdline_word(const char **p, size_t *len)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t' || *s == '\n')
        s++;
    const char *w = s;
    while (*s && *s != ' ' && *s != '\t' && *s != '\n')
        s++;
    *p = s;
    *len = (size_t)(s - w);
    return *len ? w : 0;
}

const char *cmdline_get(const char *key, size_t *len)
{
    size_t klen = strlen(key);
    const char *found = 0;
    const char *p = cmd, *w;
    size_t wlen;
    while ((w = cmdline_word(&p, &wlen))) {
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
