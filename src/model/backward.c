/* Backward pass: gradients of the mean loss for every trainable base parameter and every
 * LoRA parameter, from the activations the last forward kept. Frozen weights get no gradient
 * buffer and no weight-gradient GEMM; only the input gradients flow through them. In bf16
 * mode the base linears' and lm_head's GEMMs take bf16 operands; with checkpointing each
 * layer's activations are recomputed (lmf_layer_recompute) right before its backward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Gradient slice for a base parameter, or NULL when it is frozen. */
static float *grad_of(const lmf_model *m, const float *param) {
    if (!m->grads || !param) return NULL;
    int i = lmf_param_index(m, m->params, param);
    if (i < 0 || !m->trainable[i]) return NULL;
    return m->grads + m->table[i].offset;
}

/* In bf16 mode, x in bf16 (a->xb) when any of the listed linears of layer l has a weight
 * gradient to compute; NULL otherwise (then linear_bwd does not need it). */
static const uint16_t *input_bf16(lmf_model *m, int l, unsigned ids, const float *x, size_t count) {
    if (!m->acts->bf16) return NULL;
    for (int id = 0; id < LMF_N_LINEAR; id++)
        if ((ids & (1u << id)) && grad_of(m, m->w.layers[l].w[id])) {
            m->be->to_bf16(m->acts->xb, x, count);
            return m->acts->xb;
        }
    return NULL;
}

/* Given dy (n, out) of y = x W^T (+b) (+LoRA), adds weight/bias/LoRA gradients and writes
 * (dx_accumulate: adds) dx = dy W (+ LoRA path). dx may be NULL when nothing below needs it.
 * In bf16 mode the two base GEMMs take dy in bf16 and x in bf16 (xb, from input_bf16). */
static void linear_bwd(lmf_model *m, int l, lmf_linear_id id, const float *x, const uint16_t *xb,
                       const float *dy, float *dx, int dx_accumulate, const float *bias) {
    const lmf_backend *be = m->be;
    lmf_acts *a = m->acts;
    int n = a->n, out, in;
    lmf_linear_shape(&m->cfg, id, &out, &in);
    const float *W = m->w.layers[l].w[id];
    float *dW = grad_of(m, W);
    float beta = dx_accumulate ? 1.0f : 0.0f;
    if (a->bf16) {
        const uint16_t *Wb = m->wbf_lin[l * LMF_N_LINEAR + id];
        be->to_bf16(a->dyb, dy, (size_t)n * out);
        if (dW) be->gemm_bf16(1, 0, out, in, n, 1.0f, a->dyb, out, xb, in, 1.0f, dW, in);
        if (dx) be->gemm_bf16(0, 0, n, in, out, 1.0f, a->dyb, out, Wb, in, beta, dx, in);
    } else {
        if (dW) be->gemm(1, 0, out, in, n, 1.0f, dy, out, x, in, 1.0f, dW, in);
        if (dx) be->gemm(0, 0, n, in, out, 1.0f, dy, out, W, in, beta, dx, in);
    }
    float *db = grad_of(m, bias);
    if (db) be->bias_bwd(db, dy, n, out);
    const lmf_lora *lo = m->lora;
    if (!lo || !(lo->targets & (1u << id))) return;
    int r = lo->r, k = l * LMF_N_LINEAR + id;
    float s = lo->scale, *mid = a->L[l].lora_mid[id], *mask = a->L[l].lora_mask[id];
    float *dmid = a->dmid;
    /* dmid = s * dy B; dB += s * dy^T mid */
    be->gemm(0, 0, n, r, out, s, dy, out, lo->B[k], r, 0.0f, dmid, r);
    if (lo->dB) be->gemm(1, 0, out, r, n, s, dy, out, mid, r, 1.0f, lo->dB[k], r);
    const float *xd = x;
    float *tmp = a->scratch;
    if (mask) {
        for (size_t i = 0; i < (size_t)n * in; i++) tmp[i] = x[i] * mask[i];
        xd = tmp;
    }
    if (lo->dA) be->gemm(1, 0, r, in, n, 1.0f, dmid, r, xd, in, 1.0f, lo->dA[k], in);
    if (!dx) return;
    if (!mask) {
        be->gemm(0, 0, n, in, r, 1.0f, dmid, r, lo->A[k], in, 1.0f, dx, in);
    } else {
        be->gemm(0, 0, n, in, r, 1.0f, dmid, r, lo->A[k], in, 0.0f, tmp, in);
        for (size_t i = 0; i < (size_t)n * in; i++) dx[i] += tmp[i] * mask[i];
    }
}

