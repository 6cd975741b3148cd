/* The inference step over bfloat16 and int8 KV caches (kv_cache_dtype). A float32 cache gives
 * the full forward's logits (checked here again, < 1e-4); the same steps over a bf16 or int8
 * cache must stay within a stated bound of the float32-cache logits:
 *   - bf16 rounds each cached value to 8 significant bits: relative error <= 2^-8 (0.4 %),
 *   - int8 stores each (token, KV head) row as round(x / s) * s with s = max|x| / 127: absolute
 *     error <= s / 2, i.e. <= 0.4 % of the row's largest value.
 * Attention outputs are convex combinations of the value rows (error <= the value error) with
 * weights moved by the key error through the scores, and two layers of residual stream carry
 * that to the logits. A few times the per-value error, measured against max |logit|, is the
 * budget: BOUND below (1.5e-2, ~4x the per-value error), with the measured figure printed. The
 * error must also not be zero (the cache really holds the narrower type).
 * Checked on the one-region decode path (cpu backend, no adapter), the general path (cpu with a
 * LoRA adapter: write_cache + lmf_attn_paged_fast) and the ref backend (its own scalar attention
 * decoding the cache element by element); cpu and ref over the same cache type agree closely.
 * Head sizes 32 (the AVX-512 kernels) and 12 (the scalar ones), GQA, Qwen2 biases, Qwen3 q/k
 * norms, q8_0 weights; prefill chunks, then decodes, of two sequences on scattered blocks. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/model.h"
#include "lmforge/quant.h"
#include "model/random_model.h"
#include "test.h"

enum { LEN = 40, BS = 4, NB = 24 };
static const double BOUND = 1.5e-2;

static lmf_model *make(lmf_arch arch, int head_dim, const lmf_backend *be, int lora) {
    lmf_model_config c;
    lmf_model_preset(&c, arch, "tiny");
    c.hidden = 64, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = head_dim;
    c.ffn = 96, c.vocab = 80;
    lmf_rng r;
    lmf_model *m = test_random_model(&c, be, 9, &r);
    if (lora) {
        lmf_lora *l;
        CHECK(lmf_lora_create(&l, m, 4, 8, 0, (1u << LMF_N_LINEAR) - 1) == 0);
        for (size_t k = 0; k < l->numel; k++) l->params[k] = 0.05f * lmf_rng_normal(&r);
        m->lora = l;
    }
    return m;
}

/* The logits of every step of a fixed schedule over a cache of type t: sequence a prefills 9
 * then 8 tokens, b prefills 13 (in the second step), then both decode one token a step to LEN.
 * out gets (LEN, V) per sequence: row p holds the prediction after token p (rows the schedule
 * does not ask for stay 0). */
static void schedule(lmf_model *m, lmf_kv_dtype t, const int32_t *a, const int32_t *b, float *out_a,
                     float *out_b) {
    int V = m->cfg.vocab;
    lmf_kv_pool kv;
    CHECK(lmf_kv_pool_create_dtype(&kv, m, BS, NB, t) == 0);
    CHECK(kv.dtype == t);
    int32_t ta[10], tb[10]; /* interleaved, scattered */
    for (int i = 0; i < 10; i++) ta[i] = (NB - 1) - 2 * i, tb[i] = 2 * ((i * 3) % 10);
    memset(out_a, 0, sizeof(float) * LEN * V);
    memset(out_b, 0, sizeof(float) * LEN * V);
    float lg[2 * 80];
    lmf_seq_step s[2] = {{a, 9, 0, ta, 10, 1, NULL}};
    CHECK(lmf_model_step(m, &kv, s, 1, lg) == 0);
    memcpy(out_a + 8 * V, lg, sizeof(float) * V);
    s[0] = (lmf_seq_step){a + 9, 8, 9, ta, 10, 1, NULL};
    s[1] = (lmf_seq_step){b, 13, 0, tb, 10, 1, NULL};
    CHECK(lmf_model_step(m, &kv, s, 2, lg) == 0);
    memcpy(out_a + 16 * V, lg, sizeof(float) * V);
    memcpy(out_b + 12 * V, lg + V, sizeof(float) * V);
    for (int pa = 17, pb = 13; pa < LEN; pa++, pb++) {
        s[0] = (lmf_seq_step){a + pa, 1, pa, ta, 10, 1, NULL};
        s[1] = (lmf_seq_step){b + pb, 1, pb, tb, 10, 1, NULL};
        CHECK(lmf_model_step(m, &kv, s, 2, lg) == 0);
        memcpy(out_a + (size_t)pa * V, lg, sizeof(float) * V);
        memcpy(out_b + (size_t)pb * V, lg + V, sizeof(float) * V);
    }
    lmf_kv_pool_free(&kv);
}

/* max over the rows the schedule filled of test_max_rel(x row, y row). */
static double rows_rel(const float *x, const float *y, int V) {
    double w = 0;
    for (int p = 8; p < LEN; p++) {
        int any = 0;
        for (int v = 0; v < V && !any; v++) any = y[(size_t)p * V + v] != 0;
        if (any) w = fmax(w, test_max_rel(x + (size_t)p * V, y + (size_t)p * V, V));
    }
    return w;
}

