/* Model-level checks that need no Python: config.json validation, the cpu backend against the
 * reference backend on whole forward/backward passes (base and LoRA), finite differences,
 * packing equivalence (a packed row scores like its sequences run separately), LoRA
 * invariants. The numbers themselves are checked against transformers in tests/reference. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmforge/core.h"
#include "lmforge/model.h"
#include "test.h"

static char tmpdir[64];

static int write_config(const char *json) {
    char *p = lmf_path_join(tmpdir, "config.json");
    int rc = lmf_file_write_atomic(p, json, strlen(json));
    lmf_model_config c;
    if (!rc) rc = lmf_model_config_load(&c, p);
    free(p);
    return rc;
}

#define BASE_CFG                                                                                   \
    "\"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "                  \
    "\"intermediate_size\": 48, \"vocab_size\": 50"

static void test_config_errors(void) {
    CHECK(write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE_CFG "}") == 0);
    CHECK(write_config("{\"architectures\": [\"GPT2LMHeadModel\"], " BASE_CFG "}") ==
          LMF_EUNSUPPORTED);
    CHECK(strstr(lmf_last_error(), "GPT2LMHeadModel") && strstr(lmf_last_error(), "config.json"));
    CHECK(write_config("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 32}") ==
          LMF_EFORMAT);
    CHECK(strstr(lmf_last_error(), "num_hidden_layers") != NULL);
    CHECK(write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE_CFG
                       ", \"num_key_value_heads\": 3}") == LMF_EINVAL);
    CHECK(strstr(lmf_last_error(), "num_key_value_heads") != NULL);
    CHECK(write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE_CFG
                       ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2}}") ==
          LMF_EUNSUPPORTED);
    CHECK(strstr(lmf_last_error(), "yarn") != NULL);
    CHECK(write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE_CFG
                       ", \"rms_norm_eps\": \"x\"}") == LMF_EFORMAT);
    CHECK(strstr(lmf_last_error(), "rms_norm_eps") != NULL);
    CHECK(write_config("{\"architectures\": [\"LlamaForCausalLM\"], " BASE_CFG
                       ", \"hidden_act\": \"gelu\"}") == LMF_EUNSUPPORTED);
    CHECK(write_config("{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE_CFG) == LMF_EFORMAT);
    CHECK(strstr(lmf_last_error(), "line") != NULL);
    lmf_model_config c;
    CHECK(write_config("{\"architectures\": [\"Qwen3ForCausalLM\"], " BASE_CFG
                       ", \"head_dim\": 12, \"rope_scaling\": {\"rope_type\": \"llama3\", "
                       "\"factor\": 8, \"original_max_position_embeddings\": 64}}") == 0);
    char *p = lmf_path_join(tmpdir, "config.json");
    CHECK(lmf_model_config_load(&c, p) == 0 && c.qk_norm && c.head_dim == 12 && !c.attn_bias &&
          c.rope_kind == LMF_ROPE_LLAMA3 && c.rope_low_freq == 1.0f && c.rope_high_freq == 4.0f);
    free(p);
}

static lmf_model_config small_cfg(lmf_arch arch, int tied) {
    lmf_model_config c;
    lmf_model_preset(&c, arch, "tiny");
    c.hidden = 32, c.layers = 2, c.heads = 4, c.kv_heads = 2,
    c.head_dim = arch == LMF_ARCH_QWEN3 ? 12 : 8;
    c.ffn = 48, c.vocab = 50, c.tied = tied;
    if (arch == LMF_ARCH_LLAMA) {
        c.rope_kind = LMF_ROPE_LLAMA3, c.rope_factor = 4, c.rope_low_freq = 1, c.rope_high_freq = 4;
        c.rope_orig_max_pos = 16;
    }
    return c;
}

static lmf_model *make(const lmf_model_config *c, const lmf_backend *be, uint64_t seed) {
    lmf_model *m = NULL;
    CHECK(lmf_model_create(&m, c, be) == 0);
    lmf_model_init_random(m, seed);
    lmf_rng r;
    lmf_rng_seed(&r, seed + 1);
    for (int i = 0; i < m->n_params; i++)
        if (m->table[i].is_norm_or_bias)
            for (size_t k = 0; k < m->table[i].numel; k++)
                m->params[m->table[i].offset + k] += 0.1f * lmf_rng_normal(&r);
    return m;
}

enum { B = 2, T = 9 };
static int32_t ids[B * T], labels[B * T], pos[B * T], seg[B * T];

static void make_batch(void) {
    for (int i = 0; i < B * T; i++) {
        ids[i] = (i * 7 + 3) % 50;
        labels[i] = (i % 5 == 2) ? -100 : ids[i];
        int packed = i < T && i >= 4; /* row 0 = [0..3] + [4..8] */
        seg[i] = packed;
        pos[i] = packed ? i - 4 : i % T;
    }
}

