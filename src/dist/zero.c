/* Shard plans over flat buffers, the per-unit gather / reduce-scatter, and page release (see
 * include/lmforge/zero.h). */
#include "lmforge/zero.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lmforge/core.h"

int lmf_shard_plan_init(lmf_shard_plan *p, const size_t *off, const size_t *len, int n_units, int P,
                        int rank) {
    memset(p, 0, sizeof *p);
    if (P < 1 || rank < 0 || rank >= P || n_units < 0)
        return lmf_errorf(LMF_EINVAL, "shard plan: rank %d of %d", rank, P);
    size_t n = n_units > 0 ? (size_t)n_units : 1;
    p->P = P, p->rank = rank, p->n_units = n_units;
    p->off = malloc(n * sizeof *p->off);
    p->len = malloc(n * sizeof *p->len);
    p->piece = malloc(n * sizeof *p->piece);
    p->shard_off = malloc(n * sizeof *p->shard_off);
    p->counts = malloc(n * (size_t)P * sizeof *p->counts);
    if (!p->off || !p->len || !p->piece || !p->shard_off || !p->counts) {
        lmf_shard_plan_free(p);
        return lmf_errorf(LMF_ENOMEM, "shard plan: out of memory");
    }
    for (int u = 0; u < n_units; u++) {
        p->off[u] = off[u], p->len[u] = len[u];
        p->piece[u] = (len[u] + (size_t)P - 1) / (size_t)P;
        for (int r = 0; r < P; r++) {
            size_t s = (size_t)r * p->piece[u];
            size_t e = s + p->piece[u] < len[u] ? s + p->piece[u] : len[u];
            p->counts[(size_t)u * (size_t)P + (size_t)r] = s < len[u] ? e - s : 0;
        }
        p->shard_off[u] = p->shard_len;
        p->shard_len += p->counts[(size_t)u * (size_t)P + (size_t)rank];
    }
    return 0;
}

void lmf_shard_plan_free(lmf_shard_plan *p) {
    free(p->off), free(p->len), free(p->piece), free(p->shard_off), free(p->counts);
    memset(p, 0, sizeof *p);
}

void lmf_shard_piece(const lmf_shard_plan *p, int u, int r, size_t *start, size_t *count) {
    *count = p->counts[(size_t)u * (size_t)p->P + (size_t)r];
    *start = p->off[u] + (*count ? (size_t)r * p->piece[u] : 0);
}

int lmf_shard_igather(lmf_comm *c, const lmf_shard_plan *p, int u, const float *shard, float *flat,
                      lmf_comm_req **req) {
    return lmf_comm_iallgatherv(c, shard + p->shard_off[u], flat + p->off[u],
                                p->counts + (size_t)u * (size_t)p->P, LMF_F32, req);
}

int lmf_shard_ireduce(lmf_comm *c, const lmf_shard_plan *p, int u, const float *flat, float *recv,
                      lmf_comm_req **req) {
    return lmf_comm_ireduce_scatterv(c, flat + p->off[u], recv,
                                     p->counts + (size_t)u * (size_t)p->P, LMF_F32, LMF_REDUCE_SUM,
                                     req);
}

void lmf_shard_extract(const lmf_shard_plan *p, const float *flat, float *shard) {
    for (int u = 0; u < p->n_units; u++) {
        size_t s, n;
        lmf_shard_piece(p, u, p->rank, &s, &n);
        if (n) memcpy(shard + p->shard_off[u], flat + s, n * sizeof(float));
    }
}

void lmf_shard_insert(const lmf_shard_plan *p, const float *shard, float *flat) {
    for (int u = 0; u < p->n_units; u++) {
        size_t s, n;
        lmf_shard_piece(p, u, p->rank, &s, &n);
        if (n) memcpy(flat + s, shard + p->shard_off[u], n * sizeof(float));
    }
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
