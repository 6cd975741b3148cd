/* The model's compute modes (lmf_model_set_compute): bf16 mixed precision against the float32
 * passes of the same model, the cpu bf16 path against the reference backend's, the fallback to
 * float32 (LMF_NO_BF16), the refresh of cached bf16 weights, and per-layer activation
 * checkpointing against the plain path (bit-identical gradients, LoRA dropout included). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/model.h"
#include "test.h"

enum { B = 2, T = 24, V = 64 };
static int32_t ids[B * T], labels[B * T], pos[B * T], seg[B * T];

static void make_batch(void) {
    for (int i = 0; i < B * T; i++) {
        ids[i] = (i * 7 + 3) % V;
        labels[i] = (i % 5 == 2) ? -100 : ids[i];
        int packed = i < T && i >= 10; /* row 0 = two packed sequences */
        seg[i] = packed;
        pos[i] = packed ? i - 10 : i % T;
    }
}

static lmf_model_config cfg_of(lmf_arch arch) {
    lmf_model_config c;
    lmf_model_preset(&c, arch, "tiny");
    c.hidden = 64, c.layers = 3, c.heads = 4, c.kv_heads = 2, c.head_dim = 16;
    c.ffn = 96, c.vocab = V, c.tied = arch == LMF_ARCH_LLAMA;
    return c;
}

/* A model with random weights (norm weights and biases perturbed too); with lora_dropout >= 0
 * a LoRA adapter on every linear with non-zero B, else full fine-tuning. */
typedef struct setup {
    lmf_model *m;
    lmf_lora *l;
} setup;

static setup make(lmf_arch arch, const lmf_backend *be, float lora_dropout) {
    lmf_model_config c = cfg_of(arch);
    setup s = {0};
    CHECK(lmf_model_create(&s.m, &c, be) == 0);
    lmf_model_init_random(s.m, 5);
    lmf_rng r;
    lmf_rng_seed(&r, 6);
    for (int i = 0; i < s.m->n_params; i++)
        if (s.m->table[i].is_norm_or_bias)
            for (size_t k = 0; k < s.m->table[i].numel; k++)
                s.m->params[s.m->table[i].offset + k] += 0.1f * lmf_rng_normal(&r);
    if (lora_dropout >= 0) {
        CHECK(lmf_lora_create(&s.l, s.m, 4, 8, lora_dropout, (1u << LMF_N_LINEAR) - 1) == 0);
        lmf_lora_init(s.l, s.m, 3);
        for (size_t k = 0; k < s.l->numel; k++) s.l->params[k] += 0.05f * lmf_rng_normal(&r);
        CHECK(lmf_lora_enable_grads(s.l) == 0);
        s.m->lora = s.l;
    } else {
        CHECK(lmf_model_enable_grads(s.m) == 0);
    }
    return s;
}

static void drop(setup *s) {
    lmf_model_free(s->m);
    lmf_lora_free(s->l);
}

static float *grads_of(const setup *s) {
    return s->l ? s->l->grads : s->m->grads;
}

static size_t n_grads(const setup *s) {
    return s->l ? s->l->numel : s->m->numel;
}

/* One training pass: zeroed gradients, forward with want_grad, backward. */
static double step(setup *s) {
    double loss = 0;
    lmf_batch b = {B, T, ids, labels, pos, seg};
    if (s->l)
        lmf_lora_zero_grads(s->l);
    else
        lmf_model_zero_grads(s->m);
    if (s->l) lmf_rng_seed(&s->l->dropout_rng, 99);
    CHECK(lmf_model_forward(s->m, &b, 1, &loss, NULL, NULL, NULL) == 0);
    CHECK(lmf_model_backward(s->m) == 0);
    return loss;
}

static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return aa == 0 && bb == 0 ? 1.0 : ab / sqrt(aa * bb + 1e-300);
}

