/* Aligned allocation and the bump arena used for per-step activations. */
#include "lmforge/core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void *lmf_alloc(size_t bytes, const char *what) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (!p) {
        lmf_errorf(LMF_ENOMEM, "%s: cannot allocate %zu bytes", what ? what : "buffer", bytes);
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}

void lmf_free(void *p) {
    free(p);
}

char *lmf_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int lmf_arena_init(lmf_arena *a, size_t bytes) {
    memset(a, 0, sizeof *a);
    a->base = lmf_alloc(bytes, "activation arena");
    if (!a->base) return LMF_ENOMEM;
    a->size = bytes;
    return 0;
}

void *lmf_arena_alloc(lmf_arena *a, size_t bytes) {
    size_t need = (bytes + 63) & ~(size_t)63;
    if (a->used + need > a->size) {
        lmf_errorf(LMF_ENOMEM, "activation arena: %zu bytes requested, %zu of %zu used", bytes,
                   a->used, a->size);
        return NULL;
    }
    void *p = a->base + a->used;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

void lmf_arena_reset(lmf_arena *a) {
    a->used = 0;
}

void lmf_arena_free(lmf_arena *a) {
    lmf_free(a->base);
    memset(a, 0, sizeof *a);
}

static size_t page_size(void) {
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

void lmf_discard(void *ptr, size_t bytes) {
    if (!bytes) return;
    uintptr_t ps = page_size(), a = (uintptr_t)ptr, e = a + bytes;
    uintptr_t pa = (a + ps - 1) / ps * ps, pe = e / ps * ps;
    if (pa >= pe || madvise((void *)pa, pe - pa, MADV_DONTNEED) != 0) {
        memset(ptr, 0, bytes); /* no whole page inside (or madvise refused): just zero */
        return;
    }
    memset(ptr, 0, pa - a);
    memset((void *)pe, 0, e - pe);
}

size_t lmf_resident_bytes(const void *ptr, size_t bytes) {
    if (!bytes) return 0;
    uintptr_t ps = page_size(), a = (uintptr_t)ptr / ps * ps, e = (uintptr_t)ptr + bytes;
    size_t pages = (e - a + ps - 1) / ps, in = 0;
    unsigned char vec[4096];
    for (size_t done = 0; done < pages; done += sizeof vec) {
        size_t n = pages - done < sizeof vec ? pages - done : sizeof vec;
        if (mincore((void *)(a + done * ps), n * ps, vec) != 0) return bytes; /* unknown: all */
        for (size_t i = 0; i < n; i++) in += vec[i] & 1;
    }
    return in * ps;
}
