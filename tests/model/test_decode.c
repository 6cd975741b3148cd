/* The inference step over a paged KV cache gives the same next-token logits as the full
 * forward pass: chunked prefill, single-token decodes, two sequences interleaved in one step,
 * scattered block tables, GQA, Qwen2 biases, Qwen3 q/k norms, LoRA, several adapters mixed in
 * one step, bf16 inference weights; cpu and ref backends. On the cpu backend steps without
 * adapters run as one parallel region with work stealing (decode_fused.c): a wider model (many work
 * items per phase, tails of items, GQA) checks that path on 1, 2 and 3 threads. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/model.h"
#include "model/random_model.h"
#include "test.h"

enum { LEN = 13, BS = 4 };

static lmf_model *make(lmf_arch arch, const lmf_backend *be, int lora) {
    lmf_model_config c;
    lmf_model_preset(&c, arch, "tiny");
    c.hidden = 32, c.layers = 2, c.heads = 4, c.kv_heads = 2,
    c.head_dim = arch == LMF_ARCH_QWEN3 ? 12 : 8;
    c.ffn = 48, c.vocab = 60;
    lmf_rng r;
    lmf_model *m = test_random_model(&c, be, 3, &r);
    if (lora) {
        lmf_lora *l;
        CHECK(lmf_lora_create(&l, m, 4, 8, 0, (1u << LMF_N_LINEAR) - 1) == 0);
        for (size_t k = 0; k < l->numel; k++) l->params[k] = 0.1f * lmf_rng_normal(&r);
        m->lora = l;
    }
    return m;
}

/* Full-forward logits for every position of one sequence. */
static float *full_logits(lmf_model *m, const int32_t *ids, int n) {
    float *lg = malloc(sizeof(float) * n * m->cfg.vocab);
    lmf_batch b = {1, n, ids, NULL, NULL, NULL};
    double loss;
    CHECK(lmf_model_forward(m, &b, 0, &loss, NULL, lg, NULL) == 0);
    return lg;
}

static void run(lmf_arch arch, const lmf_backend *be, int lora) {
    lmf_model *m = make(arch, be, lora);
    int V = m->cfg.vocab;
    int32_t a[LEN], b[LEN];
    for (int i = 0; i < LEN; i++) a[i] = (i * 11 + 5) % V, b[i] = (i * 7 + 1) % V;
    float *fa = full_logits(m, a, LEN), *fb = full_logits(m, b, LEN);
    lmf_kv_pool kv;
    CHECK(lmf_kv_pool_create(&kv, m, BS, 10) == 0);
    /* Scattered, interleaved block tables: a uses 7,2,9,0; b uses 1,8,3,5. */
    int32_t ta[4] = {7, 2, 9, 0}, tb[4] = {1, 8, 3, 5};
    float lg[2 * 60];
    double worst = 0;
    /* Step 1: a prefills 5 tokens, b prefills 3. */
    lmf_seq_step s[2] = {{a, 5, 0, ta, 4, 1, NULL}, {b, 3, 0, tb, 4, 1, NULL}};
    CHECK(lmf_model_step(m, &kv, s, 2, lg) == 0);
    worst = fmax(worst, test_max_rel(lg, fa + 4 * V, V));
    worst = fmax(worst, test_max_rel(lg + V, fb + 2 * V, V));
    /* Step 2: a decodes one token while b prefills a chunk of 4 without asking for logits. */
    s[0] = (lmf_seq_step){a + 5, 1, 5, ta, 4, 1, NULL};
    s[1] = (lmf_seq_step){b + 3, 4, 3, tb, 4, 0, NULL};
    CHECK(lmf_model_step(m, &kv, s, 2, lg) == 0);
    worst = fmax(worst, test_max_rel(lg, fa + 5 * V, V));
    /* Then both decode to the end, one token a step. */
    for (int p = 6; p < LEN; p++) {
        s[0] = (lmf_seq_step){a + p, 1, p, ta, 4, 1, NULL};
        s[1] = (lmf_seq_step){b + p + 1, 1, p + 1, tb, 4, 1, NULL};
        int n = p + 1 < LEN ? 2 : 1;
        CHECK(lmf_model_step(m, &kv, s, n, lg) == 0);
        worst = fmax(worst, test_max_rel(lg, fa + (size_t)p * V, V));
        if (n == 2) worst = fmax(worst, test_max_rel(lg + V, fb + (size_t)(p + 1) * V, V));
    }
    CHECK_MSG(worst < 1e-4, "arch %d backend %s lora %d: step vs forward logits rel err %g", arch,
              be->name, lora, worst);
    /* Bad input is refused, not read out of bounds. */
    int32_t bad[1] = {99};
    s[0] = (lmf_seq_step){a, 1, 16, ta, 4, 1, NULL};
    CHECK(lmf_model_step(m, &kv, s, 1, lg) == LMF_EINVAL); /* table too short for position 16 */
    s[0] = (lmf_seq_step){a, 1, 0, bad, 1, 1, NULL};
    CHECK(lmf_model_step(m, &kv, s, 1, lg) == LMF_ERANGE); /* block 99 outside the pool */
    s[0] = (lmf_seq_step){bad, 1, 0, ta, 4, 1, NULL};
    CHECK(lmf_model_step(m, &kv, s, 1, lg) == LMF_ERANGE); /* token outside the vocabulary */
    lmf_kv_pool_free(&kv);
    free(fa), free(fb);
    lmf_lora_free(m->lora);
    lmf_model_free(m);
}