/* Per tensor (every base parameter, or every LoRA A/B): the worst cosine similarity. */
static double worst_cosine(const setup *x, const setup *y, const char **where) {
    const lmf_param *tab = x->l ? x->l->table : x->m->table;
    int np = x->l ? x->l->n_params : x->m->n_params;
    double worst = 1;
    for (int i = 0; i < np; i++) {
        double c = cosine(grads_of(x) + tab[i].offset, grads_of(y) + tab[i].offset, tab[i].numel);
        if (c < worst) worst = c, *where = tab[i].name;
    }
    return worst;
}

/* bf16 against float32 on the same model. bf16 keeps 8 significant bits, so every GEMM input
 * carries a relative rounding error up to 2^-9 (~0.2%); the errors are independent, so a dot
 * product of K terms accumulated in float32 errs by ~2^-9 / sqrt(K) relative to its terms'
 * scale, and a loss averaged over many tokens by less still. Measured here (printed): loss
 * ~3e-5 relative, worst per-tensor gradient cosine ~0.99994. The bounds, loss 2e-3 relative
 * and cosine > 0.999 for every gradient tensor, leave >= 15x margin for other seeds and
 * shapes, and are far below what a wrong bf16 GEMM (a transposed or stale weight, a missing
 * term) gives: O(1) errors. */
static void test_bf16_close(lmf_arch arch, const lmf_backend *be, float lora_dropout) {
    setup f = make(arch, be, lora_dropout), h = make(arch, be, lora_dropout);
    lmf_compute_options o = {.bf16 = 1};
    CHECK(lmf_model_set_compute(h.m, &o) == 0 && h.m->bf16 == 1);
    double lf = step(&f), lh = step(&h);
    const char *where = "";
    double cs = worst_cosine(&f, &h, &where), rel = fabs(lh - lf) / fabs(lf);
    printf("bf16 vs f32 (%s, arch %d, %s): loss %.6f vs %.6f (rel %.2g), worst grad cosine "
           "%.6f (%s)\n",
           be->name, arch, lora_dropout >= 0 ? "lora" : "full", lh, lf, rel, cs, where);
    CHECK_MSG(rel < 2e-3, "bf16 loss rel err %g", rel);
    CHECK_MSG(cs > 0.999, "bf16 grad cosine %g at %s", cs, where);
    CHECK(rel > 0 || cs < 1); /* bf16 really changed something */
    drop(&f), drop(&h);
}

/* The cpu bf16 path (oneDNN) against the reference backend's bf16 path: same bf16 operands,
 * exact products, so only float32 accumulation order differs; but an intermediate that lands
 * on the other side of a bf16 rounding boundary moves by one bf16 step (2^-8 relative), and a
 * gradient element built from few terms can inherit that (measured: 6e-3). Hence 3e-2 on the
 * max error per tensor, cosine > 0.99999 per tensor, and 1e-4 on the loss. */
static void test_bf16_cpu_vs_ref(void) {
    if (!lmf_backend_cpu()->has_bf16()) {
        printf("test_compute: cpu has no native bf16 here; cpu-vs-ref bf16 check skipped\n");
        return;
    }
    setup c = make(LMF_ARCH_QWEN2, lmf_backend_cpu(), -1),
          r = make(LMF_ARCH_QWEN2, lmf_backend_ref(), -1);
    lmf_compute_options o = {.bf16 = 1};
    lmf_model_set_compute(c.m, &o), lmf_model_set_compute(r.m, &o);
    double lc = step(&c), lr = step(&r);
    CHECK_MSG(fabs(lc - lr) < 1e-4 * fabs(lr), "bf16 loss cpu %g vs ref %g", lc, lr);
    double worst = 0;
    for (int i = 0; i < c.m->n_params; i++) {
        const lmf_param *p = &c.m->table[i];
        double e = test_max_rel(c.m->grads + p->offset, r.m->grads + p->offset, p->numel);
        if (e > worst) worst = e;
    }
    const char *where = "";
    double cs = worst_cosine(&c, &r, &where);
    printf("bf16 cpu vs ref: loss %.7f vs %.7f, worst grad rel err %.3g, worst cosine %.7f\n", lc,
           lr, worst, cs);
    CHECK_MSG(worst < 3e-2, "bf16 grads cpu vs ref: %g", worst);
    CHECK_MSG(cs > 0.99999, "bf16 grads cpu vs ref: cosine %g at %s", cs, where);
    drop(&c), drop(&r);
}