int lmf_model_backward(lmf_model *m) {
    lmf_acts *a = m->acts;
    if (!a || !a->want_grad)
        return lmf_errorf(LMF_EINVAL,
                          "model: backward without a forward pass that kept activations");
    const lmf_model_config *c = &m->cfg;
    const lmf_backend *be = m->be;
    int n = a->n, C = c->hidden, F = c->ffn, H = c->heads, KVH = c->kv_heads, D = c->head_dim;
    lmf_attn_shape as = {a->B, a->T, H, KVH, D, 1.0f / sqrtf((float)D)};
    int embed_trainable = grad_of(m, m->w.embed) != NULL;

    /* logits = xnf lm_head^T; a->logits already holds dlogits (scaled by 1/n_targets). */
    float *dlm = grad_of(m, m->w.lm_head);
    int V = c->vocab;
    if (a->bf16) {
        /* dlogits to bf16 a block of rows at a time, so the copy stays small. */
        if (dlm) be->to_bf16(a->xb, a->xnf, (size_t)n * C);
        for (int r0 = 0; r0 < n; r0 += a->head_rows) {
            int rows = n - r0 < a->head_rows ? n - r0 : a->head_rows;
            be->to_bf16(a->dyb, a->logits + (size_t)r0 * V, (size_t)rows * V);
            be->gemm_bf16(0, 0, rows, C, V, 1.0f, a->dyb, V, m->wbf_head, C, 0.0f,
                          a->dxn + (size_t)r0 * C, C);
            if (dlm)
                be->gemm_bf16(1, 0, V, C, rows, 1.0f, a->dyb, V, a->xb + (size_t)r0 * C, C, 1.0f,
                              dlm, C);
        }
    } else {
        if (dlm) be->gemm(1, 0, V, C, n, 1.0f, a->logits, V, a->xnf, C, 1.0f, dlm, C);
        be->gemm(0, 0, n, C, V, 1.0f, a->logits, V, m->w.lm_head, C, 0.0f, a->dxn, C);
    }
    be->rmsnorm_bwd(a->dx, grad_of(m, m->w.final_norm), a->dxn, a->x_out, m->w.final_norm, a->rstdf,
                    n, C, 0);

    for (int l = c->layers - 1; l >= 0; l--) {
        lmf_layer_acts *L = &a->L[l];
        const lmf_layer_weights *w = &m->w.layers[l];
        int need_dx = l > 0 || embed_trainable;
        const uint16_t *xb;
        weight_event(m, l, LMF_WEIGHTS_LAYER_BWD);
        if (a->ckpt) lmf_layer_recompute(m, l);
        /* MLP: x_next = x_mid + down(swiglu(gate(xn2), up(xn2))) */
        xb = input_bf16(m, l, 1u << LMF_DOWN, L->h, (size_t)n * F);
        linear_bwd(m, l, LMF_DOWN, L->h, xb, a->dx, a->dh, 0, NULL);
        be->swiglu_bwd(a->dgate, a->dup, a->dh, L->gate, L->up, (size_t)n * F);
        xb = input_bf16(m, l, 1u << LMF_GATE | 1u << LMF_UP, L->xn2, (size_t)n * C);
        linear_bwd(m, l, LMF_GATE, L->xn2, xb, a->dgate, a->dxn, 0, NULL);
        linear_bwd(m, l, LMF_UP, L->xn2, xb, a->dup, a->dxn, 1, NULL);
        be->rmsnorm_bwd(a->dx, grad_of(m, w->mlp_norm), a->dxn, L->x_mid, w->mlp_norm, L->rstd2, n,
                        C, 1);
        /* Attention: x_mid = x_in + o(attn(rope(norm(q)), rope(norm(k)), v)) */
        xb = input_bf16(m, l, 1u << LMF_O, L->att, (size_t)n * H * D);
        linear_bwd(m, l, LMF_O, L->att, xb, a->dx, a->datt, 0, NULL);
        be->attn_bwd(a->dq, a->dk, a->dv, a->datt, L->att, L->lse, L->q, L->k, L->v, a->seg, &as);
        be->rope(a->dq, H * D, a->pos, m->inv_freq, n, H, D, 1);
        be->rope(a->dk, KVH * D, a->pos, m->inv_freq, n, KVH, D, 1);
        const float *q_in = a->dq, *k_in = a->dk;
        if (c->qk_norm) {
            /* dq/dk are w.r.t. the normed heads: take them back through the per-head norm. */
            float *dqp = a->scratch, *dkp = a->scratch + (size_t)n * H * D;
            be->rmsnorm_bwd(dqp, grad_of(m, w->q_norm), a->dq, L->q_pre, w->q_norm, L->q_rstd,
                            n * H, D, 0);
            be->rmsnorm_bwd(dkp, grad_of(m, w->k_norm), a->dk, L->k_pre, w->k_norm, L->k_rstd,
                            n * KVH, D, 0);
            be->copy(a->dq, dqp, sizeof(float) * n * H * D);
            be->copy(a->dk, dkp, sizeof(float) * n * KVH * D);
        }
        xb = input_bf16(m, l, 1u << LMF_Q | 1u << LMF_K | 1u << LMF_V, L->xn1, (size_t)n * C);
        linear_bwd(m, l, LMF_Q, L->xn1, xb, q_in, a->dxn, 0, w->bq);
        linear_bwd(m, l, LMF_K, L->xn1, xb, k_in, a->dxn, 1, w->bk);
        linear_bwd(m, l, LMF_V, L->xn1, xb, a->dv, a->dxn, 1, w->bv);
        if (need_dx)
            be->rmsnorm_bwd(a->dx, grad_of(m, w->attn_norm), a->dxn, L->x_in, w->attn_norm,
                            L->rstd1, n, C, 1);
        else if (grad_of(m, w->attn_norm))
            be->rmsnorm_bwd(a->scratch, grad_of(m, w->attn_norm), a->dxn, L->x_in, w->attn_norm,
                            L->rstd1, n, C, 0);
        if (m->grad_hook) m->grad_hook(m->grad_hook_user, l); /* layer l's gradients are final */
    }
    if (embed_trainable) be->embed_bwd(grad_of(m, m->w.embed), a->dx, a->ids, n, C);
    weight_event(m, -1, LMF_WEIGHTS_BWD_END);
    a->want_grad = 0; /* dlogits replaced the logits: a second backward would be wrong */
    return 0;
}