static void test_backends_agree(lmf_arch arch, int tied, int lora_on) {
    lmf_model_config c = small_cfg(arch, tied);
    lmf_model *mc = make(&c, lmf_backend_cpu(), 5), *mr = make(&c, lmf_backend_ref(), 5);
    lmf_lora *lc = NULL, *lr = NULL;
    if (lora_on) {
        unsigned t;
        lmf_lora_parse_targets("q_proj,v_proj,o_proj,down_proj", &t);
        CHECK(lmf_lora_create(&lc, mc, 4, 8, 0, t) == 0 &&
              lmf_lora_create(&lr, mr, 4, 8, 0, t) == 0);
        lmf_lora_init(lc, mc, 3);
        lmf_rng rr;
        lmf_rng_seed(&rr, 9);
        for (size_t k = 0; k < lc->numel; k++) lc->params[k] += 0.05f * lmf_rng_normal(&rr);
        memcpy(lr->params, lc->params, lc->numel * 4);
        lmf_lora_enable_grads(lc), lmf_lora_enable_grads(lr);
        mc->lora = lc, mr->lora = lr;
    } else {
        lmf_model_enable_grads(mc), lmf_model_enable_grads(mr);
    }
    lmf_batch b = {B, T, ids, labels, pos, seg};
    double l1, l2;
    CHECK(lmf_model_forward(mc, &b, 1, &l1, NULL, NULL, NULL) == 0 && lmf_model_backward(mc) == 0);
    CHECK(lmf_model_forward(mr, &b, 1, &l2, NULL, NULL, NULL) == 0 && lmf_model_backward(mr) == 0);
    CHECK_NEAR(l1, l2, 1e-5 * fabs(l2));
    if (lora_on) {
        CHECK(mc->grads == NULL); /* base frozen: no gradient buffer at all */
        CHECK_MSG(test_max_rel(lc->grads, lr->grads, lc->numel) < 1e-4, "lora grads cpu vs ref %g",
                  test_max_rel(lc->grads, lr->grads, lc->numel));
    } else {
        for (int i = 0; i < mc->n_params; i++) {
            const lmf_param *p = &mc->table[i];
            double e = test_max_rel(mc->grads + p->offset, mr->grads + p->offset, p->numel);
            CHECK_MSG(e < 1e-4, "arch %d %s: cpu vs ref grad rel err %g", arch, p->name, e);
        }
    }
    /* Finite differences (reference backend) on a few entries of every parameter. */
    if (!lora_on) {
        double worst = 0;
        for (int i = 0; i < mr->n_params; i++) {
            const lmf_param *p = &mr->table[i];
            for (size_t k = 0; k < p->numel; k += p->numel / 3 + 1) {
                float *x = mr->params + p->offset + k, keep = *x, h = 1e-2f;
                double fp, fm;
                *x = keep + h;
                lmf_model_forward(mr, &b, 0, &fp, NULL, NULL, NULL);
                *x = keep - h;
                lmf_model_forward(mr, &b, 0, &fm, NULL, NULL, NULL);
                *x = keep;
                double num = (fp - fm) / (2 * h), an = mr->grads[p->offset + k];
                double err = fabs(num - an) / (fabs(num) + 1e-2);
                if (err > worst) worst = err;
            }
        }
        CHECK_MSG(worst < 2e-2, "arch %d: finite differences worst rel err %g", arch, worst);
    }
    lmf_model_free(mc), lmf_model_free(mr), lmf_lora_free(lc), lmf_lora_free(lr);
}

/* A packed row must score exactly like its two sequences run as separate rows. */
static void test_packing_equivalence(void) {
    lmf_model_config c = small_cfg(LMF_ARCH_QWEN2, 0);
    lmf_model *m = make(&c, lmf_backend_cpu(), 11);
    int32_t pid[10] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14},
            ppos[10] = {0, 1, 2, 3, 0, 1, 2, 3, 4, 5};
    int32_t pseg[10] = {0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
    float lp_packed[10], lp_a[4], lp_b[6];
    double loss;
    lmf_batch bp = {1, 10, pid, pid, ppos, pseg};
    CHECK(lmf_model_forward(m, &bp, 0, &loss, NULL, NULL, lp_packed) == 0);
    lmf_batch ba = {1, 4, pid, pid, NULL, NULL}, bb = {1, 6, pid + 4, pid + 4, NULL, NULL};
    lmf_model_forward(m, &ba, 0, &loss, NULL, NULL, lp_a);
    lmf_model_forward(m, &bb, 0, &loss, NULL, NULL, lp_b);
    for (int i = 0; i < 3; i++) CHECK_NEAR(lp_packed[i], lp_a[i], 1e-5);
    CHECK(lp_packed[3] == 0.0f); /* segment end predicts nothing */
    for (int i = 0; i < 5; i++) CHECK_NEAR(lp_packed[4 + i], lp_b[i], 1e-5);
    lmf_model_free(m);
}

