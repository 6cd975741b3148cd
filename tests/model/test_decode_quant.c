/* Inference on a quantized base (lmf_model_quantize_base then lmf_model_step): for every block
 * format, the step's logits over a chunked prefill and single-token decodes of two interleaved
 * sequences equal the full forward's on the same quantized model (which multiplies through
 * lmf_qmatmul, tested against the dequantized matrices in test_quant): the one-region path
 * (cpu, no adapter), the general path (a LoRA adapter on the quantized base), and the ref
 * backend's plain-C products. The quantized model's logits also stay near the float32 model's
 * (a loose sanity bound per format; the perplexity bound is ref_test_quant_infer's). Run a
 * second time with LMF_NO_AVX512=1 (the plain-C kernels on the cpu backend). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/model.h"
#include "lmforge/quant.h"
#include "test.h"

enum { LEN = 11, BS = 4 };

/* Every in-dimension a multiple of 256 (Q4_K's super-block); GQA; Qwen2 biases. */
static lmf_model *make(const lmf_backend *be, int lora) {
    lmf_model_config c;
    lmf_model_preset(&c, LMF_ARCH_QWEN2, "tiny");
    c.hidden = 256, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 64;
    c.ffn = 512, c.vocab = 96;
    lmf_model *m;
    CHECK(lmf_model_create(&m, &c, be) == 0);
    lmf_model_init_random(m, 7);
    if (lora) {
        lmf_lora *l;
        lmf_rng r;
        lmf_rng_seed(&r, 8);
        CHECK(lmf_lora_create(&l, m, 4, 8, 0, (1u << LMF_N_LINEAR) - 1) == 0);
        for (size_t k = 0; k < l->numel; k++) l->params[k] = 0.05f * lmf_rng_normal(&r);
        m->lora = l;
    }
    return m;
}

static float *full_logits(lmf_model *m, const int32_t *ids) {
    float *lg = malloc(sizeof(float) * LEN * m->cfg.vocab);
    lmf_batch b = {1, LEN, ids, NULL, NULL, NULL};
    double loss;
    CHECK(lmf_model_forward(m, &b, 0, &loss, NULL, lg, NULL) == 0);
    return lg;
}

/* Two sequences: a prefills 5 then decodes; b prefills 3, then a chunk of 4, then decodes. The
 * worst relative error of their logits against fa / fb. */
static double step_error(lmf_model *m, const int32_t *a, const int32_t *b, const float *fa,
                         const float *fb) {
    int V = m->cfg.vocab;
    lmf_kv_pool kv;
    CHECK(lmf_kv_pool_create(&kv, m, BS, 8) == 0);
    int32_t ta[3] = {6, 1, 3}, tb[3] = {0, 7, 2};
    float *lg = malloc(sizeof(float) * 2 * V);
    lmf_seq_step s[2] = {{a, 5, 0, ta, 3, 1, NULL}, {b, 3, 0, tb, 3, 1, NULL}};
    CHECK(lmf_model_step(m, &kv, s, 2, lg) == 0);
    double worst = fmax(test_max_rel(lg, fa + 4 * V, V), test_max_rel(lg + V, fb + 2 * V, V));
    s[0] = (lmf_seq_step){a + 5, 1, 5, ta, 3, 1, NULL};
    s[1] = (lmf_seq_step){b + 3, 4, 3, tb, 3, 0, NULL};
    CHECK(lmf_model_step(m, &kv, s, 2, lg) == 0);
    worst = fmax(worst, test_max_rel(lg, fa + 5 * V, V));
    for (int p = 6; p < LEN; p++) {
        s[0] = (lmf_seq_step){a + p, 1, p, ta, 3, 1, NULL};
        s[1] = (lmf_seq_step){b + p + 1, 1, p + 1, tb, 3, 1, NULL};
        int n = p + 1 < LEN ? 2 : 1;
        CHECK(lmf_model_step(m, &kv, s, n, lg) == 0);
        worst = fmax(worst, test_max_rel(lg, fa + (size_t)p * V, V));
        if (n == 2) worst = fmax(worst, test_max_rel(lg + V, fb + (size_t)(p + 1) * V, V));
    }
    free(lg);
    lmf_kv_pool_free(&kv);
    return worst;
}

/* Largest |a - b| over the largest |b|: how far the quantized logits moved. */
static double moved(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i])), s = fmax(s, fabs(b[i]));
    return d / s;
}

static void run(lmf_qtype t, const lmf_backend *be, int lora, double max_moved) {
    lmf_model *m = make(be, lora);
    int V = m->cfg.vocab;
    int32_t a[LEN], b[LEN];
    for (int i = 0; i < LEN; i++) a[i] = (i * 11 + 5) % V, b[i] = (i * 7 + 1) % V;
    float *f32 = full_logits(m, a);
    size_t f32_bytes, before = lmf_model_base_bytes(m, &f32_bytes);
    CHECK(lmf_model_quantize_base(m, (int)t) == 0);
    size_t after = lmf_model_base_bytes(m, &f32_bytes);
    CHECK_MSG(after < before, "%s: base bytes %zu -> %zu", lmf_qtype_name(t), before, after);
    float *fa = full_logits(m, a), *fb = full_logits(m, b);
    double e = step_error(m, a, b, fa, fb), mv = moved(fa, f32, (size_t)LEN * V);
    CHECK_MSG(e < 1e-4, "%s %s lora %d: step vs forward rel err %g", lmf_qtype_name(t), be->name,
              lora, e);
    CHECK_MSG(mv > 0 && mv < max_moved, "%s: quantized vs float32 logits moved %g (bound %g)",
              lmf_qtype_name(t), mv, max_moved);
    free(f32), free(fa), free(fb);
    lmf_lora_free(m->lora);
    lmf_model_free(m);
}

int main(void) {
    lmf_compute_set_threads(2);
    /* The bounds on how far the logits move are loose sanity checks (random weights, no
     * outliers, two layers): 8 bits move them ~1e-2 of the largest logit, 4 bits ~0.1-0.4. */
    const struct {
        lmf_qtype t;
        double moved;
    } fmt[] = {{LMF_Q8_0, 0.02}, {LMF_Q4_0, 0.6}, {LMF_Q4_1, 0.6},
               {LMF_NF4, 0.6},   {LMF_FP4, 0.8},  {LMF_Q4_K, 0.6}};
    for (size_t i = 0; i < sizeof fmt / sizeof *fmt; i++) {
        run(fmt[i].t, lmf_backend_cpu(), 0, fmt[i].moved);
        run(fmt[i].t, lmf_backend_cpu(), 1, fmt[i].moved);
    }
    run(LMF_Q8_0, lmf_backend_ref(), 0, 0.02);
    run(LMF_NF4, lmf_backend_ref(), 1, 0.6);
    return test_summary("test_decode_quant");
}