static lmf_lora *random_lora(lmf_model *m, int r, unsigned targets, uint64_t seed) {
    lmf_lora *l;
    lmf_rng g;
    lmf_rng_seed(&g, seed);
    CHECK(lmf_lora_create(&l, m, r, 2.0f * r, 0, targets) == 0);
    for (size_t k = 0; k < l->numel; k++) l->params[k] = 0.1f * lmf_rng_normal(&g);
    return l;
}

/* Several adapters in one step: each sequence's logits equal the full forward with only its
 * adapter (or none), whatever the others in the batch use. */
static void run_multi_lora(const lmf_backend *be) {
    lmf_model *m = make(LMF_ARCH_LLAMA, be, 0);
    int V = m->cfg.vocab;
    lmf_lora *la = random_lora(m, 4, (1u << LMF_N_LINEAR) - 1, 21),
             *lb = random_lora(m, 2, (1u << LMF_Q) | (1u << LMF_V) | (1u << LMF_DOWN), 22);
    const lmf_lora *which[4] = {la, NULL, lb, la};
    int32_t ids[4][LEN];
    float *ref[4];
    for (int i = 0; i < 4; i++) {
        for (int t = 0; t < LEN; t++) ids[i][t] = (t * (5 + 2 * i) + i) % V;
        m->lora = (lmf_lora *)which[i];
        ref[i] = full_logits(m, ids[i], LEN);
    }
    m->lora = NULL;
    lmf_kv_pool kv;
    CHECK(lmf_kv_pool_create(&kv, m, BS, 16) == 0);
    int32_t tables[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) tables[i][j] = j * 4 + i;
    float lg[4 * 60];
    double worst = 0;
    lmf_seq_step s[4];
    for (int i = 0; i < 4; i++) s[i] = (lmf_seq_step){ids[i], 6, 0, tables[i], 4, 1, which[i]};
    CHECK(lmf_model_step(m, &kv, s, 4, lg) == 0);
    for (int i = 0; i < 4; i++) worst = fmax(worst, test_max_rel(lg + i * V, ref[i] + 5 * V, V));
    for (int p = 6; p < LEN; p++) {
        for (int i = 0; i < 4; i++)
            s[i] = (lmf_seq_step){ids[i] + p, 1, p, tables[i], 4, 1, which[i]};
        CHECK(lmf_model_step(m, &kv, s, 4, lg) == 0);
        for (int i = 0; i < 4; i++)
            worst = fmax(worst, test_max_rel(lg + i * V, ref[i] + (size_t)p * V, V));
    }
    CHECK_MSG(worst < 1e-4, "backend %s: mixed adapters vs forward rel err %g", be->name, worst);
    lmf_kv_pool_free(&kv);
    for (int i = 0; i < 4; i++) free(ref[i]);
    lmf_lora_free(la), lmf_lora_free(lb);
    lmf_model_free(m);
}

