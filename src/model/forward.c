/* Forward pass of the transformer over a batch, keeping the activations backward needs: all
 * of them, or with checkpointing each layer's input only (and the layer recompute backward
 * calls). In bf16 mode the linears' and lm_head's inputs go to bf16 once per GEMM input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/quant.h"
#include "model_internal.h"

void lmf_model_free_acts(lmf_model *m) {
    if (!m->acts) return;
    if (m->acts->block) m->be->free(m->acts->block);
    free(m->acts->L);
    free(m->acts->rng_at);
    free(m->acts);
    m->acts = NULL;
}

int lmf_param_index(const lmf_model *m, const float *base, const float *p) {
    size_t off = (size_t)(p - base);
    int lo = 0, hi = m->n_params - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (m->table[mid].offset == off) return mid;
        if (m->table[mid].offset < off)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* Carves every activation slice from one allocation: a first pass with base == NULL
 * measures, a second assigns. */
typedef struct carver {
    uint8_t *base;
    size_t used;
} carver;

static void *carve(carver *c, size_t bytes) {
    void *p = c->base ? c->base + c->used : NULL;
    c->used += (bytes + 63) & ~(size_t)63;
    return p;
}

/* With a->ckpt only layer 0 gets a full set of slices; the other layers get their input and
 * share layer 0's set. */
static void layout_acts(const lmf_model *m, lmf_acts *a, carver *cv) {
    const lmf_model_config *c = &m->cfg;
    size_t n = a->n, C = c->hidden, F = c->ffn, QD = (size_t)c->heads * c->head_dim,
           KD = (size_t)c->kv_heads * c->head_dim, f = sizeof(float);
    const lmf_lora *lo = m->lora;
    for (int l = 0; l < c->layers; l++) {
        lmf_layer_acts *L = &a->L[l];
        memset(L, 0, sizeof *L);
        if (a->ckpt && l > 0) {
            *L = a->L[0];
            L->x_in = carve(cv, n * C * f);
            continue;
        }
        L->x_in = carve(cv, n * C * f);
        L->xn1 = carve(cv, n * C * f);
        L->rstd1 = carve(cv, n * f);
        L->q = carve(cv, n * QD * f);
        L->k = carve(cv, n * KD * f);
        L->v = carve(cv, n * KD * f);
        if (c->qk_norm) {
            L->q_pre = carve(cv, n * QD * f);
            L->k_pre = carve(cv, n * KD * f);
            L->q_rstd = carve(cv, n * c->heads * f);
            L->k_rstd = carve(cv, n * c->kv_heads * f);
        }
        L->att = carve(cv, n * QD * f);
        L->lse = carve(cv, n * c->heads * f);
        L->x_mid = carve(cv, n * C * f);
        L->xn2 = carve(cv, n * C * f);
        L->rstd2 = carve(cv, n * f);
        L->gate = carve(cv, n * F * f);
        L->up = carve(cv, n * F * f);
        L->h = carve(cv, n * F * f);
        for (int id = 0; lo && id < LMF_N_LINEAR; id++) {
            if (!(lo->targets & (1u << id))) continue;
            int out, in;
            lmf_linear_shape(c, id, &out, &in);
            L->lora_mid[id] = carve(cv, n * lo->r * f);
            if (lo->dropout > 0) L->lora_mask[id] = carve(cv, n * in * f);
        }
    }
    size_t widest = C > F ? C : F;
    if (QD > widest) widest = QD;
    size_t scratch = widest;
    if (QD + KD > scratch) scratch = QD + KD; /* backward's per-head norm gradients */
    a->x_out = carve(cv, n * C * f);
    a->xnf = carve(cv, n * C * f);
    a->rstdf = carve(cv, n * f);
    a->logits = carve(cv, n * c->vocab * f);
    a->losses = carve(cv, n * f);
    a->ids = carve(cv, n * 4);
    a->targets = carve(cv, n * 4);
    a->pos = carve(cv, n * 4);
    a->seg = carve(cv, n * 4);
    a->dx = carve(cv, n * C * f);
    a->dxn = carve(cv, n * C * f);
    a->dq = carve(cv, n * QD * f);
    a->dk = carve(cv, n * KD * f);
    a->dv = carve(cv, n * KD * f);
    a->datt = carve(cv, n * QD * f);
    a->dgate = carve(cv, n * F * f);
    a->dup = carve(cv, n * F * f);
    a->dh = carve(cv, n * F * f);
    a->dmid = carve(cv, n * (lo ? lo->r : 1) * f);
    a->scratch = carve(cv, n * scratch * f);
    a->xb = NULL, a->dyb = NULL, a->head_rows = 0;
    if (a->bf16) {
        /* dlogits go to bf16 in row blocks of up to 256 (or what the widest gradient needs). */
        size_t dy = n * widest, head = (size_t)(n < 256 ? n : 256) * c->vocab;
        if (head > dy) dy = head;
        a->head_rows = (int)(dy / c->vocab);
        if (a->head_rows > a->n) a->head_rows = a->n;
        a->xb = carve(cv, n * widest * 2);
        a->dyb = carve(cv, dy * 2);
    }
}