/* LMF_NO_BF16=1: asking for bf16 leaves the model in float32 (m->bf16 == 0) and gives exactly
 * the float32 numbers. */
static void test_bf16_fallback(void) {
    setup f = make(LMF_ARCH_LLAMA, lmf_backend_cpu(), -1),
          h = make(LMF_ARCH_LLAMA, lmf_backend_cpu(), -1);
    setenv("LMF_NO_BF16", "1", 1);
    lmf_compute_options o = {.bf16 = 1};
    CHECK(lmf_model_set_compute(h.m, &o) == 0);
    unsetenv("LMF_NO_BF16");
    CHECK(h.m->bf16 == 0 && h.m->wbf == NULL);
    double lf = step(&f), lh = step(&h);
    CHECK(lf == lh && memcmp(f.m->grads, h.m->grads, f.m->numel * sizeof(float)) == 0);
    /* Switching bf16 on later (env unset) works on the same model, and off again. */
    CHECK(lmf_model_set_compute(h.m, &o) == 0);
    CHECK(h.m->bf16 == lmf_backend_cpu()->has_bf16());
    o.bf16 = 0;
    CHECK(lmf_model_set_compute(h.m, &o) == 0 && h.m->bf16 == 0 && h.m->wbf == NULL);
    CHECK(step(&h) == lf);
    drop(&f), drop(&h);
}

/* The bf16 weight copies are made once: a change to the float32 weights is seen only after
 * lmf_model_weights_changed, and then exactly as a fresh model with those weights sees it. */
static void test_bf16_weights_changed(void) {
    const lmf_backend *be = lmf_backend_ref();
    setup a = make(LMF_ARCH_QWEN3, be, -1), b = make(LMF_ARCH_QWEN3, be, -1);
    lmf_compute_options o = {.bf16 = 1};
    lmf_model_set_compute(a.m, &o);
    double before = step(&a);
    for (size_t k = 0; k < a.m->numel; k++) a.m->params[k] *= 1.01f;
    double stale = step(&a);
    lmf_model_weights_changed(a.m);
    double fresh = step(&a);
    for (size_t k = 0; k < b.m->numel; k++) b.m->params[k] *= 1.01f;
    lmf_model_set_compute(b.m, &o);
    double ref = step(&b);
    CHECK(stale != before); /* float32 parts (norms, embedding) did change */
    CHECK(fresh != stale);
    CHECK(fresh == ref && memcmp(a.m->grads, b.m->grads, a.m->numel * sizeof(float)) == 0);
    drop(&a), drop(&b);
}

/* Checkpointing recomputes each layer with the same kernels, inputs and dropout masks, so
 * losses, gradients and the dropout stream afterwards are bit-identical to the plain path;
 * the activation block shrinks. */
