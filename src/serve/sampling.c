/* Next-token selection (see include/lmforge/sampling.h). */
#define _GNU_SOURCE /* qsort_r */
#include "lmforge/sampling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lmf_sampling_defaults(lmf_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

int lmf_sampling_validate(const lmf_sampling_params *p) {
    if (!(p->temperature >= 0 && p->temperature <= 2))
        return lmf_errorf(LMF_EINVAL, "temperature must be in [0, 2] (got %g)", p->temperature);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return lmf_errorf(LMF_EINVAL, "top_p must be in (0, 1] (got %g)", p->top_p);
    if (p->top_k < 0)
        return lmf_errorf(LMF_EINVAL, "top_k must be 0 (off) or positive (got %d)", p->top_k);
    if (!(p->min_p >= 0 && p->min_p < 1))
        return lmf_errorf(LMF_EINVAL, "min_p must be in [0, 1) (got %g)", p->min_p);
    if (!(p->repetition_penalty > 0 && p->repetition_penalty <= 10))
        return lmf_errorf(LMF_EINVAL, "repetition_penalty must be in (0, 10] (got %g)",
                          p->repetition_penalty);
    if (!(fabsf(p->presence_penalty) <= 2))
        return lmf_errorf(LMF_EINVAL, "presence_penalty must be in [-2, 2] (got %g)",
                          p->presence_penalty);
    if (!(fabsf(p->frequency_penalty) <= 2))
        return lmf_errorf(LMF_EINVAL, "frequency_penalty must be in [-2, 2] (got %g)",
                          p->frequency_penalty);
    if (p->top_logprobs < 0 || p->top_logprobs > LMF_MAX_TOP_LOGPROBS)
        return lmf_errorf(LMF_EINVAL, "top_logprobs must be in [0, %d] (got %d)",
                          LMF_MAX_TOP_LOGPROBS, p->top_logprobs);
    return 0;
}

int lmf_sampling_work_init(lmf_sampling_work *w, int V) {
    w->V = V;
    w->probs = malloc(sizeof(float) * (size_t)V);
    w->idx = malloc(sizeof(int32_t) * (size_t)V);
    w->counts = calloc((size_t)V, sizeof(int32_t));
    if (!w->probs || !w->idx || !w->counts) {
        lmf_sampling_work_free(w);
        return lmf_errorf(LMF_ENOMEM, "sampling: out of memory");
    }
    return 0;
}

void lmf_sampling_work_free(lmf_sampling_work *w) {
    free(w->probs), free(w->idx), free(w->counts);
    memset(w, 0, sizeof *w);
}

static int by_value_desc(const void *a, const void *b, void *key) {
    const float *v = key;
    float x = v[*(const int32_t *)a], y = v[*(const int32_t *)b];
    if (x != y) return x < y ? 1 : -1;
    return *(const int32_t *)a - *(const int32_t *)b; /* ties: lower id first */
}

/* Top-n ids of v by a partial selection (n is small). */
static int top_n(const float *v, int V, int n, int32_t *ids) {
    int k = 0;
    for (int i = 0; i < V; i++) {
        if (k == n && v[i] <= v[ids[k - 1]]) continue;
        int j = k < n ? k++ : n - 1;
        while (j > 0 && v[ids[j - 1]] < v[i]) ids[j] = ids[j - 1], j--;
        ids[j] = i;
    }
    return k;
}

int lmf_sample(const float *logits, int V, const lmf_sampling_params *p, const int32_t *prompt,
               int n_prompt, const int32_t *output, int n_output, lmf_rng *rng,
               lmf_sampling_work *w, lmf_sample_result *out) {
    if (w->V != V)
        return lmf_errorf(LMF_EINVAL, "sampling: scratch sized for %d tokens, logits have %d", w->V,
                          V);
    float *z = w->probs;
    memset(out, 0, sizeof *out);
    /* Raw log-softmax for the reported logprobs. */
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    float lse = mx + (float)log(sum);

    memcpy(z, logits, sizeof(float) * (size_t)V);
    int penalize =
        p->repetition_penalty != 1.0f || p->presence_penalty != 0 || p->frequency_penalty != 0;
    if (penalize) {
        for (int i = 0; i < n_output; i++)
            if (output[i] >= 0 && output[i] < V) w->counts[output[i]]++;
        if (p->repetition_penalty != 1.0f) {
            for (int i = 0; i < n_prompt; i++)
                if (prompt[i] >= 0 && prompt[i] < V && w->counts[prompt[i]] == 0)
                    w->counts[prompt[i]] = -1;
            for (int i = 0; i < V; i++)
                if (w->counts[i])
                    z[i] = z[i] > 0 ? z[i] / p->repetition_penalty : z[i] * p->repetition_penalty;
        }
        for (int i = 0; i < V; i++)
            if (w->counts[i] > 0)
                z[i] -= p->presence_penalty + p->frequency_penalty * (float)w->counts[i];
        for (int i = 0; i < n_output; i++)
            if (output[i] >= 0 && output[i] < V) w->counts[output[i]] = 0;
        for (int i = 0; i < n_prompt; i++)
            if (prompt[i] >= 0 && prompt[i] < V) w->counts[prompt[i]] = 0;
    }
    int32_t choice = 0;
    if (p->temperature == 0) {
        for (int i = 1; i < V; i++)
            if (z[i] > z[choice]) choice = i;
    } else {
        /* Candidates sorted by logit, cut by top-k, then softmax at the temperature. */
        int n = V;
        int32_t *ids = w->idx;
        if (p->top_k > 0 && p->top_k < V) {
            n = top_n(z, V, p->top_k, ids);
        } else {
            for (int i = 0; i < V; i++) ids[i] = i;
            qsort_r(ids, (size_t)V, sizeof *ids, by_value_desc, z);
        }
        float zmax = z[ids[0]];
        double total = 0;
        float *pr = malloc(sizeof(float) * (size_t)n);
        if (!pr) return lmf_errorf(LMF_ENOMEM, "sampling: out of memory");
        for (int i = 0; i < n; i++) total += (pr[i] = expf((z[ids[i]] - zmax) / p->temperature));
        /* top-p: the smallest prefix whose mass reaches top_p (at least one token). */
        int keep = n;
        if (p->top_p < 1) {
            double acc = 0;
            for (int i = 0; i < n; i++) {
                acc += pr[i] / total;
                if (acc >= p->top_p) {
                    keep = i + 1;
                    break;
                }
            }
        }
        /* min-p: drop tokens below min_p times the most likely one. */
        if (p->min_p > 0)
            while (keep > 1 && pr[keep - 1] < p->min_p * pr[0]) keep--;
        double kept = 0;
        for (int i = 0; i < keep; i++) kept += pr[i];
        double u = lmf_rng_uniform(rng) * kept, acc = 0;
        choice = ids[keep - 1];
        for (int i = 0; i < keep; i++) {
            acc += pr[i];
            if (u < acc) {
                choice = ids[i];
                break;
            }
        }
        free(pr);
    }
    out->token = choice;
    out->logprob = logits[choice] - lse;
    if (p->top_logprobs > 0) {
        out->n_top = top_n(logits, V, p->top_logprobs, out->top_tokens);
        for (int i = 0; i < out->n_top; i++)
            out->top_logprobs[i] = logits[out->top_tokens[i]] - lse;
    }
    return 0;
}
