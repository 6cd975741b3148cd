/* Tensor parallelism for inference (Megatron-style): a model split across the N ranks of a
 * group, each rank holding one shard and running the ordinary decode step (lmf_model_step) on
 * it. Rank r of N holds
 *   - q/k/v (and their Qwen2 biases): the rows of its attention heads, whole heads only and
 *     whole GQA groups (heads H/N and KV heads KVH/N, so N must divide num_key_value_heads);
 *   - gate/up: a contiguous block of the MLP's rows (intermediate_size split as evenly as it
 *     goes: the first F mod N ranks get one row more);
 *   - o and down: the matching columns, so each gives a partial sum of the full product, summed
 *     over the ranks by one all-reduce after attention and one after the MLP (before the
 *     residual add);
 *   - the embedding and lm_head: a contiguous block of the vocabulary's rows (split like F). The
 *     embedding lookup is done by the rank owning each token (zeros elsewhere) and all-reduced;
 *     each rank computes its block of the logits and rank 0 gathers the full rows;
 *   - norms (and Qwen3's q/k norms): whole copies.
 * The shard's m->cfg is its own shape (heads, kv_heads, ffn and vocab of the shard), so every
 * loop of the step runs unchanged on it and its KV pool (lmf_kv_pool_create) holds only its KV
 * heads: 1/N of the whole model's cache per token. m->tp describes the split; lmf_model_vocab
 * gives the whole vocabulary, which is what token ids and the step's logits rows span.
 *
 * The model layer does not communicate itself: the shard calls the hooks of lmf_tp_comm,
 * which the caller provides (lmf_tp_comm_over in dist/ implements them over an lmf_comm).
 * Every rank of the group must run the same steps (sequences, tokens, block tables) in the same
 * order; only rank 0 receives logits (the others pass logits = NULL). */
#ifndef LMFORGE_TENSOR_PARALLEL_H
#define LMFORGE_TENSOR_PARALLEL_H

#include <stddef.h>
#include <stdint.h>

#include "lmforge/model.h"

/* Collectives over the group, called on every rank in the same order. Each returns 0 or a
 * negative LMF_E* code with a message. */
typedef struct lmf_tp_comm {
    void *user;
    /* buf (count floats) := the sum over the ranks of buf, bit-identical on every rank. */
    int (*allreduce_sum)(void *user, float *buf, size_t count);
    /* On rank 0, out := the ranks' parts back to back in rank order, rank r's part counts[r]
     * floats; out is ignored on the other ranks. */
    int (*gather)(void *user, const float *part, const size_t *counts, float *out);
} lmf_tp_comm;

/* Time spent in the collectives of the steps so far (lmf_tp_stats_reset zeroes it). */
typedef struct lmf_tp_stats {
    int64_t steps, rows;    /* lmf_model_step calls, and the tokens they ran */
    int64_t allreduces;     /* embedding, attention and MLP all-reduces */
    double allreduce_s;     /* seconds inside allreduce_sum */
    double allreduce_bytes; /* bytes all-reduced (each rank's buffer) */
    int64_t gathers;        /* lm_head gathers */
    double gather_s;        /* seconds inside gather */
} lmf_tp_stats;

typedef struct lmf_tp {
    int rank, size;
    lmf_model_config full;     /* the unsplit model's configuration */
    int heads_lo, kv_heads_lo; /* first attention head and KV head of this rank */
    int ffn_lo, vocab_lo;      /* first MLP row and vocabulary row of this rank */
    int *vocab_n;              /* [size] vocabulary rows of each rank */
    lmf_tp_comm comm;
    lmf_tp_stats stats;
    /* step scratch (tp_step.c) */
    float *part;     /* this rank's (n_out, vocab rows) block of the logits */
    float *gathered; /* rank 0: the ranks' blocks, rank-major */
    size_t *counts;  /* [size] floats of each rank's block this step */
    size_t part_cap, gathered_cap;
    int n_out; /* rows of logits this step */
    int err;   /* first collective failure inside the fused step's region */
} lmf_tp;

/* 0 when the model can be split over `size` ranks; otherwise an error naming
 * tensor_parallel_size and the head counts (size must divide num_key_value_heads, and
 * intermediate_size and vocab_size must give every rank at least one row). */
int lmf_tp_check(const lmf_model_config *c, int size);
/* The shard of rank `rank` of `size`: a new model (same backend) holding this rank's slices of
 * full's weights, with m->tp set (owned by the shard; lmf_model_free frees it) and comm's
 * hooks. full is only read; it may be freed afterwards. Refused for a model quantized for
 * QLoRA, and with an adapter (m->lora): merge it first (lmforge export). */
int lmf_tp_shard(lmf_model **out, const lmf_model *full, int rank, int size,
                 const lmf_tp_comm *comm);
/* The same straight from a Hugging Face folder (config.json + safetensors): only this rank's
 * slices are read from the mapped files and converted, so a rank never holds the whole model
 * (a .gguf file is loaded whole, then split). Errors name the folder and tensor. */
int lmf_tp_load(lmf_model **out, const char *dir, const lmf_backend *be, int rank, int size,
                const lmf_tp_comm *comm);
void lmf_tp_free(lmf_tp *tp);
void lmf_tp_stats_reset(lmf_model *m);

#endif