static int ensure_acts(lmf_model *m, int B, int T) {
    const lmf_lora *lo = m->lora;
    lmf_acts *a = m->acts;
    int n = B * T;
    if (a && a->n == n && a->B == B && a->lora_r == (lo ? lo->r : 0) &&
        a->lora_targets == (lo ? lo->targets : 0) && a->lora_dropout == (lo && lo->dropout > 0) &&
        a->bf16 == m->bf16 && a->ckpt == m->grad_ckpt)
        return 0;
    lmf_model_free_acts(m);
    a = calloc(1, sizeof *a);
    if (!a || !(a->L = calloc(m->cfg.layers, sizeof *a->L)) ||
        !(a->rng_at = calloc(m->cfg.layers, sizeof *a->rng_at))) {
        if (a) free(a->L);
        free(a);
        return lmf_errorf(LMF_ENOMEM, "model: out of memory for activations");
    }
    a->n = n, a->B = B, a->T = T, a->bf16 = m->bf16, a->ckpt = m->grad_ckpt;
    a->lora_r = lo ? lo->r : 0;
    a->lora_targets = lo ? lo->targets : 0;
    a->lora_dropout = lo && lo->dropout > 0;
    carver measure = {0};
    layout_acts(m, a, &measure);
    a->block = m->be->alloc(measure.used);
    a->bytes = measure.used;
    if (!a->block) {
        free(a->L);
        free(a->rng_at);
        free(a);
        return lmf_errorf(LMF_ENOMEM,
                          "model: cannot allocate %zu bytes of activations for %d x %d tokens",
                          measure.used, B, T);
    }
    carver assign = {.base = a->block};
    layout_acts(m, a, &assign);
    m->acts = a;
    return 0;
}

/* y = x W^T (+ bias) (+ LoRA). x is (n, in), y is (n, out). */
void lmf_linear_apply(const lmf_model *m, int l, lmf_linear_id id, const float *x,
                      const uint16_t *xb, const float *xd, float *y, int n, const float *bias,
                      float *mid) {
    const lmf_backend *be = m->be;
    int out, in, k = l * LMF_N_LINEAR + id;
    lmf_linear_shape(&m->cfg, id, &out, &in);
    if (y && m->qlin)
        lmf_qmatmul(y, x, (lmf_qtype)m->qtype, m->qlin[k], n, out, in);
    else if (y && xb)
        be->gemm_bf16(0, 1, n, out, in, 1.0f, xb, in, m->wbf_lin[k], in, 0.0f, y, out);
    else if (y)
        be->gemm(0, 1, n, out, in, 1.0f, x, in, m->w.layers[l].w[id], in, 0.0f, y, out);
    if (y && bias) be->bias_fwd(y, bias, n, out);
    const lmf_lora *lo = m->lora;
    if (!lo || !(lo->targets & (1u << id))) return;
    int r = lo->r;
    be->gemm(0, 1, n, r, in, 1.0f, xd, in, lo->A[k], in, 0.0f, mid, r);
    if (y) be->gemm(0, 1, n, out, r, lo->scale, mid, r, lo->B[k], r, 1.0f, y, out);
}

/* The training-time linear: keeps the adapter's intermediate for backward and draws the
 * dropout mask of its input. xb: x in bf16 (bf16 mode), else NULL. y NULL: adapter part only. */
static void linear_fwd(lmf_model *m, int l, lmf_linear_id id, const float *x, const uint16_t *xb,
                       float *y, const float *bias, int train) {
    lmf_acts *a = m->acts;
    int n = a->n, out, in;
    lmf_linear_shape(&m->cfg, id, &out, &in);
    const lmf_lora *lo = m->lora;
    int lora = lo && (lo->targets & (1u << id));
    if (!y && !lora) return;
    float *mid = lora ? a->L[l].lora_mid[id] : NULL, *mask = lora ? a->L[l].lora_mask[id] : NULL;
    const float *xd = x;
    if (mask) {
        /* Dropout on the adapter's input only, as PEFT does; identity outside training. */
        float keep = 1.0f - lo->dropout, *tmp = a->scratch;
        lmf_rng *rng = &m->lora->dropout_rng;
        for (size_t i = 0; i < (size_t)n * in; i++) {
            mask[i] = train ? (lmf_rng_uniform(rng) < keep ? 1.0f / keep : 0.0f) : 1.0f;
            tmp[i] = x[i] * mask[i];
        }
        xd = tmp;
    }
    lmf_linear_apply(m, l, id, x, xb, xd, y, n, bias, mid);
}

