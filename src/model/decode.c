/* Inference step over a paged KV cache: prefill chunks and single-token decodes of many
 * sequences batched together. The same maths as forward.c (tested equal to it), without
 * saving activations, reading past keys and values from the cache. */
#include <math.h>
#include <string.h>

#include <omp.h>

#include "decode_internal.h"
#include "tp_internal.h"
#include "lmforge/decode_kernels.h"
#include "lmforge/quant.h"

/* Up to this many rows a step's f32 products use the streaming matvec (each weight read once,
 * the decode case); past it the GEMM library's blocking wins: per core, our 4 x 4 f32 tiles do
 * ~23 GMAC/s against the library's 25-45 for 4 to 64 rows (L2-resident weights), and from ~8
 * rows a step is bound by those MACs rather than by the weights' bytes. bf16 weights always
 * use ours (~80 GMAC/s a core with vdpbf16ps). */
enum { MATVEC_MAX_ROWS = 8 };
/* Steps without adapters on the cpu backend, of any size, run as one parallel region with
 * work stealing (decode_fused.c): unlike the ~90 parallel regions a step of the general path,
 * it does not stall each time a thread is descheduled on a shared machine. Its f32 products of
 * 24 rows and more use a transposed-input tile (lmf_matmul_f32_xt, 37-47 GMAC/s a core on
 * 32-96 rows, about the library's) and those of fewer the 4 x 4 tiles; under load the served
 * throughput at 8-32 clients was 1.3-2x the general path's (docs/serving.md). */

/* A layer's part of a block: its values, then with INT8 its scales, each 64-byte aligned. */
static size_t kv_layer_bytes(const lmf_model_config *c, int block_size, lmf_kv_dtype t,
                             size_t *scale_off) {
    size_t rows = (size_t)block_size * c->kv_heads,
           vals = (rows * c->head_dim * lmf_kv_dtype_size(t) + 63) & ~(size_t)63;
    if (scale_off) *scale_off = t == LMF_KV_INT8 ? vals : 0;
    return vals + (t == LMF_KV_INT8 ? (rows * sizeof(float) + 63) & ~(size_t)63 : 0);
}

size_t lmf_kv_bytes_per_block(const lmf_model_config *c, int block_size, lmf_kv_dtype t) {
    return 2 * (size_t)c->layers * kv_layer_bytes(c, block_size, t, NULL);
}

int lmf_kv_pool_create(lmf_kv_pool *p, const lmf_model *m, int block_size, int n_blocks) {
    return lmf_kv_pool_create_dtype(p, m, block_size, n_blocks, LMF_KV_F32);
}

lmf_kv_dtype lmf_kv_dtype_auto(const lmf_model *m) {
    return m && m->infer_bf16 && !m->quantized ? LMF_KV_BF16 : LMF_KV_F32;
}

int lmf_kv_pool_create_dtype(lmf_kv_pool *p, const lmf_model *m, int block_size, int n_blocks,
                             lmf_kv_dtype t) {
    memset(p, 0, sizeof *p);
    if (block_size <= 0 || n_blocks <= 0)
        return lmf_errorf(LMF_EINVAL,
                          "kv cache: block_size and the number of blocks must be positive");
    if ((unsigned)t >= LMF_KV_DTYPE_COUNT)
        return lmf_errorf(LMF_EINVAL, "kv cache: unknown element type %d", (int)t);
    p->block_size = block_size, p->n_blocks = n_blocks, p->layers = m->cfg.layers;
    p->kv_heads = m->cfg.kv_heads, p->kv_dim = m->cfg.kv_heads * m->cfg.head_dim, p->dtype = t;
    p->layer_bytes = kv_layer_bytes(&m->cfg, block_size, t, &p->scale_off);
    p->block_bytes = p->layer_bytes * p->layers;
    p->be = m->be;
    size_t bytes = p->block_bytes * n_blocks;
    p->kbuf = m->be->alloc(bytes);
    p->vbuf = p->kbuf ? m->be->alloc(bytes) : NULL;
    if (!p->vbuf) {
        lmf_kv_pool_free(p);
        return lmf_errorf(LMF_ENOMEM, "kv cache: cannot allocate 2 x %zu bytes for %d blocks",
                          bytes, n_blocks);
    }
    return 0;
}