static void test_checkpointing(lmf_arch arch, const lmf_backend *be, float lora_dropout, int bf16) {
    setup p = make(arch, be, lora_dropout), k = make(arch, be, lora_dropout);
    lmf_compute_options op = {.bf16 = bf16}, ok = {.bf16 = bf16, .grad_ckpt = 1};
    lmf_model_set_compute(p.m, &op), lmf_model_set_compute(k.m, &ok);
    for (int rep = 0; rep < 2; rep++) { /* twice: the second pass reuses the activations */
        double lp = step(&p), lk = step(&k);
        CHECK_MSG(lp == lk, "ckpt loss %.9g vs %.9g", lk, lp);
        size_t n = n_grads(&p);
        int same = memcmp(grads_of(&p), grads_of(&k), n * sizeof(float)) == 0;
        CHECK_MSG(same, "%s arch %d dropout %g bf16 %d: checkpointed grads differ (max rel %g)",
                  be->name, arch, lora_dropout, bf16, test_max_rel(grads_of(&k), grads_of(&p), n));
        if (p.l) CHECK(memcmp(&p.l->dropout_rng, &k.l->dropout_rng, sizeof(lmf_rng)) == 0);
    }
    size_t ap = lmf_model_activation_bytes(p.m), ak = lmf_model_activation_bytes(k.m);
    CHECK_MSG(ak < ap, "activations with ckpt %zu, without %zu", ak, ap);
    drop(&p), drop(&k);
}

/* The mode can change between passes: activations are laid out again, results unchanged. */
static void test_mode_switch(void) {
    setup s = make(LMF_ARCH_MISTRAL, lmf_backend_cpu(), 0.2f);
    double l0 = step(&s);
    float *g0 = malloc(n_grads(&s) * sizeof(float));
    memcpy(g0, grads_of(&s), n_grads(&s) * sizeof(float));
    lmf_compute_options o = {.grad_ckpt = 1};
    lmf_model_set_compute(s.m, &o);
    CHECK(step(&s) == l0 && memcmp(g0, grads_of(&s), n_grads(&s) * sizeof(float)) == 0);
    o.grad_ckpt = 0;
    lmf_model_set_compute(s.m, &o);
    CHECK(step(&s) == l0 && memcmp(g0, grads_of(&s), n_grads(&s) * sizeof(float)) == 0);
    /* A mode change between forward and backward: backward refuses, nothing is read stale. */
    lmf_batch b = {B, T, ids, labels, pos, seg};
    double loss;
    CHECK(lmf_model_forward(s.m, &b, 1, &loss, NULL, NULL, NULL) == 0);
    o.grad_ckpt = 1;
    lmf_model_set_compute(s.m, &o);
    CHECK(lmf_model_backward(s.m) == LMF_EINVAL);
    free(g0);
    drop(&s);
}

int main(void) {
    lmf_compute_set_threads(2);
    make_batch();
    const lmf_backend *cpu = lmf_backend_cpu(), *ref = lmf_backend_ref();
    /* bf16 vs f32: the reference backend always (bf16 there does not need the CPU feature),
     * the cpu backend where it runs natively. */
    test_bf16_close(LMF_ARCH_LLAMA, ref, -1);
    test_bf16_close(LMF_ARCH_QWEN3, ref, 0.0f);
    if (cpu->has_bf16()) {
        test_bf16_close(LMF_ARCH_LLAMA, cpu, -1);
        test_bf16_close(LMF_ARCH_QWEN2, cpu, -1);
        test_bf16_close(LMF_ARCH_QWEN3, cpu, 0.0f);
        test_bf16_close(LMF_ARCH_LLAMA, cpu, 0.1f);
    } else {
        printf("test_compute: no native bf16 on the cpu backend here (no AVX-512 BF16, or the "
               "OpenBLAS build); cpu bf16 checks skipped\n");
    }
    test_bf16_cpu_vs_ref();
    test_bf16_fallback();
    test_bf16_weights_changed();
    for (int arch = 0; arch < 4; arch++) test_checkpointing((lmf_arch)arch, cpu, -1, 0);
    test_checkpointing(LMF_ARCH_LLAMA, cpu, 0.3f, 0);
    test_checkpointing(LMF_ARCH_QWEN3, cpu, 0.3f, 0);
    test_checkpointing(LMF_ARCH_QWEN2, ref, 0.3f, 0);
    test_checkpointing(LMF_ARCH_QWEN2, cpu, 0.3f, cpu->has_bf16());
    test_checkpointing(LMF_ARCH_LLAMA, cpu, -1, cpu->has_bf16());
    test_mode_switch();
    return test_summary("test_compute");
}
