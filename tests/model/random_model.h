/* The tests' random model for comparing inference paths: lmf_model_init_random(seed), then the
 * norms and biases moved off their init values (0.2 * N(0, 1) each, from an rng seeded seed + 1
 * and left in *r for the caller's further draws, e.g. LoRA weights), so that a path that skips
 * or misplaces a norm weight or a bias shows in its logits. */
#ifndef LMF_TEST_RANDOM_MODEL_H
#define LMF_TEST_RANDOM_MODEL_H

#include "lmforge/model.h"
#include "test.h"

static inline lmf_model *test_random_model(const lmf_model_config *c, const lmf_backend *be,
                                           uint64_t seed, lmf_rng *r) {
    lmf_model *m;
    CHECK(lmf_model_create(&m, c, be) == 0);
    lmf_model_init_random(m, seed);
    lmf_rng_seed(r, seed + 1);
    for (int i = 0; i < m->n_params; i++)
        if (m->table[i].is_norm_or_bias)
            for (size_t k = 0; k < m->table[i].numel; k++)
                m->params[m->table[i].offset + k] += 0.2f * lmf_rng_normal(r);
    return m;
}

#endif
