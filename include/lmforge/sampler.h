/* The training sampler: a seeded permutation of example indices per epoch, sharded by rank
 * (rank r takes positions r, r + world, ... of the global order, as PyTorch's
 * DistributedSampler does), whose position can be saved in a checkpoint and restored so a
 * resumed run sees exactly the examples the uninterrupted one would. */
#ifndef LMFORGE_SAMPLER_H
#define LMFORGE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct lmf_sampler {
    int64_t n;       /* examples in the dataset */
    int world, rank; /* data-parallel group */
    uint64_t seed;
    int shuffle;
    int64_t epoch;    /* current epoch, from 0 */
    int64_t consumed; /* global examples consumed in this epoch (all ranks together) */
    int64_t *order;   /* the epoch's global permutation, padded to a multiple of world */
    int64_t padded;   /* its length */
} lmf_sampler;

int lmf_sampler_init(lmf_sampler *s, int64_t n, int world, int rank, uint64_t seed, int shuffle);
void lmf_sampler_free(lmf_sampler *s);
/* This rank's next example index; starts the next epoch when this one is exhausted
 * (*new_epoch set to 1 then, may be NULL). */
int64_t lmf_sampler_next(lmf_sampler *s, int *new_epoch);
/* Examples per rank per epoch (the padded length / world). */
int64_t lmf_sampler_per_rank(const lmf_sampler *s);

/* A fixed-size, versioned record of the position (magic "LMFSAMP1"). Restoring needs the same
 * dataset size and seed; a different world size is allowed (the global position carries
 * over, rounded down to a whole step of the new world). */
#define LMF_SAMPLER_STATE_BYTES 48
void lmf_sampler_save(const lmf_sampler *s, uint8_t out[LMF_SAMPLER_STATE_BYTES]);
int lmf_sampler_restore(lmf_sampler *s, const uint8_t in[LMF_SAMPLER_STATE_BYTES],
                        const char *what);

#endif