void lmf_kv_write(lmf_kv_pool *kv, int l, int block, int slot, int h0, int nh, const float *k,
                  const float *v) {
    int D = kv->kv_dim / kv->kv_heads;
    size_t off = (size_t)block * kv->block_bytes + (size_t)l * kv->layer_bytes,
           row = (size_t)slot * kv->kv_heads + h0,
           vals = off + row * D * lmf_kv_dtype_size(kv->dtype),
           scales = off + kv->scale_off + row * sizeof(float);
    int q8 = kv->dtype == LMF_KV_INT8;
    lmf_kv_store_rows(kv->dtype, kv->kbuf + vals, q8 ? (float *)(kv->kbuf + scales) : NULL, k, nh,
                      D);
    lmf_kv_store_rows(kv->dtype, kv->vbuf + vals, q8 ? (float *)(kv->vbuf + scales) : NULL, v, nh,
                      D);
}

void lmf_kv_pool_free(lmf_kv_pool *p) {
    if (p->kbuf) p->be->free(p->kbuf);
    if (p->vbuf) p->be->free(p->vbuf);
    memset(p, 0, sizeof *p);
}

int lmf_model_set_infer_dtype(lmf_model *m, lmf_dtype t) {
    if (t != LMF_F32 && t != LMF_BF16)
        return lmf_errorf(LMF_EUNSUPPORTED, "inference dtype %s: expected F32 or BF16",
                          lmf_dtype_name(t));
    if (m->quantized && t != LMF_F32)
        return lmf_errorf(LMF_EINVAL,
                          "inference dtype %s: the model's base is quantized (%s); it "
                          "infers with those rows",
                          lmf_dtype_name(t), lmf_qtype_name((lmf_qtype)m->qtype));
    if (m->infer_bf16) m->be->free(m->infer_bf16);
    m->infer_bf16 = NULL;
    if (t == LMF_F32) return 0;
    if (!(m->infer_bf16 = m->be->alloc(sizeof(uint16_t) * m->numel)))
        return lmf_errorf(LMF_ENOMEM, "model: cannot allocate %zu bytes for the bf16 weights",
                          sizeof(uint16_t) * m->numel);
    lmf_convert_from_f32(m->infer_bf16, LMF_BF16, m->params, m->numel);
    return 0;
}

static const lmf_lora *seq_lora(const lmf_model *m, const lmf_seq_step *s) {
    return s->lora ? s->lora : m->lora;
}

static int step_buffers(lmf_model *m, const lmf_seq_step *seqs, int n, int n_seqs, size_t extra,
                        step_bufs *b) {
    const lmf_model_config *c = &m->cfg;
    size_t C = c->hidden, F = c->ffn, QD = (size_t)c->heads * c->head_dim,
           KD = (size_t)c->kv_heads * c->head_dim, r = 1;
    for (int i = 0; i < n_seqs; i++) {
        const lmf_lora *lo = seq_lora(m, &seqs[i]);
        if (lo && (size_t)lo->r > r) r = lo->r;
    }
    size_t widest = C > F ? C : F;
    widest = widest > QD ? widest : QD;
    size_t sizes[] = {n * C,
                      n * C,
                      n * QD,
                      n * KD,
                      n * KD,
                      n * QD,
                      n * F,
                      n * F,
                      n * F,
                      n * r,
                      n_seqs * C,
                      n_seqs * C,
                      (n * widest + 1) / 2};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        total += (sizes[i] * 4 + 63) & ~(size_t)63;
    total += 2 * (((size_t)n * 4 + 63) & ~(size_t)63) +
             ((sizeof(lmf_paged_seq) * n_seqs + 63) & ~(size_t)63) + extra + 64;
    if (total > m->step_bytes) {
        if (m->step_block) m->be->free(m->step_block);
        m->step_block = m->be->alloc(total);
        m->step_bytes = m->step_block ? total : 0;
        if (!m->step_block)
            return lmf_errorf(LMF_ENOMEM, "model: cannot allocate %zu bytes of step scratch",
                              total);
    }
    uint8_t *p = m->step_block;
    float *xb = NULL, **fields[] = {&b->x,  &b->xn, &b->q,   &b->k,    &b->v,     &b->att, &b->gate,
                                    &b->up, &b->h,  &b->mid, &b->last, &b->lastn, &xb};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        *fields[i] = (float *)p;
        p += (sizes[i] * 4 + 63) & ~(size_t)63;
    }
    b->xb = (uint16_t *)xb;
    b->ids = (int32_t *)p;
    p += ((size_t)n * 4 + 63) & ~(size_t)63;
    b->pos = (int32_t *)p;
    p += ((size_t)n * 4 + 63) & ~(size_t)63;
    b->pseqs = (lmf_paged_seq *)p;
    p += (sizeof(lmf_paged_seq) * n_seqs + 63) & ~(size_t)63;
    b->extra = p;
    return 0;
}

