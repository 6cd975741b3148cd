/* DDP buckets over a flat gradient buffer (see include/lmforge/ddp.h). */
#include "lmforge/ddp.h"

#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/error.h"

typedef struct bucket {
    size_t offset, count;
    lmf_comm_req *req;
} bucket;

struct lmf_ddp {
    lmf_comm *comm;
    float *grads;
    bucket *b; /* ascending offsets */
    int n;
    int next; /* buckets at index >= next are posted (they are posted from the end) */
    size_t bytes;
    /* timing of synchronised steps: first post, end of backward (finish called), all done */
    double t_first, steps, span_s, exposed_s;
};

static int cmp_range(const void *a, const void *b) {
    const lmf_ddp_range *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int lmf_ddp_create(lmf_ddp **out, lmf_comm *c, float *grads, const lmf_ddp_range *segs, int n_segs,
                   size_t bucket_bytes) {
    *out = NULL;
    size_t cap = (bucket_bytes ? bucket_bytes : (size_t)25 << 20) / sizeof(float);
    if (cap == 0) cap = 1;
    lmf_ddp_range *s = malloc(sizeof *s * (size_t)(n_segs > 0 ? n_segs : 1));
    lmf_ddp *d = calloc(1, sizeof *d);
    if (!s || !d) {
        free(s), free(d);
        return lmf_errorf(LMF_ENOMEM, "ddp: out of memory");
    }
    memcpy(s, segs, sizeof *s * (size_t)n_segs);
    qsort(s, (size_t)n_segs, sizeof *s, cmp_range);
    /* Merge adjacent segments into ranges, then cut the ranges into buckets of <= cap. */
    int n_b = 0, cap_b = 16;
    d->b = malloc(sizeof *d->b * (size_t)cap_b);
    for (int i = 0; i < n_segs && d->b;) {
        size_t off = s[i].offset, end = s[i].offset + s[i].count;
        for (i++; i < n_segs && s[i].offset <= end; i++)
            if (s[i].offset + s[i].count > end) end = s[i].offset + s[i].count;
        for (size_t at = off; at < end; at += cap) {
            if (n_b == cap_b) {
                bucket *nb = realloc(d->b, sizeof *d->b * (size_t)(cap_b *= 2));
                if (!nb) {
                    free(d->b);
                    d->b = NULL;
                    break;
                }
                d->b = nb;
            }
            d->b[n_b++] = (bucket){at, end - at < cap ? end - at : cap, NULL};
            d->bytes += d->b[n_b - 1].count * sizeof(float);
        }
    }
    free(s);
    if (!d->b) {
        free(d);
        return lmf_errorf(LMF_ENOMEM, "ddp: out of memory");
    }
    d->comm = c, d->grads = grads, d->n = n_b, d->next = n_b;
    *out = d;
    return 0;
}

void lmf_ddp_free(lmf_ddp *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++)
        if (d->b[i].req) lmf_comm_wait(&d->b[i].req);
    free(d->b);
    free(d);
}

void lmf_ddp_begin(lmf_ddp *d) {
    d->next = d->n;
}

static int post(lmf_ddp *d, int i) {
    bucket *b = &d->b[i];
    if (i == d->n - 1) d->t_first = lmf_time_sec();
    return lmf_comm_iallreduce(d->comm, d->grads + b->offset, b->count, LMF_F32, LMF_REDUCE_SUM,
                               &b->req);
}

int lmf_ddp_ready_from(lmf_ddp *d, size_t off) {
    int rc = 0;
    while (!rc && d->next > 0 && d->b[d->next - 1].offset >= off) rc = post(d, --d->next);
    if (!rc) lmf_comm_progress(d->comm);
    return rc;
}

int lmf_ddp_finish(lmf_ddp *d) {
    int rc = 0;
    double t_bwd = lmf_time_sec();
    while (!rc && d->next > 0) rc = post(d, --d->next);
    for (int i = d->n - 1; i >= 0 && !rc; i--) rc = lmf_comm_wait(&d->b[i].req);
    if (!rc && d->n) {
        double t_done = lmf_time_sec();
        d->steps += 1;
        d->span_s += t_done - d->t_first;
        d->exposed_s += t_done - t_bwd;
    }
    return rc;
}

void lmf_ddp_stats(const lmf_ddp *d, double *steps, double *span_s, double *exposed_s) {
    *steps = d->steps, *span_s = d->span_s, *exposed_s = d->exposed_s;
}

size_t lmf_ddp_bytes(const lmf_ddp *d) {
    return d->bytes;
}
int lmf_ddp_buckets(const lmf_ddp *d) {
    return d->n;
}