/* Decode logits of one sequence, prefilled with 5 tokens then one token a step. */
static void decode_logits(lmf_model *m, const int32_t *ids, float *out) {
    lmf_kv_pool kv;
    CHECK(lmf_kv_pool_create(&kv, m, BS, 4) == 0);
    int32_t table[4] = {3, 1, 0, 2};
    int V = m->cfg.vocab;
    lmf_seq_step s = {ids, 5, 0, table, 4, 1, NULL};
    CHECK(lmf_model_step(m, &kv, &s, 1, out + 4 * V) == 0);
    for (int p = 5; p < LEN; p++) {
        s = (lmf_seq_step){ids + p, 1, p, table, 4, 1, NULL};
        CHECK(lmf_model_step(m, &kv, &s, 1, out + (size_t)p * V) == 0);
    }
    lmf_kv_pool_free(&kv);
}

/* bf16 inference weights: the cpu kernels equal the plain-C bf16 path (ref backend), and both
 * stay close to the f32 forward. */
static void run_bf16(void) {
    lmf_model *mc = make(LMF_ARCH_QWEN2, lmf_backend_cpu(), 0),
              *mr = make(LMF_ARCH_QWEN2, lmf_backend_ref(), 0);
    int V = mc->cfg.vocab;
    int32_t ids[LEN];
    for (int i = 0; i < LEN; i++) ids[i] = (i * 13 + 2) % V;
    float *f = full_logits(mc, ids, LEN);
    CHECK(lmf_model_set_infer_dtype(mc, LMF_BF16) == 0);
    CHECK(lmf_model_set_infer_dtype(mr, LMF_BF16) == 0);
    CHECK(lmf_model_set_infer_dtype(mr, LMF_F16) == LMF_EUNSUPPORTED);
    float *lc = calloc((size_t)LEN * V, sizeof(float)),
          *lr = calloc((size_t)LEN * V, sizeof(float));
    decode_logits(mc, ids, lc);
    decode_logits(mr, ids, lr);
    double e_ref = test_max_rel(lc + 4 * V, lr + 4 * V, (size_t)(LEN - 4) * V),
           e_f32 = test_max_rel(lc + 4 * V, f + 4 * V, (size_t)(LEN - 4) * V);
    CHECK_MSG(e_ref < 1e-4, "bf16 step: cpu vs ref rel err %g", e_ref);
    CHECK_MSG(e_f32 < 5e-2 && e_f32 > 0, "bf16 step vs f32 forward rel err %g", e_f32);
    /* Back to f32: the exact path again. */
    CHECK(lmf_model_set_infer_dtype(mc, LMF_F32) == 0 && !mc->infer_bf16);
    decode_logits(mc, ids, lc);
    double e = test_max_rel(lc + 4 * V, f + 4 * V, (size_t)(LEN - 4) * V);
    CHECK_MSG(e < 1e-4, "f32 again: rel err %g", e);
    free(f), free(lc), free(lr);
    lmf_model_free(mc), lmf_model_free(mr);
}

/* The one-region step on shapes with many items per phase: a batch of 3 sequences (one of them
 * prefilled in a chunk of 7 beside two decodes), their logits against the full forward (f32)
 * and the ref backend's step (its own kernels, the general path; bf16: a rounding of an
 * activation to bf16 that flips one way or the other moves the logits by ~1e-3 whichever
 * path computes them). Every row is computed whole by one thread, so the logits are the same
 * bits whatever the thread count and whichever thread stole which item (so the ref backend
 * runs with the first, 1-thread, call only). */
static float *wide_first[2]; /* the 1-thread logits of every step, f32 and bf16 */

