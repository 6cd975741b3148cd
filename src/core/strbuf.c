/* A growing string built by printf-style appends (lmforge/core.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "lmforge/core.h"

void lmf_strbuf_printf(lmf_strbuf *b, const char *fmt, ...) {
    while (!b->oom) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (b->s && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s, b->cap = cap;
    }
}

char *lmf_strbuf_take(lmf_strbuf *b) {
    char *s = b->oom ? NULL : b->s ? b->s : lmf_strdup("");
    if (b->oom) free(b->s);
    *b = (lmf_strbuf){0};
    return s;
}