static void test_lora_invariants(void) {
    lmf_model_config c = small_cfg(LMF_ARCH_LLAMA, 1);
    lmf_model *m = make(&c, lmf_backend_cpu(), 13);
    lmf_batch b = {B, T, ids, labels, pos, seg};
    double base, with, eval_drop;
    lmf_model_forward(m, &b, 0, &base, NULL, NULL, NULL);
    lmf_lora *l;
    CHECK(lmf_lora_create(&l, m, 8, 16, 0.5f, (1u << LMF_N_LINEAR) - 1) == 0);
    lmf_lora_init(l, m, 1);
    m->lora = l;
    lmf_model_forward(m, &b, 0, &with, NULL, NULL, NULL);
    CHECK_NEAR(with, base, 1e-6); /* B = 0 at init: the adapter starts as a no-op */
    for (size_t k = 0; k < l->numel; k++) l->params[k] += 0.05f;
    lmf_model_forward(m, &b, 0, &eval_drop, NULL, NULL, NULL);
    l->dropout = 0;
    double no_drop;
    lmf_model_forward(m, &b, 0, &no_drop, NULL, NULL, NULL);
    CHECK_NEAR(eval_drop, no_drop, 1e-6); /* dropout only while training */
    CHECK(fabs(no_drop - base) > 1e-4);
    unsigned t;
    CHECK(lmf_lora_parse_targets("q_proj,lm_head", &t) == LMF_EINVAL &&
          strstr(lmf_last_error(), "lm_head"));
    CHECK(lmf_lora_create(&l, m, 0, 1, 0, 1) == LMF_EINVAL);
    lmf_lora_free(m->lora);
    lmf_model_free(m);
}

/* LoRA dropout: with the mask stream reseeded before each pass, the analytic gradients of A
 * and B must match central differences (dropout's scaling and masking in backward). */
static void test_lora_dropout_gradients(void) {
    lmf_model_config c = small_cfg(LMF_ARCH_QWEN2, 0);
    lmf_model *m = make(&c, lmf_backend_cpu(), 21);
    lmf_lora *l;
    CHECK(lmf_lora_create(&l, m, 4, 8, 0.3f, (1u << LMF_N_LINEAR) - 1) == 0);
    lmf_lora_init(l, m, 2);
    lmf_rng r;
    lmf_rng_seed(&r, 5);
    for (size_t k = 0; k < l->numel; k++) l->params[k] += 0.1f * lmf_rng_normal(&r);
    lmf_lora_enable_grads(l);
    m->lora = l;
    lmf_batch b = {B, T, ids, labels, pos, seg};
    double loss, fp, fm, worst = 0;
    lmf_rng_seed(&l->dropout_rng, 77);
    CHECK(lmf_model_forward(m, &b, 1, &loss, NULL, NULL, NULL) == 0 && lmf_model_backward(m) == 0);
    for (int i = 0; i < l->n_params; i++) {
        const lmf_param *p = &l->table[i];
        for (size_t k = 0; k < p->numel; k += p->numel / 4 + 1) {
            float *x = l->params + p->offset + k, keep = *x, h = 1e-2f;
            *x = keep + h;
            lmf_rng_seed(&l->dropout_rng, 77);
            lmf_model_forward(m, &b, 1, &fp, NULL, NULL, NULL);
            *x = keep - h;
            lmf_rng_seed(&l->dropout_rng, 77);
            lmf_model_forward(m, &b, 1, &fm, NULL, NULL, NULL);
            *x = keep;
            double num = (fp - fm) / (2 * h), an = l->grads[p->offset + k];
            worst = fmax(worst, fabs(num - an) / (fabs(num) + 1e-2));
        }
    }
    CHECK_MSG(worst < 2e-2, "LoRA dropout finite differences: worst rel err %g", worst);
    lmf_rng_seed(&l->dropout_rng, 78);
    lmf_model_forward(m, &b, 1, &fp, NULL, NULL, NULL);
    CHECK(fabs(fp - loss) > 1e-6); /* another mask gives another loss: dropout is live */
    lmf_lora_free(l);
    lmf_model_free(m);
}

int main(void) {
    strcpy(tmpdir, "/tmp/lmf-test-model-XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    lmf_compute_set_threads(2);
    make_batch();
    test_config_errors();
    for (int arch = 0; arch < 4; arch++) test_backends_agree((lmf_arch)arch, arch == 1, 0);
    test_backends_agree(LMF_ARCH_QWEN3, 0, 1);
    test_backends_agree(LMF_ARCH_LLAMA, 1, 1);
    test_packing_equivalence();
    test_lora_invariants();
    test_lora_dropout_gradients();
    char *p = lmf_path_join(tmpdir, "config.json");
    unlink(p);
    free(p);
    rmdir(tmpdir);
    return test_summary("test_model");
}
