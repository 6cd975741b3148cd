/* QLoRA's frozen base: the linears, lm_head and embedding quantized row by row (lmforge/quant.h)
 * and their float32 pages given back; forward.c and backward.c multiply through the quantized
 * rows. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/quant.h"
#include "model_internal.h"

static int frozen(const lmf_model *m, const float *p, const char **name) {
    int i = lmf_param_index(m, m->params, p);
    *name = i >= 0 ? m->table[i].name : "?";
    return i < 0 || !m->trainable || !m->trainable[i] || !m->grads;
}

int lmf_model_quantize_base(lmf_model *m, int qtype) {
    const lmf_model_config *c = &m->cfg;
    lmf_qtype t = (lmf_qtype)qtype;
    if (m->quantized) return lmf_errorf(LMF_EINVAL, "model: already quantized");
    if (m->bf16)
        return lmf_errorf(LMF_EINVAL, "quantization_bit: the quantized matmuls take float32 "
                                      "inputs; set the compute mode to float32 first");
    int L = c->layers, V = c->vocab, C = c->hidden;
    int tied = m->w.lm_head == m->w.embed;
    /* shapes and trainability first: nothing changes on a refusal */
    size_t total = 0;
    const char *name;
    for (int l = 0; l < L; l++)
        for (int id = 0; id < LMF_N_LINEAR; id++) {
            int out, in;
            lmf_linear_shape(c, (lmf_linear_id)id, &out, &in);
            if (!frozen(m, m->w.layers[l].w[id], &name))
                return lmf_errorf(LMF_EINVAL,
                                  "quantization_bit: %s is trained; a quantized base "
                                  "must be frozen (LoRA)",
                                  name);
            int rc = lmf_quant_check_shape(t, out, in, name);
            if (rc) return rc;
            total += (size_t)out * lmf_quant_row_bytes(t, in);
        }
    const float *vc[2] = {m->w.embed, m->w.lm_head};
    for (int k = 0; k < 2 - tied; k++) {
        if (!frozen(m, vc[k], &name))
            return lmf_errorf(LMF_EINVAL,
                              "quantization_bit: %s is trained (additional_target); a "
                              "quantized base must be frozen",
                              name);
        int rc = lmf_quant_check_shape(t, V, C, name);
        if (rc) return rc;
        total += (size_t)V * lmf_quant_row_bytes(t, C);
    }
    m->qlin = calloc((size_t)L * LMF_N_LINEAR, sizeof *m->qlin);
    m->qblock = lmf_alloc(total, "quantized base model");
    if (!m->qlin || !m->qblock) {
        free(m->qlin), lmf_free(m->qblock);
        m->qlin = NULL, m->qblock = NULL;
        return lmf_errorf(LMF_ENOMEM, "quantization_bit: cannot allocate %zu bytes", total);
    }
    uint8_t *at = m->qblock;
    int rc = 0;
    for (int l = 0; l < L && !rc; l++)
        for (int id = 0; id < LMF_N_LINEAR && !rc; id++) {
            int out, in;
            lmf_linear_shape(c, (lmf_linear_id)id, &out, &in);
            float *w = m->w.layers[l].w[id];
            frozen(m, w, &name);
            rc = lmf_quantize(t, at, w, out, in, name);
            m->qlin[l * LMF_N_LINEAR + id] = at;
            at += (size_t)out * lmf_quant_row_bytes(t, in);
        }
    for (int k = 0; k < 2 - tied && !rc; k++) {
        frozen(m, vc[k], &name);
        rc = lmf_quantize(t, at, vc[k], V, C, name);
        if (k == 0) m->qembed = at;
        if (k == 1 || tied) m->qhead = at;
        at += (size_t)V * lmf_quant_row_bytes(t, C);
    }
    if (rc) { /* a non-finite weight: the model stays as it was */
        free(m->qlin), lmf_free(m->qblock);
        m->qlin = NULL, m->qblock = NULL, m->qembed = m->qhead = NULL;
        return rc;
    }
    /* the float32 copies are no longer read: give their pages back */
    for (int l = 0; l < L; l++)
        for (int id = 0; id < LMF_N_LINEAR; id++) {
            int out, in;
            lmf_linear_shape(c, (lmf_linear_id)id, &out, &in);
            lmf_discard(m->w.layers[l].w[id], (size_t)out * (size_t)in * sizeof(float));
        }
    for (int k = 0; k < 2 - tied; k++) lmf_discard((void *)vc[k], (size_t)V * C * sizeof(float));
    m->quantized = 1, m->qtype = (int)t, m->qbytes = total;
    return 0;
}

size_t lmf_model_base_bytes(const lmf_model *m, size_t *f32_bytes) {
    *f32_bytes = m->numel * sizeof(float);
    return m->qbytes + lmf_resident_bytes(m->params, m->numel * sizeof(float));
}

float *lmf_model_qscratch(lmf_model *m, size_t floats) {
    if (m->qtmp_floats < floats) {
        float *p = realloc(m->qtmp, floats * sizeof(float));
        if (!p) return NULL;
        m->qtmp = p, m->qtmp_floats = floats;
    }
    return m->qtmp;
}

void lmf_model_embed_row(const lmf_model *m, int64_t r, float *out) {
    int C = m->cfg.hidden;
    if (m->qembed)
        lmf_dequantize_row((lmf_qtype)m->qtype, out,
                           m->qembed + (size_t)r * lmf_quant_row_bytes((lmf_qtype)m->qtype, C), C);
    else
        memcpy(out, m->w.embed + (size_t)r * C, sizeof(float) * C);
}

void lmf_model_embed(const lmf_model *m, const int32_t *ids, int n, float *x) {
    int C = m->cfg.hidden;
    if (!m->qembed) {
        m->be->embed_fwd(x, m->w.embed, ids, n, C);
        return;
    }
    for (int i = 0; i < n; i++) lmf_model_embed_row(m, ids[i], x + (size_t)i * C);
}
