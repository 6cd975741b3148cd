/* Seeded, rank-sharded, resumable example order (see include/lmforge/sampler.h). */
#include "lmforge/sampler.h"

#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"

static const char magic[8] = {'L', 'M', 'F', 'S', 'A', 'M', 'P', '1'};

/* The epoch's order depends only on (seed, epoch), so every rank computes the same one. */
static void build_order(lmf_sampler *s) {
    for (int64_t i = 0; i < s->n; i++) s->order[i] = i;
    if (s->shuffle) {
        lmf_rng rng;
        lmf_rng_seed(&rng, s->seed * 0x9E3779B97F4A7C15ull + (uint64_t)s->epoch);
        for (int64_t i = s->n - 1; i > 0; i--) {
            int64_t j = (int64_t)(lmf_rng_u64(&rng) % (uint64_t)(i + 1));
            int64_t t = s->order[i];
            s->order[i] = s->order[j];
            s->order[j] = t;
        }
    }
    /* Pad by wrapping around, so every rank gets the same count (DistributedSampler). */
    for (int64_t i = s->n; i < s->padded; i++) s->order[i] = s->order[i - s->n];
}

int lmf_sampler_init(lmf_sampler *s, int64_t n, int world, int rank, uint64_t seed, int shuffle) {
    memset(s, 0, sizeof *s);
    if (n <= 0) return lmf_errorf(LMF_EINVAL, "sampler: the dataset is empty");
    if (world <= 0 || rank < 0 || rank >= world)
        return lmf_errorf(LMF_EINVAL, "sampler: rank %d outside world size %d", rank, world);
    s->n = n, s->world = world, s->rank = rank, s->seed = seed, s->shuffle = shuffle;
    s->padded = (n + world - 1) / world * world;
    s->order = malloc(sizeof *s->order * (size_t)s->padded);
    if (!s->order)
        return lmf_errorf(LMF_ENOMEM, "sampler: out of memory for %lld indices", (long long)n);
    build_order(s);
    return 0;
}

void lmf_sampler_free(lmf_sampler *s) {
    free(s->order);
    memset(s, 0, sizeof *s);
}

int64_t lmf_sampler_per_rank(const lmf_sampler *s) {
    return s->padded / s->world;
}

int64_t lmf_sampler_next(lmf_sampler *s, int *new_epoch) {
    if (new_epoch) *new_epoch = 0;
    if (s->consumed >= s->padded) {
        s->epoch++;
        s->consumed = 0;
        build_order(s);
        if (new_epoch) *new_epoch = 1;
    }
    int64_t idx = s->order[s->consumed + s->rank];
    s->consumed += s->world;
    return idx;
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void lmf_sampler_save(const lmf_sampler *s, uint8_t out[LMF_SAMPLER_STATE_BYTES]) {
    memcpy(out, magic, 8);
    put64(out + 8, (uint64_t)s->n);
    put64(out + 16, s->seed);
    put64(out + 24, (uint64_t)s->epoch);
    put64(out + 32, (uint64_t)s->consumed);
    put64(out + 40, (uint64_t)s->shuffle);
}

int lmf_sampler_restore(lmf_sampler *s, const uint8_t in[LMF_SAMPLER_STATE_BYTES],
                        const char *what) {
    if (memcmp(in, magic, 8))
        return lmf_errorf(LMF_EFORMAT, "%s: not a sampler state (bad magic or version)", what);
    int64_t n = (int64_t)get64(in + 8), epoch = (int64_t)get64(in + 24);
    int64_t consumed = (int64_t)get64(in + 32);
    uint64_t seed = get64(in + 16);
    if (n != s->n)
        return lmf_errorf(LMF_EINVAL, "%s: saved for a dataset of %lld examples, this one has %lld",
                          what, (long long)n, (long long)s->n);
    if (seed != s->seed || (int)get64(in + 40) != s->shuffle)
        return lmf_errorf(LMF_EINVAL, "%s: saved with another seed or shuffle setting", what);
    if (epoch < 0 || consumed < 0)
        return lmf_errorf(LMF_EFORMAT, "%s: corrupt sampler position", what);
    s->epoch = epoch;
    s->consumed = consumed / s->world * s->world;
    if (s->padded != (n + s->world - 1) / s->world * s->world) return LMF_EINVAL;
    if (s->consumed > s->padded) s->consumed = s->padded;
    build_order(s);
    return 0;
}