/* x in bf16 into a->xb when the model computes in bf16; NULL otherwise. */
static const uint16_t *to_bf16(lmf_model *m, const float *x, size_t count) {
    if (!m->acts->bf16) return NULL;
    m->be->to_bf16(m->acts->xb, x, count);
    return m->acts->xb;
}

/* One transformer block on L->x_in, writing x_next. recompute: refill the saved activations
 * only (checkpointing): the last linear's output is already in x_next, so only its adapter
 * intermediate is made. */
static void layer_fwd(lmf_model *m, int l, int train, int recompute) {
    const lmf_model_config *c = &m->cfg;
    const lmf_backend *be = m->be;
    lmf_acts *a = m->acts;
    lmf_layer_acts *L = &a->L[l];
    const lmf_layer_weights *w = &m->w.layers[l];
    int n = a->n, C = c->hidden, F = c->ffn, H = c->heads, KVH = c->kv_heads, D = c->head_dim;
    lmf_attn_shape as = {a->B, a->T, H, KVH, D, 1.0f / sqrtf((float)D)};
    float *x_next = l + 1 < c->layers ? a->L[l + 1].x_in : a->x_out;
    const uint16_t *xb;
    be->rmsnorm_fwd(L->xn1, L->rstd1, L->x_in, w->attn_norm, n, C, c->rms_eps);
    float *qd = c->qk_norm ? L->q_pre : L->q, *kd = c->qk_norm ? L->k_pre : L->k;
    xb = to_bf16(m, L->xn1, (size_t)n * C);
    linear_fwd(m, l, LMF_Q, L->xn1, xb, qd, w->bq, train);
    linear_fwd(m, l, LMF_K, L->xn1, xb, kd, w->bk, train);
    linear_fwd(m, l, LMF_V, L->xn1, xb, L->v, w->bv, train);
    if (c->qk_norm) {
        be->rmsnorm_fwd(L->q, L->q_rstd, L->q_pre, w->q_norm, n * H, D, c->rms_eps);
        be->rmsnorm_fwd(L->k, L->k_rstd, L->k_pre, w->k_norm, n * KVH, D, c->rms_eps);
    }
    be->rope(L->q, H * D, a->pos, m->inv_freq, n, H, D, 0);
    be->rope(L->k, KVH * D, a->pos, m->inv_freq, n, KVH, D, 0);
    be->attn_fwd(L->att, L->lse, L->q, L->k, L->v, a->seg, &as);
    xb = to_bf16(m, L->att, (size_t)n * H * D);
    linear_fwd(m, l, LMF_O, L->att, xb, L->x_mid, NULL, train);
    be->add(L->x_mid, L->x_in, (size_t)n * C);
    be->rmsnorm_fwd(L->xn2, L->rstd2, L->x_mid, w->mlp_norm, n, C, c->rms_eps);
    xb = to_bf16(m, L->xn2, (size_t)n * C);
    linear_fwd(m, l, LMF_GATE, L->xn2, xb, L->gate, NULL, train);
    linear_fwd(m, l, LMF_UP, L->xn2, xb, L->up, NULL, train);
    be->swiglu_fwd(L->h, L->gate, L->up, (size_t)n * F);
    if (recompute) {
        linear_fwd(m, l, LMF_DOWN, L->h, NULL, NULL, NULL, train);
        return;
    }
    xb = to_bf16(m, L->h, (size_t)n * F);
    linear_fwd(m, l, LMF_DOWN, L->h, xb, x_next, NULL, train);
    be->add(x_next, L->x_mid, (size_t)n * C);
}

void lmf_layer_recompute(lmf_model *m, int l) {
    lmf_lora *lo = m->lora;
    lmf_rng after;
    if (lo) after = lo->dropout_rng, lo->dropout_rng = m->acts->rng_at[l];
    layer_fwd(m, l, 1, 1);
    if (lo) lo->dropout_rng = after;
}

