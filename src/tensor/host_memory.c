/* Host memory behind the cpu and ref backends (a device backend brings its own). */
#include "host_memory.h"

#include <stdlib.h>
#include <string.h>

void *lmf_host_alloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    if (!r) r = 64;
    void *p = aligned_alloc(64, r);
    if (p) memset(p, 0, r);
    return p;
}

void lmf_host_free(void *p) {
    free(p);
}

void lmf_host_zero(void *p, size_t bytes) {
    memset(p, 0, bytes);
}

void lmf_host_copy(void *dst, const void *src, size_t bytes) {
    memmove(dst, src, bytes);
}
