/* Token sampling on small hand-worked distributions: greedy and ties, log-probabilities,
 * top-k/top-p/min-p/temperature frequencies over many draws against the renormalised
 * probabilities computed by hand, penalties, per-request seeded reproducibility. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/sampling.h"
#include "test.h"

static lmf_sampling_work w;

static int32_t pick(const float *z, int V, const lmf_sampling_params *p, const int32_t *pr, int np,
                    const int32_t *out, int no, lmf_rng *rng) {
    lmf_sample_result r;
    if (lmf_sample(z, V, p, pr, np, out, no, rng, &w, &r) != 0) {
        test_failed++; /* counted once per failing draw, not once per draw */
        return -1;
    }
    return r.token;
}

/* Frequency of each token over n draws. */
static void freqs(const float *z, const lmf_sampling_params *p, double *f, int n) {
    lmf_rng rng;
    lmf_rng_seed(&rng, 123);
    for (int i = 0; i < 4; i++) f[i] = 0;
    for (int i = 0; i < n; i++) {
        int32_t t = pick(z, 4, p, NULL, 0, NULL, 0, &rng);
        if (t >= 0) f[t] += 1.0 / n;
    }
}

int main(void) {
    lmf_sampling_params p;
    lmf_rng rng;
    lmf_rng_seed(&rng, 1);
    CHECK(lmf_sampling_work_init(&w, 4) == 0);
    lmf_sampling_defaults(&p);
    p.temperature = 0;
    float a[4] = {1, 3, 2, -1}, ties[4] = {2, 2, 1, 0};
    CHECK(pick(a, 4, &p, NULL, 0, NULL, 0, &rng) == 1);
    CHECK(pick(ties, 4, &p, NULL, 0, NULL, 0, &rng) == 0);
    lmf_sample_result r;
    p.top_logprobs = 3;
    CHECK(lmf_sample(a, 4, &p, NULL, 0, NULL, 0, &rng, &w, &r) == 0);
    double lse = log(exp(1) + exp(3) + exp(2) + exp(-1));
    CHECK_NEAR(r.logprob, 3 - lse, 1e-6);
    CHECK(r.n_top == 3 && r.top_tokens[0] == 1 && r.top_tokens[1] == 2 && r.top_tokens[2] == 0);
    CHECK_NEAR(r.top_logprobs[2], 1 - lse, 1e-6);

    /* p = [0.5, 0.3, 0.15, 0.05] */
    float z[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    double f[4];
    enum { N = 40000 };
    lmf_sampling_defaults(&p);
    freqs(z, &p, f, N);
    CHECK(fabs(f[0] - 0.5) < 0.01 && fabs(f[1] - 0.3) < 0.01 && fabs(f[3] - 0.05) < 0.005);
    p.top_p = 0.7f; /* keeps {0, 1}: 0.625 / 0.375 */
    freqs(z, &p, f, N);
    CHECK(fabs(f[0] - 0.625) < 0.01 && f[2] == 0 && f[3] == 0);
    lmf_sampling_defaults(&p);
    p.top_k = 3; /* [0.5, 0.3, 0.15] / 0.95 */
    freqs(z, &p, f, N);
    CHECK(fabs(f[0] - 0.5 / 0.95) < 0.01 && fabs(f[2] - 0.15 / 0.95) < 0.01 && f[3] == 0);
    lmf_sampling_defaults(&p);
    p.min_p = 0.5f; /* p >= 0.25 -> {0, 1} */
    freqs(z, &p, f, N);
    CHECK(fabs(f[0] - 0.625) < 0.01 && f[2] == 0);
    lmf_sampling_defaults(&p);
    p.temperature = 0.5f; /* p^2 renormalised: 0.25 / 0.365 */
    freqs(z, &p, f, N);
    CHECK(fabs(f[0] - 0.25 / 0.365) < 0.01 && fabs(f[3] - 0.0025 / 0.365) < 0.003);

    /* Penalties, greedy so the effect is exact. */
    lmf_sampling_defaults(&p);
    p.temperature = 0;
    float b[3] = {2, -1, 0.5f};
    int32_t prompt[1] = {1}, out[2] = {0, 0};
    lmf_sampling_work_free(&w);
    lmf_sampling_work_init(&w, 3);
    p.repetition_penalty = 2; /* 2 -> 1 (in output), -1 -> -2 (in prompt), 0.5 stays */
    CHECK(pick(b, 3, &p, prompt, 1, out, 1, &rng) == 0);
    p.repetition_penalty = 2.5f; /* 2 -> 0.8 still wins over 0.5 */
    CHECK(pick(b, 3, &p, prompt, 1, out, 1, &rng) == 0);
    p.repetition_penalty = 5; /* 2 -> 0.4 < 0.5 */
    CHECK(pick(b, 3, &p, prompt, 1, out, 1, &rng) == 2);
    p.repetition_penalty = 1, p.presence_penalty = 1,
    p.frequency_penalty = 0.5f; /* 2 - 1 - 1 = 0 */
    CHECK(pick(b, 3, &p, prompt, 1, out, 2, &rng) == 2);
    p.presence_penalty = 0.4f, p.frequency_penalty = 0.5f; /* 2 - 0.4 - 1 = 0.6 */
    CHECK(pick(b, 3, &p, prompt, 1, out, 2, &rng) == 0);
    CHECK(pick(b, 3, &p, prompt, 1, NULL, 0, &rng) == 0); /* counts were reset */

    /* Seeded reproducibility whatever happened before. */
    lmf_sampling_work_free(&w);
    lmf_sampling_work_init(&w, 4);
    lmf_sampling_defaults(&p);
    lmf_rng r1, r2, r3;
    lmf_rng_seed(&r1, 77), lmf_rng_seed(&r2, 77), lmf_rng_seed(&r3, 78);
    int same = 1, differ = 0;
    for (int i = 0; i < 50; i++) {
        int32_t x = pick(z, 4, &p, NULL, 0, NULL, 0, &r1),
                y = pick(z, 4, &p, NULL, 0, NULL, 0, &r2);
        same &= x == y;
        differ |= x != pick(z, 4, &p, NULL, 0, NULL, 0, &r3);
    }
    CHECK(same && differ);

    lmf_sampling_defaults(&p);
    p.temperature = 3;
    CHECK(lmf_sampling_validate(&p) == LMF_EINVAL && strstr(lmf_last_error(), "temperature"));
    lmf_sampling_defaults(&p);
    p.top_p = 0;
    CHECK(lmf_sampling_validate(&p) == LMF_EINVAL && strstr(lmf_last_error(), "top_p"));
    lmf_sampling_defaults(&p);
    p.top_logprobs = 21;
    CHECK(lmf_sampling_validate(&p) == LMF_EINVAL && strstr(lmf_last_error(), "top_logprobs"));
    lmf_sampling_defaults(&p);
    CHECK(lmf_sampling_validate(&p) == 0);
    lmf_sampling_work_free(&w);
    return test_summary("test_sampling");
}
