/* Growable argument vectors for the commands the launcher builds (see launch.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch.h"
#include "lmforge/core.h"

static int push(lmf_argv *a, char *s) {
    if (!s) return lmf_errorf(LMF_ENOMEM, "out of memory");
    if (a->n + 2 > a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        char **v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) {
            free(s);
            return lmf_errorf(LMF_ENOMEM, "out of memory");
        }
        a->v = v, a->cap = cap;
    }
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
    return 0;
}

int lmf_argv_add(lmf_argv *a, const char *s) {
    return push(a, lmf_strdup(s));
}

int lmf_argv_addf(lmf_argv *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, (size_t)len + 1, fmt, ap);
        va_end(ap);
    }
    return push(a, s);
}

int lmf_argv_add_all(lmf_argv *a, const lmf_argv *b) {
    int rc = 0;
    for (int i = 0; !rc && i < b->n; i++) rc = lmf_argv_add(a, b->v[i]);
    return rc;
}

int lmf_argv_add_words(lmf_argv *a, const char *s) {
    int rc = 0;
    while (s && *s && !rc) {
        s += strspn(s, " \t\n");
        size_t len = strcspn(s, " \t\n");
        if (!len) break;
        char *w = malloc(len + 1);
        if (w) memcpy(w, s, len), w[len] = 0;
        rc = push(a, w);
        s += len;
    }
    return rc;
}

void lmf_argv_free(lmf_argv *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    free(a->v);
    memset(a, 0, sizeof *a);
}

void lmf_argv_format(const lmf_argv *a, char *out, size_t n) {
    size_t k = 0;
    if (n) out[0] = 0;
    for (int i = 0; i < a->n && k + 1 < n; i++) {
        const char *s = a->v[i];
        int plain = *s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789-_=./:,@%+") == strlen(s);
        k += (size_t)snprintf(out + k, n - k, plain ? "%s%s" : "%s'%s'", i ? " " : "", s);
    }
}
