/* Data-parallel gradient synchronisation (PyTorch DDP's reducer): the trained floats of a flat
 * gradient buffer are cut into buckets of about bucket_bytes (ddp_bucket_cap_mb) and each
 * bucket is summed over the ranks with a non-blocking all-reduce as soon as backward has
 * finished every gradient in it, so communication overlaps the backward of earlier layers.
 * Only trained floats travel (a LoRA adapter's, not the frozen base's).
 *
 * Backward finishes gradients from the end of the flat buffer towards its start (lm_head and
 * the last layer first, the embedding last), so readiness is one moving offset: after
 * lmf_ddp_ready_from(d, off) every gradient at or beyond off is final. Every rank must make
 * the same calls in the same order (they do: all run the same model). */
#ifndef LMFORGE_DDP_H
#define LMFORGE_DDP_H

#include <stddef.h>

#include "lmforge/comm.h"

typedef struct lmf_ddp lmf_ddp;

/* A run of trained floats in the gradient buffer. */
typedef struct lmf_ddp_range {
    size_t offset, count;
} lmf_ddp_range;

/* Buckets over the floats the ranges cover (sorted or not; adjacent ones merge). grads is
 * borrowed. bucket_bytes 0 means 25 MiB (DDP's default). */
int lmf_ddp_create(lmf_ddp **out, lmf_comm *c, float *grads, const lmf_ddp_range *ranges,
                   int n_ranges, size_t bucket_bytes);
void lmf_ddp_free(lmf_ddp *d);
/* Starts a synchronised backward (the last micro-batch of an optimizer step). */
void lmf_ddp_begin(lmf_ddp *d);
/* Every gradient at float offset >= off is final: posts the buckets that lie wholly there and
 * are not posted yet, then moves outstanding requests forward. */
int lmf_ddp_ready_from(lmf_ddp *d, size_t off);
/* Posts what is left and waits for every bucket: grads then hold the sum over ranks. */
int lmf_ddp_finish(lmf_ddp *d);
/* Bytes one rank sends per synchronised step (the trained floats), and the bucket count. */
size_t lmf_ddp_bytes(const lmf_ddp *d);
int lmf_ddp_buckets(const lmf_ddp *d);
/* Over the synchronised steps so far: how many, the seconds from the first bucket's post to the
 * last bucket's completion (the all-reduce's span), and the part of it after backward ended
 * (exposed: what overlapping did not hide). */
void lmf_ddp_stats(const lmf_ddp *d, double *steps, double *span_s, double *exposed_s);

#endif
