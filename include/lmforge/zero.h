/* ZeRO / FSDP sharding of a flat float buffer (DeepSpeed's ZeRO, PyTorch FSDP's FlatParameter).
 *
 * The buffer is cut into units (one per decoder layer, plus the tensors outside the layers),
 * and every unit into P consecutive pieces of ceil(len / P) floats (the last ones shorter or
 * empty): rank r owns piece r of every unit. Its pieces, concatenated unit after unit, form the
 * rank's compact shard: what it keeps of the optimizer state (stage 1), of the gradients (stage
 * 2) and of the parameters themselves (stage 3). Sharding per unit, not the buffer as a whole,
 * lets a unit be gathered (before its forward and backward) and its gradients reduce-scattered
 * (right after its backward) with every rank sending an equal share.
 *
 * Memory is given back to the system page by page: lmf_discard releases the pages a range
 * covers (they read as zero afterwards), so a full-size buffer whose units are gathered one at a
 * time only holds what is gathered (lmf_resident_bytes measures it with mincore). */
#ifndef LMFORGE_ZERO_H
#define LMFORGE_ZERO_H

#include <stddef.h>

#include "lmforge/comm.h"

typedef struct lmf_shard_plan {
    int P, rank, n_units;
    size_t *off, *len; /* (n_units) each unit's floats in the flat buffer */
    size_t *piece;     /* (n_units) ceil(len / P): rank r's piece starts at r * piece */
    size_t *counts;    /* (n_units * P) the pieces' lengths, unit-major */
    size_t *shard_off; /* (n_units) where this rank's piece of each unit sits in its shard */
    size_t shard_len;  /* floats of this rank's compact shard */
} lmf_shard_plan;

/* Units are given as (offset, length) pairs; they must not overlap. */
int lmf_shard_plan_init(lmf_shard_plan *p, const size_t *off, const size_t *len, int n_units, int P,
                        int rank);
void lmf_shard_plan_free(lmf_shard_plan *p);
/* Rank r's piece of unit u: floats [*start, *start + *count) of the flat buffer. */
void lmf_shard_piece(const lmf_shard_plan *p, int u, int r, size_t *start, size_t *count);

/* flat's unit u := every rank's piece, this rank's taken from shard (its compact shard). */
int lmf_shard_igather(lmf_comm *c, const lmf_shard_plan *p, int u, const float *shard, float *flat,
                      lmf_comm_req **req);
/* recv (this rank's piece length) := sum over ranks of flat's unit u restricted to this rank's
 * piece. flat is read until the request completes. */
int lmf_shard_ireduce(lmf_comm *c, const lmf_shard_plan *p, int u, const float *flat, float *recv,
                      lmf_comm_req **req);
/* Copies between the flat buffer and the compact shard (this rank's pieces). */
void lmf_shard_extract(const lmf_shard_plan *p, const float *flat, float *shard);
void lmf_shard_insert(const lmf_shard_plan *p, const float *shard, float *flat);

/* Zeroes [ptr, ptr + bytes), giving the whole pages inside it back to the system
 * (madvise MADV_DONTNEED: they read as zero and hold no memory until written again). */
void lmf_discard(void *ptr, size_t bytes);
/* Bytes of the pages overlapping [ptr, ptr + bytes) that are in memory (mincore). */
size_t lmf_resident_bytes(const void *ptr, size_t bytes);

#endif