static int validate(const lmf_model *m, const lmf_kv_pool *kv, const lmf_seq_step *seqs, int n_seqs,
                    int *n_total) {
    if (kv->layers != m->cfg.layers || kv->kv_dim != m->cfg.kv_heads * m->cfg.head_dim)
        return lmf_errorf(LMF_EINVAL, "kv cache: made for another model shape");
    *n_total = 0;
    for (int i = 0; i < n_seqs; i++) {
        const lmf_seq_step *s = &seqs[i];
        if (s->n_new <= 0 || s->start < 0)
            return lmf_errorf(LMF_EINVAL, "step: sequence %d has %d new tokens at position %d", i,
                              s->n_new, s->start);
        if ((int64_t)s->n_table * kv->block_size < (int64_t)s->start + s->n_new)
            return lmf_errorf(LMF_EINVAL,
                              "step: sequence %d: block table of %d blocks cannot hold %d tokens",
                              i, s->n_table, s->start + s->n_new);
        for (int b = 0; b < (s->start + s->n_new + kv->block_size - 1) / kv->block_size; b++)
            if (s->table[b] < 0 || s->table[b] >= kv->n_blocks)
                return lmf_errorf(LMF_ERANGE, "step: sequence %d: block %d outside the pool", i,
                                  s->table[b]);
        for (int t = 0; t < s->n_new; t++)
            if (s->tokens[t] < 0 || s->tokens[t] >= lmf_model_vocab(m))
                return lmf_errorf(LMF_ERANGE, "step: sequence %d: token %d outside the vocabulary",
                                  i, s->tokens[t]);
        *n_total += s->n_new;
    }
    return 0;
}

lmf_paged_shape lmf_kv_paged_shape(const lmf_kv_pool *kv, const lmf_model_config *c) {
    return (lmf_paged_shape){c->heads,       c->kv_heads,     c->head_dim,
                             kv->block_size, kv->block_bytes, 1.0f / sqrtf((float)c->head_dim),
                             kv->dtype,      kv->scale_off};
}

/* Stores this layer's new K and V rows into their cache slots (converted to the cache's type). */
static void write_cache(lmf_kv_pool *kv, int l, const lmf_seq_step *seqs, int n_seqs,
                        const float *k, const float *v) {
    size_t row = 0;
    for (int i = 0; i < n_seqs; i++)
        for (int t = 0; t < seqs[i].n_new; t++, row++) {
            int p = seqs[i].start + t;
            lmf_kv_write(kv, l, seqs[i].table[p / kv->block_size], p % kv->block_size, 0,
                         kv->kv_heads, k + row * kv->kv_dim, v + row * kv->kv_dim);
        }
}

/* y = x W^T (n rows) with the weights the model infers with: the quantized rows Q of a
 * quantized model, the bf16 copy, or f32 through the streaming matvec for a few rows and the
 * GEMM library for many (the ref backend: its GEMM). */
