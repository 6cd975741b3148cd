/* The inference step over a paged KV cache gives the same next-token logits as the full
 * forward pass: chunked prefill, single-token decodes, two sequences interleaved in one step,
 * scattered block tables, GQA, Qwen2 biases, Qwen3 q/k norms, LoRA; cpu and ref backends. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/model.h"
#include "test.h"

enum { LEN = 13, BS = 4 };

static lmf_model *make(lmf_arch arch, const lmf_backend *be, int lora) {
    lmf_model_config c;
    lmf_model_preset(&c, arch, "tiny");
    c.hidden = 32, c.layers = 2, c.heads = 4, c.kv_heads = 2,
    c.head_dim = arch == LMF_ARCH_QWEN3 ? 12 : 8;
    c.ffn = 48, c.vocab = 60;
    lmf_model *m;
    CHECK(lmf_model_create(&m, &c, be) == 0);
    lmf_model_init_random(m, 3);
    lmf_rng r;
    lmf_rng_seed(&r, 4);
    for (int i = 0; i < m->n_params; i++)
        if (m->table[i].is_norm_or_bias)
            for (size_t k = 0; k < m->table[i].numel; k++)
                m->params[m->table[i].offset + k] += 0.2f * lmf_rng_normal(&r);
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
    lmf_seq_step s[2] = {{a, 5, 0, ta, 4, 1}, {b, 3, 0, tb, 4, 1}};
    CHECK(lmf_model_step(m, &kv, s, 2, lg) == 0);
    worst = fmax(worst, test_max_rel(lg, fa + 4 * V, V));
    worst = fmax(worst, test_max_rel(lg + V, fb + 2 * V, V));
    /* Step 2: a decodes one token while b prefills a chunk of 4 without asking for logits. */
    s[0] = (lmf_seq_step){a + 5, 1, 5, ta, 4, 1};
    s[1] = (lmf_seq_step){b + 3, 4, 3, tb, 4, 0};
    CHECK(lmf_model_step(m, &kv, s, 2, lg) == 0);
    worst = fmax(worst, test_max_rel(lg, fa + 5 * V, V));
    /* Then both decode to the end, one token a step. */
    for (int p = 6; p < LEN; p++) {
        s[0] = (lmf_seq_step){a + p, 1, p, ta, 4, 1};
        s[1] = (lmf_seq_step){b + p + 1, 1, p + 1, tb, 4, 1};
        int n = p + 1 < LEN ? 2 : 1;
        CHECK(lmf_model_step(m, &kv, s, n, lg) == 0);
        worst = fmax(worst, test_max_rel(lg, fa + (size_t)p * V, V));
        if (n == 2) worst = fmax(worst, test_max_rel(lg + V, fb + (size_t)(p + 1) * V, V));
    }
    CHECK_MSG(worst < 1e-4, "arch %d backend %s lora %d: step vs forward logits rel err %g", arch,
              be->name, lora, worst);
    /* Bad input is refused, not read out of bounds. */
    int32_t bad[1] = {99};
    s[0] = (lmf_seq_step){a, 1, 16, ta, 4, 1};
    CHECK(lmf_model_step(m, &kv, s, 1, lg) == LMF_EINVAL); /* table too short for position 16 */
    s[0] = (lmf_seq_step){a, 1, 0, bad, 1, 1};
    CHECK(lmf_model_step(m, &kv, s, 1, lg) == LMF_ERANGE); /* block 99 outside the pool */
    s[0] = (lmf_seq_step){bad, 1, 0, ta, 4, 1};
    CHECK(lmf_model_step(m, &kv, s, 1, lg) == LMF_ERANGE); /* token outside the vocabulary */
    lmf_kv_pool_free(&kv);
    free(fa), free(fb);
    lmf_lora_free(m->lora);
    lmf_model_free(m);
}

int main(void) {
    lmf_compute_set_threads(2);
    for (int arch = 0; arch < 4; arch++) run((lmf_arch)arch, lmf_backend_cpu(), 0);
    run(LMF_ARCH_QWEN3, lmf_backend_ref(), 0);
    run(LMF_ARCH_LLAMA, lmf_backend_cpu(), 1);
    return test_summary("test_decode");
}
