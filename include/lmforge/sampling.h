/* Choosing the next token from logits: greedy or random with temperature, top-k, top-p,
 * min-p and repetition / presence / frequency penalties (vLLM's semantics and order:
 * penalties, temperature, top-k, top-p, min-p), plus the chosen token's log-probability and
 * the top alternatives for OpenAI's logprobs. Each request owns its RNG, so a seeded request
 * gets the same tokens whatever else is in the batch. */
#ifndef LMFORGE_SAMPLING_H
#define LMFORGE_SAMPLING_H

#include <stdint.h>

#include "lmforge/core.h"

#define LMF_MAX_TOP_LOGPROBS 20

typedef struct lmf_sampling_params {
    float temperature;        /* 0 = greedy */
    float top_p;              /* (0, 1]; 1 = off */
    int top_k;                /* 0 = off */
    float min_p;              /* [0, 1); 0 = off */
    float repetition_penalty; /* 1 = off; > 1 discourages tokens of prompt and output */
    float presence_penalty;   /* [-2, 2], on output tokens */
    float frequency_penalty;  /* [-2, 2], on output tokens, per occurrence */
    int top_logprobs;         /* 0..LMF_MAX_TOP_LOGPROBS alternatives to report */
} lmf_sampling_params;

void lmf_sampling_defaults(lmf_sampling_params *p);
/* Range checks; the message names the field ("temperature must be in [0, 2]"). */
int lmf_sampling_validate(const lmf_sampling_params *p);

typedef struct lmf_sample_result {
    int32_t token;
    float logprob; /* log softmax of the raw logits (before penalties and temperature) */
    int n_top;
    int32_t top_tokens[LMF_MAX_TOP_LOGPROBS];
    float top_logprobs[LMF_MAX_TOP_LOGPROBS];
} lmf_sample_result;

/* Scratch for one call: V floats + V ints + V ints. */
typedef struct lmf_sampling_work {
    int V;
    float *probs;
    int32_t *idx, *counts;
} lmf_sampling_work;
int lmf_sampling_work_init(lmf_sampling_work *w, int V);
void lmf_sampling_work_free(lmf_sampling_work *w);

/* Samples from logits (V values, left untouched). prompt/output are the sequence's tokens so
 * far (for penalties). */
int lmf_sample(const float *logits, int V, const lmf_sampling_params *p, const int32_t *prompt,
               int n_prompt, const int32_t *output, int n_output, lmf_rng *rng,
               lmf_sampling_work *w, lmf_sample_result *out);

#endif
