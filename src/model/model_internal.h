/* Internal to src/model: helpers shared between the weight, forward/backward and LoRA files. */
#ifndef LMF_MODEL_INTERNAL_H
#define LMF_MODEL_INTERNAL_H

#include "lmforge/model.h"

/* (out, in) of a linear layer under config c. */
void lmf_linear_shape(const lmf_model_config *c, lmf_linear_id id, int *out, int *in);
void lmf_model_free_acts(lmf_model *m);
/* y = x W^T (+ bias) (+ scale * (xd A^T) B^T when the linear has an adapter, with the
 * adapter's (n, r) intermediate left in mid). xd is x, or x after dropout while training.
 * xb non-NULL: x already in bf16, and the base GEMM runs in bf16 on the cached weight copy.
 * y NULL: only the adapter's intermediate (checkpoint recompute of a layer's last linear). */
void lmf_linear_apply(const lmf_model *m, int l, lmf_linear_id id, const float *x,
                      const uint16_t *xb, const float *xd, float *y, int n, const float *bias,
                      float *mid);
/* compute.c: makes the bf16 weight copies current (bf16 mode, before a forward). */
void lmf_model_refresh_bf16(lmf_model *m);
void lmf_model_free_compute(lmf_model *m);
/* forward.c: recomputes layer l's saved activations from its kept input (checkpointing),
 * with the LoRA dropout masks the forward pass drew. */
void lmf_layer_recompute(lmf_model *m, int l);

static inline void weight_event(lmf_model *m, int layer, int event) {
    if (m->weight_hook) m->weight_hook(m->weight_hook_user, layer, event);
}

/* quantize.c: row r of the embedding table into out (hidden floats), dequantized when the base
 * is quantized. */
void lmf_model_embed_row(const lmf_model *m, int64_t r, float *out);
/* quantize.c: x (n, hidden) := the embeddings of ids: the backend's lookup, or the quantized
 * table's rows dequantized. */
void lmf_model_embed(const lmf_model *m, const int32_t *ids, int n, float *x);
/* quantize.c: scratch of at least `floats` for dx through a quantized matrix (NULL: no memory). */
float *lmf_model_qscratch(lmf_model *m, size_t floats);

#endif

/* Activations a forward pass keeps for backward, one set per layer; all slices of one
 * backend allocation sized for n = B*T tokens. */
/* With checkpointing every layer's pointers but x_in name one shared set, refilled by
 * lmf_layer_recompute before the layer's backward. */
typedef struct lmf_layer_acts {
    float *x_in;                   /* (n, C) residual stream entering the layer */
    float *xn1, *rstd1;            /* (n, C), (n): input RMSNorm */
    float *q, *k, *v;              /* (n, H*D), (n, KVH*D), (n, KVH*D): after bias, norm and RoPE */
    float *q_pre, *k_pre;          /* qk_norm: projections before the per-head norm */
    float *q_rstd, *k_rstd;        /* qk_norm: (n*H), (n*KVH) */
    float *att, *lse;              /* (n, H*D), (B, H, T) */
    float *x_mid;                  /* (n, C) residual after attention */
    float *xn2, *rstd2;            /* (n, C), (n) */
    float *gate, *up, *h;          /* (n, F) */
    float *lora_mid[LMF_N_LINEAR]; /* (n, r) = dropout(x) A^T */
    float *lora_mask[LMF_N_LINEAR]; /* (n, in) dropout mask scaled by 1/(1-p), when p > 0 */
} lmf_layer_acts;

struct lmf_acts {
    int n, B, T, lora_r, lora_dropout, bf16, ckpt;
    size_t bytes; /* size of block */
    unsigned lora_targets;
    int want_grad;
    int64_t n_targets;
    void *block;
    lmf_layer_acts *L;
    float *x_out;           /* (n, C) residual leaving the last layer */
    float *xnf, *rstdf;     /* final norm */
    float *logits, *losses; /* (n, V), (n); logits become dlogits when want_grad */
    int32_t *ids, *targets, *pos, *seg;
    lmf_rng *rng_at; /* (layers) LoRA dropout stream entering each layer (ckpt + dropout) */
    uint16_t *xb;    /* bf16 mode: (n, max(C, F, H*D)) a GEMM input in bf16 */
    uint16_t *dyb;   /* bf16 mode: an output gradient in bf16, or rows of dlogits */
    int head_rows;   /* rows of dlogits that fit in dyb */
    /* backward scratch */
    float *dx, *dxn, *dq, *dk, *dv, *datt, *dgate, *dup, *dh, *dmid, *scratch;
};

/* Index of the table entry whose slice starts at p (a parameter or gradient pointer). */
int lmf_param_index(const lmf_model *m, const float *base, const float *p);
