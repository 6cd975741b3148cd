/* The model's compute mode: bf16 mixed precision (bf16 copies of the big weight matrices,
 * made once and refreshed only when told the float32 weights changed) and per-layer
 * activation checkpointing. The passes themselves are in forward.c and backward.c. */
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static void free_bf16(lmf_model *m) {
    if (m->wbf) m->be->free(m->wbf);
    free(m->wbf_lin);
    m->wbf = NULL, m->wbf_lin = NULL, m->wbf_head = NULL;
}

void lmf_model_free_compute(lmf_model *m) {
    free_bf16(m);
}

/* Why bf16 cannot be used on m's backend here, or NULL when it can. */
static const char *bf16_unavailable(const lmf_model *m) {
    const lmf_backend *be = m->be;
    if (lmf_bf16_disabled_by_env()) return "LMF_NO_BF16 is set";
    if (!be->gemm_bf16 || !be->to_bf16 || !be->has_bf16)
        return "the compute backend has no bf16 GEMM";
    if (be->has_bf16()) return NULL;
    if (!strcmp(be->name, "cpu") && !lmf_cpu_has_avx512_bf16())
        return "this CPU has no AVX-512 BF16 instructions";
    return "the GEMM library has no bf16 GEMM (OpenBLAS build)";
}

static int alloc_bf16(lmf_model *m) {
    const lmf_model_config *c = &m->cfg;
    size_t total = (size_t)c->vocab * c->hidden, off = 0;
    for (int id = 0; id < LMF_N_LINEAR; id++) {
        int out, in;
        lmf_linear_shape(c, id, &out, &in);
        total += (size_t)c->layers * (((size_t)out * in + 31) & ~(size_t)31);
    }
    m->wbf_lin = calloc((size_t)c->layers * LMF_N_LINEAR, sizeof *m->wbf_lin);
    m->wbf = m->be->alloc(total * sizeof(uint16_t));
    if (!m->wbf_lin || !m->wbf) {
        free_bf16(m);
        return lmf_errorf(LMF_ENOMEM, "model: cannot allocate %zu bytes of bf16 weight copies",
                          total * sizeof(uint16_t));
    }
    for (int l = 0; l < c->layers; l++)
        for (int id = 0; id < LMF_N_LINEAR; id++) {
            int out, in;
            lmf_linear_shape(c, id, &out, &in);
            m->wbf_lin[l * LMF_N_LINEAR + id] = m->wbf + off;
            off += ((size_t)out * in + 31) & ~(size_t)31; /* 64-byte aligned slices */
        }
    m->wbf_head = m->wbf + off;
    m->wbf_stale = 1;
    return 0;
}

int lmf_model_set_compute(lmf_model *m, const lmf_compute_options *o) {
    int want = o && o->bf16, ckpt = o && o->grad_ckpt;
    const char *why = want ? bf16_unavailable(m) : NULL;
    if (why) {
        lmf_warn("bf16: %s; computing in float32", why);
        want = 0;
    }
    /* Activations laid out for the old mode cannot serve a backward in the new one. */
    if (want != m->bf16 || ckpt != m->grad_ckpt) lmf_model_free_acts(m);
    m->grad_ckpt = ckpt;
    if (want && !m->wbf) {
        int rc = alloc_bf16(m);
        if (rc) return rc;
    }
    if (!want) free_bf16(m);
    m->bf16 = want;
    return 0;
}

void lmf_model_weights_changed(lmf_model *m) {
    m->wbf_stale = 1;
}

void lmf_model_refresh_bf16(lmf_model *m) {
    if (!m->wbf || !m->wbf_stale) return;
    const lmf_model_config *c = &m->cfg;
    for (int l = 0; l < c->layers; l++)
        for (int id = 0; id < LMF_N_LINEAR; id++) {
            int out, in;
            lmf_linear_shape(c, id, &out, &in);
            m->be->to_bf16(m->wbf_lin[l * LMF_N_LINEAR + id], m->w.layers[l].w[id],
                           (size_t)out * in);
        }
    m->be->to_bf16(m->wbf_head, m->w.lm_head, (size_t)c->vocab * c->hidden);
    m->wbf_stale = 0;
}

size_t lmf_model_activation_bytes(const lmf_model *m) {
    return m->acts ? m->acts->bytes : 0;
}