static void base_product(const lmf_model *m, const float *W, const void *Q, const float *x,
                         float *y, int n, int out, int in, uint16_t *xb) {
    int fast = m->be == lmf_backend_cpu();
    if (m->quantized) {
        if (fast)
            lmf_qmatmul(y, x, (lmf_qtype)m->qtype, Q, n, out, in);
        else
            lmf_qmatmul_ref(y, x, (lmf_qtype)m->qtype, Q, n, out, in);
    } else if (m->infer_bf16) {
        const uint16_t *Wb = m->infer_bf16 + (W - m->params);
        if (fast)
            lmf_matvec_bf16(y, x, Wb, n, out, in, xb);
        else
            lmf_matvec_bf16_ref(y, x, Wb, n, out, in);
    } else if (fast && n <= MATVEC_MAX_ROWS) {
        lmf_matvec_f32(y, x, W, n, out, in);
    } else {
        m->be->gemm(0, 1, n, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
    }
}

/* One linear of layer l for all rows: the base product, the bias, then each run of consecutive
 * sequences sharing an adapter gets that adapter's scale * (x A^T) B^T on its rows. */
static void step_linear(const lmf_model *m, int l, lmf_linear_id id, const float *x, float *y,
                        const float *bias, const lmf_seq_step *seqs, int n_seqs,
                        const step_bufs *b) {
    const lmf_backend *be = m->be;
    int out, in, n = 0;
    lmf_linear_shape(&m->cfg, id, &out, &in);
    for (int i = 0; i < n_seqs; i++) n += seqs[i].n_new;
    base_product(m, m->w.layers[l].w[id], m->qlin ? m->qlin[l * LMF_N_LINEAR + id] : NULL, x, y, n,
                 out, in, b->xb);
    if (bias) be->bias_fwd(y, bias, n, out);
    for (int i = 0; i < n_seqs;) {
        const lmf_lora *lo = seq_lora(m, &seqs[i]);
        int j = i + 1, r0 = b->pseqs[i].q_row, rows = seqs[i].n_new;
        while (j < n_seqs && seq_lora(m, &seqs[j]) == lo) rows += seqs[j++].n_new;
        i = j;
        if (!lo || !(lo->targets & (1u << id))) continue;
        int k = l * LMF_N_LINEAR + id;
        be->gemm(0, 1, rows, lo->r, in, 1.0f, x + (size_t)r0 * in, in, lo->A[k], in, 0.0f, b->mid,
                 lo->r);
        be->gemm(0, 1, rows, out, lo->r, lo->scale, b->mid, lo->r, lo->B[k], lo->r, 1.0f,
                 y + (size_t)r0 * out, out);
    }
}

int lmf_model_step(lmf_model *m, lmf_kv_pool *kv, const lmf_seq_step *seqs, int n_seqs,
                   float *logits) {
    const lmf_model_config *c = &m->cfg;
    const lmf_backend *be = m->be;
    int n = 0, rc = validate(m, kv, seqs, n_seqs, &n);
    if (rc) return rc;
    /* The one-region path: few rows, the cpu kernels, no adapter on any row. */
    int fused = be == lmf_backend_cpu(), nt = omp_get_max_threads();
    for (int i = 0; i < n_seqs && fused; i++) fused = !seq_lora(m, &seqs[i]);
    /* Quantized weights: past a few rows the general path's dequantized panels and GEMM beat
     * decoding every block once per 4 rows (prefill). */
    if (m->quantized && n > 2 * MATVEC_MAX_ROWS) fused = 0;
    step_bufs b = {0};
    size_t extra = fused ? lmf_fused_step_bytes(m, n, n_seqs, nt) : 0;
    if ((rc = step_buffers(m, seqs, n, n_seqs, extra, &b))) return rc;
    int C = c->hidden, H = c->heads, KVH = c->kv_heads, D = c->head_dim, row = 0;
    for (int i = 0; i < n_seqs; i++) {
        b.pseqs[i] = (lmf_paged_seq){row, seqs[i].n_new, seqs[i].start, seqs[i].table};
        for (int t = 0; t < seqs[i].n_new; t++, row++) {
            b.ids[row] = seqs[i].tokens[t];
            b.pos[row] = seqs[i].start + t;
        }
    }
    lmf_paged_shape ps = lmf_kv_paged_shape(kv, &m->cfg);
    /* A tensor-parallel shard's lm_head fills its vocabulary block, gathered at the end. */
    float *head_out = logits;
    if (m->tp && (rc = lmf_tp_step_begin(m, seqs, n_seqs, &head_out))) return rc;
    void (*attn)(float *, const float *, const void *, const void *, const lmf_paged_seq *, int,
                 const lmf_paged_shape *) =
        be == lmf_backend_cpu() ? lmf_attn_paged_fast : be->attn_paged;
    if (!m->tp)
        lmf_model_embed(m, b.ids, n, b.x);
    else if ((rc = lmf_tp_embed(m, b.x, b.ids, n)))
        return rc;
    if (fused) {
        lmf_fused_step(m, kv, seqs, n_seqs, n, nt, &b, head_out); /* calls step_hook */
        return m->tp ? lmf_tp_step_end(m, logits) : 0;
    }
    if (m->step_hook) m->step_hook(m->step_hook_arg);
    for (int l = 0; l < c->layers; l++) {
        const lmf_layer_weights *w = &m->w.layers[l];
        be->rmsnorm_fwd(b.xn, NULL, b.x, w->attn_norm, n, C, c->rms_eps);
        step_linear(m, l, LMF_Q, b.xn, b.q, w->bq, seqs, n_seqs, &b);
        step_linear(m, l, LMF_K, b.xn, b.k, w->bk, seqs, n_seqs, &b);
        step_linear(m, l, LMF_V, b.xn, b.v, w->bv, seqs, n_seqs, &b);
        if (c->qk_norm) {
            be->rmsnorm_fwd(b.q, NULL, b.q, w->q_norm, n * H, D, c->rms_eps);
            be->rmsnorm_fwd(b.k, NULL, b.k, w->k_norm, n * KVH, D, c->rms_eps);
        }
        be->rope(b.q, H * D, b.pos, m->inv_freq, n, H, D, 0);
        be->rope(b.k, KVH * D, b.pos, m->inv_freq, n, KVH, D, 0);
        write_cache(kv, l, seqs, n_seqs, b.k, b.v);
        size_t layer_off = (size_t)l * kv->layer_bytes;
        attn(b.att, b.q, kv->kbuf + layer_off, kv->vbuf + layer_off, b.pseqs, n_seqs, &ps);
        step_linear(m, l, LMF_O, b.att, b.xn, NULL, seqs, n_seqs, &b);
        if (m->tp && (rc = lmf_tp_allreduce(m, b.xn, (size_t)n * C))) return rc;
        be->add(b.x, b.xn, (size_t)n * C);
        be->rmsnorm_fwd(b.xn, NULL, b.x, w->mlp_norm, n, C, c->rms_eps);
        step_linear(m, l, LMF_GATE, b.xn, b.gate, NULL, seqs, n_seqs, &b);
        step_linear(m, l, LMF_UP, b.xn, b.up, NULL, seqs, n_seqs, &b);
        be->swiglu_fwd(b.h, b.gate, b.up, (size_t)n * c->ffn);
        step_linear(m, l, LMF_DOWN, b.h, b.xn, NULL, seqs, n_seqs, &b);
        if (m->tp && (rc = lmf_tp_allreduce(m, b.xn, (size_t)n * C))) return rc;
        be->add(b.x, b.xn, (size_t)n * C);
    }
    /* Only the rows that want logits go through the final norm and lm_head. */
    int n_out = 0;
    row = 0;
    for (int i = 0; i < n_seqs; i++) {
        row += seqs[i].n_new;
        if (seqs[i].want_logits)
            be->copy(b.last + (size_t)n_out++ * C, b.x + (size_t)(row - 1) * C, sizeof(float) * C);
    }
    if (n_out && head_out) {
        be->rmsnorm_fwd(b.lastn, NULL, b.last, m->w.final_norm, n_out, C, c->rms_eps);
        base_product(m, m->w.lm_head, m->qhead, b.lastn, head_out, n_out, c->vocab, C, b.xb);
    }
    return m->tp ? lmf_tp_step_end(m, logits) : 0;
}