static int prepare_batch(lmf_model *m, const lmf_batch *b) {
    const lmf_model_config *c = &m->cfg;
    lmf_acts *a = m->acts;
    int n = b->B * b->T;
    a->n_targets = 0;
    for (int i = 0; i < n; i++) {
        int t = i % b->T;
        if (b->ids[i] < 0 || b->ids[i] >= c->vocab)
            return lmf_errorf(LMF_ERANGE,
                              "batch: input_ids[%d][%d] = %d is outside the vocabulary (0..%d)",
                              i / b->T, t, b->ids[i], c->vocab - 1);
        a->ids[i] = b->ids[i];
        a->pos[i] = b->pos ? b->pos[i] : t;
        a->seg[i] = b->seg ? b->seg[i] : 0;
        if (a->pos[i] < 0)
            return lmf_errorf(LMF_ERANGE, "batch: position_ids[%d][%d] is negative", i / b->T, t);
    }
    for (int i = 0; i < n; i++) {
        int t = i % b->T;
        int same = t + 1 < b->T && a->seg[i + 1] == a->seg[i];
        int lab = same && b->labels ? b->labels[i + 1] : -100;
        if (lab != -100 && (lab < 0 || lab >= c->vocab))
            return lmf_errorf(LMF_ERANGE, "batch: labels[%d][%d] = %d is outside the vocabulary",
                              i / b->T, t + 1, lab);
        a->targets[i] = lab == -100 ? -1 : lab;
        a->n_targets += lab != -100;
    }
    return 0;
}

int lmf_model_forward(lmf_model *m, const lmf_batch *b, int want_grad, double *loss,
                      int64_t *n_targets, float *logits, float *per_token_logprob) {
    const lmf_model_config *c = &m->cfg;
    const lmf_backend *be = m->be;
    if (b->B <= 0 || b->T <= 0)
        return lmf_errorf(LMF_EINVAL, "batch: empty (B=%d, T=%d)", b->B, b->T);
    if (c->sliding_window > 0 && b->T > c->sliding_window)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "batch: %d tokens per row exceed the model's sliding_window (%d), which "
                          "is not supported",
                          b->T, c->sliding_window);
    int rc = ensure_acts(m, b->B, b->T);
    if (rc) return rc;
    lmf_acts *a = m->acts;
    if ((rc = prepare_batch(m, b))) return rc;
    a->want_grad = want_grad;
    int n = a->n, C = c->hidden;
    if (m->bf16) lmf_model_refresh_bf16(m);
    weight_event(m, -1, LMF_WEIGHTS_FWD_BEGIN);

    lmf_model_embed(m, a->ids, n, a->L[0].x_in);
    for (int l = 0; l < c->layers; l++) {
        if (m->lora) a->rng_at[l] = m->lora->dropout_rng;
        weight_event(m, l, LMF_WEIGHTS_LAYER_FWD);
        layer_fwd(m, l, want_grad, 0);
        weight_event(m, l, LMF_WEIGHTS_LAYER_FWD_DONE);
    }
    be->rmsnorm_fwd(a->xnf, a->rstdf, a->x_out, m->w.final_norm, n, C, c->rms_eps);
    if (m->qhead) {
        lmf_qmatmul(a->logits, a->xnf, (lmf_qtype)m->qtype, m->qhead, n, c->vocab, C);
    } else if (a->bf16) {
        be->to_bf16(a->xb, a->xnf, (size_t)n * C);
        be->gemm_bf16(0, 1, n, c->vocab, C, 1.0f, a->xb, C, m->wbf_head, C, 0.0f, a->logits,
                      c->vocab);
    } else {
        be->gemm(0, 1, n, c->vocab, C, 1.0f, a->xnf, C, m->w.lm_head, C, 0.0f, a->logits, c->vocab);
    }
    weight_event(m, -1, LMF_WEIGHTS_FWD_END);
    if (logits) be->copy(logits, a->logits, sizeof(float) * n * c->vocab);
    float scale = m->loss_denom > 0 ? (float)(1.0 / m->loss_denom)
                  : a->n_targets    ? 1.0f / (float)a->n_targets
                                    : 0.0f;
    be->xent(a->losses, want_grad ? a->logits : NULL, a->logits, a->targets, n, c->vocab, scale);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        sum += a->losses[i];
        if (per_token_logprob) per_token_logprob[i] = a->targets[i] >= 0 ? -a->losses[i] : 0.0f;
    }
    if (loss) *loss = a->n_targets ? sum / (double)a->n_targets : 0.0;
    if (n_targets) *n_targets = a->n_targets;
    return 0;
}