static void run(lmf_arch arch, int head_dim, int lora, int q8) {
    lmf_model *mc = make(arch, head_dim, lmf_backend_cpu(), lora),
              *mr = make(arch, head_dim, lmf_backend_ref(), lora);
    if (q8) { /* weights in q8_0 blocks: the cache is the same whatever the products read */
        CHECK(lmf_model_quantize_base(mc, LMF_Q8_0) == 0);
        CHECK(lmf_model_quantize_base(mr, LMF_Q8_0) == 0);
    }
    int V = mc->cfg.vocab;
    int32_t a[LEN], b[LEN];
    for (int i = 0; i < LEN; i++) a[i] = (i * 11 + 5) % V, b[i] = (i * 7 + 3) % V;
    size_t n = (size_t)LEN * V;
    float *f32a = malloc(sizeof(float) * n), *f32b = malloc(sizeof(float) * n),
          *xa = malloc(sizeof(float) * n), *xb = malloc(sizeof(float) * n),
          *ra = malloc(sizeof(float) * n), *rb = malloc(sizeof(float) * n);
    /* The float32 cache equals the full forward. */
    schedule(mc, LMF_KV_F32, a, b, f32a, f32b);
    lmf_batch fb = {1, LEN, a, NULL, NULL, NULL};
    double loss;
    CHECK(lmf_model_forward(mc, &fb, 0, &loss, NULL, xa, NULL) == 0);
    double e0 = rows_rel(xa, f32a, V);
    CHECK_MSG(e0 < (q8 ? 1e-3 : 1e-4),
              "arch %d D %d lora %d q8 %d: f32 cache vs forward rel err %g", arch, head_dim, lora,
              q8, e0);
    for (int t = LMF_KV_BF16; t <= LMF_KV_INT8; t++) {
        const char *name = lmf_kv_dtype_name((lmf_kv_dtype)t);
        schedule(mc, (lmf_kv_dtype)t, a, b, xa, xb);
        schedule(mr, (lmf_kv_dtype)t, a, b, ra, rb);
        double e = fmax(rows_rel(xa, f32a, V), rows_rel(xb, f32b, V)),
               er = fmax(rows_rel(ra, f32a, V), rows_rel(rb, f32b, V)),
               ecr = fmax(rows_rel(xa, ra, V), rows_rel(xb, rb, V));
        printf("arch %d D %2d lora %d q8 %d %-8s: vs f32 cache: cpu %.2e ref %.2e; cpu vs ref "
               "%.2e\n",
               arch, head_dim, lora, q8, name, e, er, ecr);
        CHECK_MSG(e < BOUND && e > 0, "%s cache (cpu): rel err %g vs the f32 cache", name, e);
        CHECK_MSG(er < BOUND && er > 0, "%s cache (ref): rel err %g vs the f32 cache", name, er);
        /* Both backends store the same values but for the rare K or V element whose last-bit
         * difference between the two paths' products moves it across a rounding boundary. */
        CHECK_MSG(ecr < 2e-3, "%s cache: cpu vs ref rel err %g", name, ecr);
    }
    free(f32a), free(f32b), free(xa), free(xb), free(ra), free(rb);
    if (lora) lmf_lora_free(mc->lora), lmf_lora_free(mr->lora);
    lmf_model_free(mc), lmf_model_free(mr);
}

/* Pool sizes follow the element type: the same bytes hold 2x the tokens in bf16 and
 * 4 D / (D + 4) x in int8 (one float32 scale per row of D values). */
static void check_sizes(void) {
    lmf_model_config c;
    lmf_model_preset(&c, LMF_ARCH_LLAMA, "llama-110m");
    size_t f = lmf_kv_bytes_per_block(&c, 16, LMF_KV_F32),
           h = lmf_kv_bytes_per_block(&c, 16, LMF_KV_BF16),
           q = lmf_kv_bytes_per_block(&c, 16, LMF_KV_INT8);
    size_t rows = 2 * (size_t)c.layers * 16 * c.kv_heads;
    CHECK(f == rows * c.head_dim * 4 && h == f / 2 && q == rows * (c.head_dim + 4));
    printf("llama-110m, 16-token block: f32 %zu, bf16 %zu, int8 %zu bytes (%.2fx fewer)\n", f, h, q,
           (double)f / q);
    lmf_kv_dtype t;
    CHECK(lmf_kv_dtype_parse("auto", &t) == 0 && t == LMF_KV_F32);
    CHECK(lmf_kv_dtype_parse("bfloat16", &t) == 0 && t == LMF_KV_BF16);
    CHECK(lmf_kv_dtype_parse("int8", &t) == 0 && t == LMF_KV_INT8);
    CHECK(lmf_kv_dtype_parse("fp8", &t) == LMF_EUNSUPPORTED);
}

int main(void) {
    lmf_compute_set_threads(2);
    check_sizes();
    run(LMF_ARCH_LLAMA, 32, 0, 0);
    run(LMF_ARCH_LLAMA, 32, 1, 0);
    run(LMF_ARCH_QWEN2, 16, 0, 0);
    run(LMF_ARCH_QWEN3, 12, 0, 0);
    run(LMF_ARCH_LLAMA, 32, 0, 1);
    return test_summary("test_decode_kvdtype");
}