static void run_wide(int threads) {
    lmf_compute_set_threads(threads);
    lmf_model_config c;
    lmf_model_preset(&c, LMF_ARCH_QWEN2, "tiny");
    c.hidden = 200, c.layers = 2, c.heads = 10, c.kv_heads = 2, c.head_dim = 20;
    c.ffn = 532, c.vocab = 1003;
    lmf_model *m, *mr;
    CHECK(lmf_model_create(&m, &c, lmf_backend_cpu()) == 0);
    CHECK(lmf_model_create(&mr, &c, lmf_backend_ref()) == 0);
    lmf_model_init_random(m, 5);
    lmf_model_init_random(mr, 5);
    int V = c.vocab, L = 44;
    int32_t ids[3][44];
    float *ref[3];
    for (int i = 0; i < 3; i++) {
        for (int t = 0; t < L; t++) ids[i][t] = (t * (17 + 4 * i) + 3 * i + 1) % V;
        ref[i] = full_logits(m, ids[i], L);
    }
    for (int bf = 0; bf < 2; bf++) {
        CHECK(lmf_model_set_infer_dtype(m, bf ? LMF_BF16 : LMF_F32) == 0);
        CHECK(lmf_model_set_infer_dtype(mr, bf ? LMF_BF16 : LMF_F32) == 0);
        lmf_kv_pool kv, kvr;
        CHECK(lmf_kv_pool_create(&kv, m, BS, 33) == 0);
        CHECK(lmf_kv_pool_create(&kvr, mr, BS, 33) == 0);
        int32_t tables[3][11];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 11; j++) tables[i][j] = 32 - (j * 3 + i);
        float lr[3 * 1003];
        if (!wide_first[bf]) wide_first[bf] = malloc(sizeof(float) * 16 * 3 * V);
        float *all = threads == 1 ? wide_first[bf] : malloc(sizeof(float) * 16 * 3 * V);
        double worst = 0, worst_r = 0;
        int n_logits = 0;
        /* Sequence 0 and 1 start with 33 and 37 tokens in one step, 2 waits; then 0 and 1
         * decode while 2 prefills 7, then all three decode until 0 reaches the end. */
        lmf_seq_step s[3] = {{ids[0], 33, 0, tables[0], 11, 1, NULL},
                             {ids[1], 37, 0, tables[1], 11, 1, NULL}};
        CHECK(lmf_model_step(m, &kv, s, 2, NULL) == 0); /* 70 rows in one step */
        if (threads == 1) CHECK(lmf_model_step(mr, &kvr, s, 2, NULL) == 0);
        int pos[3] = {33, 37, 0};
        for (int step = 0; pos[0] < L; step++) {
            int ns = 0, want[3];
            for (int i = 0; i < 3; i++) {
                int k = i == 2 && step == 0 ? 7 : 1;
                if (pos[i] + k > L) continue;
                s[ns] = (lmf_seq_step){ids[i] + pos[i], k, pos[i], tables[i], 11, 1, NULL};
                want[ns++] = i;
            }
            float *lg = all + (size_t)n_logits * V;
            n_logits += ns;
            CHECK(lmf_model_step(m, &kv, s, ns, lg) == 0);
            if (threads == 1) CHECK(lmf_model_step(mr, &kvr, s, ns, lr) == 0);
            for (int j = 0; j < ns; j++) {
                int i = want[j], last = pos[i] + s[j].n_new - 1;
                if (!bf)
                    worst = fmax(worst, test_max_rel(lg + j * V, ref[i] + (size_t)last * V, V));
                if (threads == 1) worst_r = fmax(worst_r, test_max_rel(lg + j * V, lr + j * V, V));
                pos[i] += s[j].n_new;
            }
        }
        CHECK_MSG(worst < 1e-4, "wide, %d threads: step vs forward rel err %g", threads, worst);
        CHECK_MSG(worst_r < (bf ? 1e-2 : 1e-4), "wide, %d threads, %s: cpu vs ref step rel err %g",
                  threads, bf ? "bf16" : "f32", worst_r);
        CHECK(n_logits <= 16 * 3);
        if (threads > 1) {
            CHECK_MSG(!memcmp(all, wide_first[bf], sizeof(float) * n_logits * V),
                      "wide, %s: %d threads differ from 1 thread", bf ? "bf16" : "f32", threads);
            free(all);
        }
        lmf_kv_pool_free(&kv), lmf_kv_pool_free(&kvr);
    }
    for (int i = 0; i < 3; i++) free(ref[i]);
    lmf_model_free(m), lmf_model_free(mr);
    lmf_compute_set_threads(2);
}

int main(void) {
    lmf_compute_set_threads(2);
    for (int arch = 0; arch < 4; arch++) run((lmf_arch)arch, lmf_backend_cpu(), 0);
    run(LMF_ARCH_QWEN3, lmf_backend_ref(), 0);
    run(LMF_ARCH_LLAMA, lmf_backend_cpu(), 1);
    run_multi_lora(lmf_backend_cpu());
    run_multi_lora(lmf_backend_ref());
    run_bf16();
    run_wide(1);
    run_wide(2);
    run_wide(3);
    free(wide_first[0]), free(wide_first[1]);
    return test_summary("test_decode");
}
