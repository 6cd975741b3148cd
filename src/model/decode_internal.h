/* Internal to the inference step (decode.c, decode_fused.c): its per-step scratch. */
#ifndef LMF_DECODE_INTERNAL_H
#define LMF_DECODE_INTERNAL_H

#include "model_internal.h"

/* Slices of the model's step_block for one lmf_model_step call (n rows in all). */
typedef struct step_bufs {
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *h, *mid, *last, *lastn;
    uint16_t *xb; /* activations rounded to bf16 for the bf16 products */
    int32_t *ids, *pos;
    lmf_paged_seq *pseqs;
    void *extra; /* 64-byte aligned bytes the caller asked for beside the above */
} step_bufs;

/* Stores heads h0 .. h0 + nh - 1 of one token's new K and V rows (nh * D floats each, from k and
 * v) into slot `slot` of pool block `block`, layer l, converted to the pool's element type. */
void lmf_kv_write(lmf_kv_pool *kv, int l, int block, int slot, int h0, int nh, const float *k,
                  const float *v);
/* The attention kernels' view of the pool (for k, v = kbuf, vbuf + l * layer_bytes). */
lmf_paged_shape lmf_kv_paged_shape(const lmf_kv_pool *kv, const lmf_model_config *c);

/* Bytes of `extra` the fused step needs for n rows of n_seqs sequences on nt threads. */
size_t lmf_fused_step_bytes(const lmf_model *m, int n, int n_seqs, int nt);

/* The step for a few rows without adapters on the cpu backend (the decode case) in one
 * OpenMP parallel region: b is filled (embeddings in b->x, pseqs, pos), b->extra has
 * lmf_fused_step_bytes(m, n, n_seqs, nt). Same results as the step's general path. */
void lmf_fused_step(lmf_model *m, lmf_kv_pool *kv, const lmf_seq_step *seqs, int n_seqs, int n,
                    int nt, const step_bufs *b, float *logits);

#endif
