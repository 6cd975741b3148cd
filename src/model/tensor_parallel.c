/* Tensor parallelism: splitting a whole model into one rank's shard (tensor_parallel.h). The
 * shard is an ordinary lmf_model of the rank's shape whose weights are slices of the whole
 * model's; the step-time collectives are in tp_step.c. */
#include "lmforge/tensor_parallel.h"

#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Rows [lo, lo + n) of rank r when `total` rows are split over `size` ranks as evenly as they
 * go (the first total mod size ranks get one more). */
static void split(int total, int size, int r, int *lo, int *n) {
    int base = total / size, extra = total % size;
    *lo = r * base + (r < extra ? r : extra);
    *n = base + (r < extra);
}

int lmf_tp_check(const lmf_model_config *c, int size) {
    if (size < 1)
        return lmf_errorf(LMF_EINVAL, "tensor_parallel_size %d: must be at least 1", size);
    if (c->kv_heads % size)
        return lmf_errorf(LMF_EINVAL,
                          "tensor_parallel_size %d must divide num_key_value_heads (%d; "
                          "num_attention_heads %d): each rank keeps whole KV heads with their "
                          "query heads",
                          size, c->kv_heads, c->heads);
    if (c->ffn < size || c->vocab < size)
        return lmf_errorf(LMF_EINVAL,
                          "tensor_parallel_size %d: intermediate_size (%d) and vocab_size (%d) "
                          "must give every rank at least one row",
                          size, c->ffn, c->vocab);
    return 0;
}

int lmf_model_vocab(const lmf_model *m) {
    return m->tp ? m->tp->full.vocab : m->cfg.vocab;
}

void lmf_tp_free(lmf_tp *tp) {
    if (!tp) return;
    free(tp->vocab_n);
    free(tp->part);
    free(tp->gathered);
    free(tp->counts);
    free(tp);
}

void lmf_tp_stats_reset(lmf_model *m) {
    if (m->tp) memset(&m->tp->stats, 0, sizeof m->tp->stats);
}

/* dst (rows, dcols) := columns [c0, c0 + dcols) of src (rows, scols), row-major. */
static void copy_cols(float *dst, const float *src, int rows, int scols, int c0, int dcols) {
    for (int i = 0; i < rows; i++)
        memcpy(dst + (size_t)i * dcols, src + (size_t)i * scols + c0, sizeof(float) * dcols);
}

/* dst := rows [r0, r0 + n) of src, each `cols` wide. */
static void copy_rows(float *dst, const float *src, int r0, int n, int cols) {
    memcpy(dst, src + (size_t)r0 * cols, sizeof(float) * (size_t)n * cols);
}

int lmf_tp_shard(lmf_model **out, const lmf_model *full, int rank, int size,
                 const lmf_tp_comm *comm) {
    *out = NULL;
    const lmf_model_config *c = &full->cfg;
    int rc = lmf_tp_check(c, size);
    if (rc) return rc;
    if (rank < 0 || rank >= size)
        return lmf_errorf(LMF_EINVAL, "tensor parallel: rank %d outside 0..%d", rank, size - 1);
    if (full->tp) return lmf_errorf(LMF_EINVAL, "tensor parallel: the model is a shard already");
    if (full->quantized)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "tensor parallel: a base quantized for QLoRA cannot be split");
    if (full->lora)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "tensor parallel: LoRA adapters are not split across ranks; merge the "
                          "adapter into the model first (lmforge export)");
    lmf_tp *tp = calloc(1, sizeof *tp);
    if (!tp || !(tp->vocab_n = calloc((size_t)size, sizeof *tp->vocab_n)) ||
        !(tp->counts = calloc((size_t)size, sizeof *tp->counts))) {
        lmf_tp_free(tp);
        return lmf_errorf(LMF_ENOMEM, "tensor parallel: out of memory");
    }
    tp->rank = rank, tp->size = size, tp->full = *c;
    if (comm) tp->comm = *comm;
    int D = c->head_dim, C = c->hidden, heads = c->heads / size, kvh = c->kv_heads / size, ffn,
        vocab, lo;
    tp->heads_lo = rank * heads, tp->kv_heads_lo = rank * kvh;
    split(c->ffn, size, rank, &tp->ffn_lo, &ffn);
    for (int r = 0; r < size; r++) split(c->vocab, size, r, &lo, &tp->vocab_n[r]);
    split(c->vocab, size, rank, &tp->vocab_lo, &vocab);
    lmf_model_config sc = *c;
    sc.heads = heads, sc.kv_heads = kvh, sc.ffn = ffn, sc.vocab = vocab;
    lmf_model *m = NULL;
    if ((rc = lmf_model_create(&m, &sc, full->be))) {
        lmf_tp_free(tp);
        return rc;
    }
    m->tp = tp;
    int q0 = tp->heads_lo * D, kv0 = tp->kv_heads_lo * D, QD = heads * D, KD = kvh * D;
    copy_rows(m->w.embed, full->w.embed, tp->vocab_lo, vocab, C);
    if (!c->tied) copy_rows(m->w.lm_head, full->w.lm_head, tp->vocab_lo, vocab, C);
    memcpy(m->w.final_norm, full->w.final_norm, sizeof(float) * C);
    for (int l = 0; l < c->layers; l++) {
        const lmf_layer_weights *f = &full->w.layers[l];
        lmf_layer_weights *s = &m->w.layers[l];
        memcpy(s->attn_norm, f->attn_norm, sizeof(float) * C);
        memcpy(s->mlp_norm, f->mlp_norm, sizeof(float) * C);
        copy_rows(s->w[LMF_Q], f->w[LMF_Q], q0, QD, C);
        copy_rows(s->w[LMF_K], f->w[LMF_K], kv0, KD, C);
        copy_rows(s->w[LMF_V], f->w[LMF_V], kv0, KD, C);
        copy_cols(s->w[LMF_O], f->w[LMF_O], C, c->heads * D, q0, QD);
        copy_rows(s->w[LMF_GATE], f->w[LMF_GATE], tp->ffn_lo, ffn, C);
        copy_rows(s->w[LMF_UP], f->w[LMF_UP], tp->ffn_lo, ffn, C);
        copy_cols(s->w[LMF_DOWN], f->w[LMF_DOWN], C, c->ffn, tp->ffn_lo, ffn);
        if (c->attn_bias) {
            memcpy(s->bq, f->bq + q0, sizeof(float) * QD);
            memcpy(s->bk, f->bk + kv0, sizeof(float) * KD);
            memcpy(s->bv, f->bv + kv0, sizeof(float) * KD);
        }
        if (c->qk_norm) {
            memcpy(s->q_norm, f->q_norm, sizeof(float) * D);
            memcpy(s->k_norm, f->k_norm, sizeof(float) * D);
        }
    }
    *out = m;
    return 0;
}
