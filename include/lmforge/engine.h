/* The inference engine: continuous batching over a paged KV cache. Requests (token ids plus
 * sampling settings) are submitted from any thread; one engine thread calls lmf_engine_step,
 * which admits waiting requests while KV blocks allow, mixes chunked prefill (a token budget
 * per step) with one-token decodes of running requests in one batched model step, samples,
 * finishes requests at EOS / stop token / max_tokens and frees their blocks at once, reuses
 * cached prefix blocks, and preempts (by recompute) the newest request when blocks run out.
 * Results come back through per-request callbacks, called on the engine thread. */
#ifndef LMFORGE_ENGINE_H
#define LMFORGE_ENGINE_H

#include <pthread.h>
#include <stdint.h>

#include "lmforge/kv_blocks.h"
#include "lmforge/model.h"
#include "lmforge/sampling.h"

typedef enum lmf_finish {
    LMF_FINISH_NONE,
    LMF_FINISH_STOP,      /* eos or a stop token */
    LMF_FINISH_LENGTH,    /* max_tokens, or the context is full */
    LMF_FINISH_CANCELLED, /* the client went away */
    LMF_FINISH_ERROR
} lmf_finish;

typedef struct lmf_request lmf_request;
/* Called for every generated token; return non-zero to stop the request (e.g. a stop string
 * matched in the decoded text): it then finishes with LMF_FINISH_STOP. */
typedef int (*lmf_token_cb)(lmf_request *r, const lmf_sample_result *tok, void *user);
/* Called once when the request ends; the engine frees the request after it returns. */
typedef void (*lmf_finish_cb)(lmf_request *r, lmf_finish why, void *user);

typedef struct lmf_request_params {
    const int32_t *prompt;
    int n_prompt;
    int max_tokens; /* > 0 */
    lmf_sampling_params sampling;
    uint64_t seed; /* used when has_seed */
    int has_seed;
    const int32_t *stop_ids; /* tokens that end the request (eos is added by the engine) */
    int n_stop_ids;
    int ignore_eos;
    const lmf_lora *lora; /* the request's adapter (borrowed); NULL: the model's own m->lora */
    lmf_token_cb on_token;
    lmf_finish_cb on_finish;
    /* Called after on_token, once per step that gave the request tokens, at the start of the
     * next model step (inside its work: lmf_model's step_hook) or at once when no step
     * follows: where to wake a thread that waits for the request's tokens. NULL: none. */
    void (*on_wake)(lmf_request *r, void *user);
    void *user;
} lmf_request_params;

typedef struct lmf_engine_config {
    /* Element type of the KV pool (LMF_KV_F32). */
    lmf_kv_dtype kv_dtype;
    int block_size;       /* tokens per KV block (16) */
    int n_blocks;         /* KV pool size: bounds concurrency */
    int max_batch_tokens; /* per-step token budget (prefill chunks + decodes) */
    int max_running;      /* sequences decoding together */
    int max_waiting;      /* queue bound: lmf_engine_submit returns > 0 ("try later") past it */
    int prefix_caching;   /* reuse full blocks of identical prefixes */
    /* The model step the engine runs; NULL: lmf_model_step. Rank 0 of a tensor-parallel group
     * passes lmf_tp_group_step with step_user = the group (tp_group.h). */
    int (*step)(void *user, lmf_model *m, lmf_kv_pool *kv, const lmf_seq_step *seqs, int n_seqs,
                float *logits);
    void *step_user;
} lmf_engine_config;

typedef struct lmf_engine_stats {
    int running, waiting;
    int blocks_total, blocks_used;
    int64_t prompt_tokens, generation_tokens, prefix_hit_tokens, preemptions, requests_done;
    int64_t block_lookups, block_hits;
} lmf_engine_stats;

typedef struct lmf_engine lmf_engine;

void lmf_engine_config_defaults(lmf_engine_config *c);
/* The engine borrows the model (and its LoRA, if any) and owns the KV pool. */
int lmf_engine_create(lmf_engine **out, lmf_model *m, const lmf_engine_config *c);
void lmf_engine_free(lmf_engine *e);
/* Thread-safe. 0 and *id on success; 1 when the waiting queue is full (HTTP 429);
 * negative with a message naming the field for an invalid request. */
int lmf_engine_submit(lmf_engine *e, const lmf_request_params *p, uint64_t *id);
/* Thread-safe: the request ends with LMF_FINISH_CANCELLED at the next step. */
void lmf_engine_cancel(lmf_engine *e, uint64_t id);
/* One scheduling iteration (engine thread only). Returns the number of requests still active
 * (running + waiting), or a negative error. */
int lmf_engine_step(lmf_engine *e);
/* Blocks until a request is submitted or timeout_ms passes (for an idle engine thread). */
void lmf_engine_wait(lmf_engine *e, int timeout_ms);
void lmf_engine_stats_get(lmf_engine *e, lmf_engine_stats *s);

/* Accessors for callbacks. */
uint64_t lmf_request_id(const lmf_request *r);
const int32_t *lmf_request_output(const lmf_request *r, int *n);
int lmf_request_prompt_tokens(const lmf_request *r);

#endif
