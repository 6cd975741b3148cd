/* AdamW, gradient clipping and lr schedules against hand-computed values, the optimizer state
 * file (round trip and malformed files), and thread-count independence. With
 * `--trace SCHEDULE OUT.bin` it instead runs 30 steps on fixed pseudo-random tensors and
 * writes inputs and results for tests/reference/optim_ref.py to replay in PyTorch. */
#include "lmforge/optim.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

/* One AdamW step, p = 1, g = 0.5, lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01:
 *   decayed p: 1 * (1 - 0.1 * 0.01)                = 0.999
 *   m = 0.1 * 0.5 = 0.05;  v = 0.001 * 0.25         = 0.00025
 *   bc1 = 1 - 0.9 = 0.1;   bc2 = 1 - 0.999          = 0.001
 *   denom = sqrt(0.00025) / sqrt(0.001) + 1e-8      = 0.5 + 1e-8
 *   p -= (0.1 / 0.1) * 0.05 / denom                 -> 0.999 - 0.1 = 0.899 (not decayed: 0.9)
 * Step 2, same gradient: m = 0.095, v = 0.00049975, bc1 = 0.19, bc2 = 0.001999, so
 *   m / bc1 = 0.5 and sqrt(v / bc2) = 0.5: p = 0.899 * 0.999 - 0.1 = 0.798101 (undecayed 0.8). */
static void test_adamw_hand(void) {
    lmf_adamw o;
    CHECK(lmf_adamw_init(&o, 2, 0.9, 0.999, 1e-8, 0.01) == 0);
    float p[2] = {1, 1}, g[2] = {0.5f, 0.5f};
    lmf_opt_segment segs[2] = {{0, 1, 1}, {1, 1, 0}};
    CHECK(lmf_adamw_step(&o, p, g, segs, 2, 0.1) == 0);
    CHECK(o.step == 1);
    CHECK_NEAR(p[0], 0.899, 1e-6);
    CHECK_NEAR(p[1], 0.9, 1e-6);
    CHECK_NEAR(o.m[0], 0.05, 1e-9);
    CHECK_NEAR(o.v[0], 0.00025, 1e-10);
    CHECK(lmf_adamw_step(&o, p, g, segs, 2, 0.1) == 0);
    CHECK_NEAR(p[0], 0.798101, 1e-6);
    CHECK_NEAR(p[1], 0.8, 1e-6);

    /* A parameter outside every segment is left alone; a segment past the end is refused. */
    float q[2] = {1, 1};
    lmf_opt_segment one = {1, 1, 1}, bad = {1, 2, 1};
    CHECK(lmf_adamw_step(&o, q, g, &one, 1, 0.1) == 0);
    CHECK(q[0] == 1.0f && q[1] < 1.0f);
    CHECK(lmf_adamw_step(&o, q, g, &bad, 1, 0.1) == LMF_EINVAL);
    CHECK(lmf_adamw_step(&o, q, g, &one, 1, -1.0) == LMF_EINVAL);
    lmf_adamw_free(&o);

    CHECK(lmf_adamw_init(&o, 4, 1.0, 0.999, 1e-8, 0.0) == LMF_ERANGE);
    CHECK(strstr(lmf_last_error(), "adam_beta1") != NULL);
    CHECK(lmf_adamw_init(&o, 4, 0.9, 0.999, 1e-8, -0.1) == LMF_ERANGE);
    CHECK(strstr(lmf_last_error(), "weight_decay") != NULL);
}

/* Decay follows is_norm_or_bias, and only trainable entries become segments. */
static void test_segments(void) {
    lmf_param t[4];
    memset(t, 0, sizeof t);
    size_t off = 0, sizes[4] = {6, 3, 4, 2};
    int norm[4] = {0, 1, 0, 1};
    for (int i = 0; i < 4; i++) {
        t[i].offset = off;
        t[i].numel = sizes[i];
        t[i].is_norm_or_bias = norm[i];
        off += sizes[i];
    }
    uint8_t trainable[4] = {1, 1, 0, 1};
    lmf_opt_segment *segs = NULL;
    int n = 0;
    CHECK(lmf_opt_segments_from_params(t, 4, trainable, &segs, &n) == 0);
    CHECK(n == 3);
    CHECK(segs[0].offset == 0 && segs[0].numel == 6 && segs[0].decay == 1);
    CHECK(segs[1].offset == 6 && segs[1].numel == 3 && segs[1].decay == 0);
    CHECK(segs[2].offset == 13 && segs[2].numel == 2 && segs[2].decay == 0);

    /* Zero gradients isolate weight decay: decayed floats shrink by (1 - lr*wd), the others
     * (no-decay and untrained) stay exactly where they were. */
    lmf_adamw o;
    CHECK(lmf_adamw_init(&o, off, 0.9, 0.95, 1e-8, 0.5) == 0);
    float p[15], g[15] = {0};
    for (int i = 0; i < 15; i++) p[i] = 2.0f;
    CHECK(lmf_adamw_step(&o, p, g, segs, n, 0.1) == 0);
    for (int i = 0; i < 15; i++) CHECK_NEAR(p[i], i < 6 ? 2.0 * (1 - 0.1 * 0.5) : 2.0, 1e-7);
    lmf_adamw_free(&o);
    free(segs);
}

/* grads (3, 4): ||g|| = 5, coef = 1 / (5 + 1e-6). */
static void test_clip(void) {
    float g[2] = {3, 4};
    lmf_opt_segment one = {0, 2, 1}, two[2] = {{0, 1, 1}, {1, 1, 0}};
    float total = lmf_clip_grad_norm(g, &one, 1, 1.0);
    CHECK_NEAR(total, 5.0, 1e-6);
    CHECK_NEAR(g[0], 3.0 / (5.0 + 1e-6), 1e-7);
    CHECK_NEAR(g[1], 4.0 / (5.0 + 1e-6), 1e-7);
    /* Per-tensor norms 3 and 4, norm of norms 5. */
    g[0] = 3, g[1] = 4;
    CHECK_NEAR(lmf_clip_grad_norm(g, two, 2, 1.0), 5.0, 1e-6);
    CHECK_NEAR(g[0], 0.6, 1e-6);
    /* Under the limit, or max_norm <= 0: the norm is reported, nothing is scaled. */
    g[0] = 0.3f, g[1] = 0.4f;
    CHECK_NEAR(lmf_clip_grad_norm(g, &one, 1, 1.0), 0.5, 1e-7);
    CHECK(g[0] == 0.3f && g[1] == 0.4f);
    g[0] = 3, g[1] = 4;
    CHECK_NEAR(lmf_clip_grad_norm(g, &one, 1, 0.0), 5.0, 1e-6);
    CHECK(g[0] == 3.0f && g[1] == 4.0f);
}

static double lr_at(const char *type, int64_t total, int64_t warmup, double rate, int64_t step) {
    lmf_schedule s;
    int rc = lmf_schedule_init(&s, type, 1.0, total, warmup, rate);
    CHECK_MSG(rc == 0, "%s: %s", type, lmf_last_error());
    return lmf_schedule_lr(&s, step);
}

static void test_schedules(void) {
    /* linear, 10 steps, 2 warmup: step/2 during warmup, then (10 - step) / 8. */
    CHECK(lr_at("linear", 10, 2, 0, 0) == 0.0);
    CHECK(lr_at("linear", 10, 2, 0, 1) == 0.5);
    CHECK(lr_at("linear", 10, 2, 0, 2) == 1.0);
    CHECK(lr_at("linear", 10, 2, 0, 6) == 0.5);
    CHECK(lr_at("linear", 10, 2, 0, 10) == 0.0);
    CHECK(lr_at("linear", 10, 2, 0, 12) == 0.0);
    /* cosine: progress (6 - 2) / 8 = 0.5 gives 0.5 * (1 + cos(pi / 2)) = 0.5. */
    CHECK(lr_at("cosine", 10, 2, 0, 1) == 0.5);
    CHECK(lr_at("cosine", 10, 2, 0, 2) == 1.0);
    CHECK_NEAR(lr_at("cosine", 10, 2, 0, 6), 0.5, 1e-15);
    CHECK_NEAR(lr_at("cosine", 10, 2, 0, 10), 0.0, 1e-15);
    /* cosine_with_min_lr, rate 0.1: 0.5 * 0.9 + 0.1 at the midpoint, 0.1 at the end. */
    CHECK_NEAR(lr_at("cosine_with_min_lr", 10, 2, 0.1, 6), 0.55, 1e-15);
    CHECK_NEAR(lr_at("cosine_with_min_lr", 10, 2, 0.1, 10), 0.1, 1e-15);
    CHECK(lr_at("cosine_with_min_lr", 10, 2, 0.1, 1) == 0.5);
    /* constant_with_warmup, 4 warmup: 0.25 at step 1, 1 from step 4 on; constant ignores it. */
    CHECK(lr_at("constant_with_warmup", 10, 4, 0, 0) == 0.0);
    CHECK(lr_at("constant_with_warmup", 10, 4, 0, 1) == 0.25);
    CHECK(lr_at("constant_with_warmup", 10, 4, 0, 4) == 1.0);
    CHECK(lr_at("constant_with_warmup", 10, 4, 0, 100) == 1.0);
    CHECK(lr_at("constant", 10, 4, 0, 0) == 1.0);
    lmf_schedule s;
    CHECK(lmf_schedule_init(&s, "linear", 2e-4, 10, 2, 0) == 0);
    CHECK(lmf_schedule_lr(&s, 1) == 2e-4 * 0.5);

    CHECK(lmf_schedule_init(&s, "polynomial", 1e-3, 10, 0, 0) == LMF_EUNSUPPORTED);
    CHECK(strstr(lmf_last_error(), "polynomial") && strstr(lmf_last_error(), "cosine_with_min_lr"));
    CHECK(lmf_schedule_init(&s, "linear", 1e-3, 10, 0, 0.1) == LMF_EINVAL);
    CHECK(lmf_schedule_init(&s, "cosine_with_min_lr", 1e-3, 10, 0, 1.5) == LMF_ERANGE);
    CHECK(lmf_schedule_init(&s, "cosine", 1e-3, 10, -1, 0) == LMF_ERANGE);

    /* math.ceil(total * ratio): 100 * 0.07 is 7.000000000000001 in doubles, so 8. */
    CHECK(lmf_warmup_steps(5, 0.5, 100) == 5);
    CHECK(lmf_warmup_steps(0, 0.1, 30) == 3);
    CHECK(lmf_warmup_steps(0, 0.07, 100) == 8);
    CHECK(lmf_warmup_steps(0, 0.0, 100) == 0);
}

static void fill(float *x, size_t n, lmf_rng *r, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * lmf_rng_normal(r);
}

static int write_bytes(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(d, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void test_state_file(void) {
    enum { N = 37 };
    char dir[] = "/tmp/lmf-optim-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128], bad[128];
    snprintf(path, sizeof path, "%s/optimizer.bin", dir);
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);

    lmf_rng r;
    lmf_rng_seed(&r, 7);
    float p[N], g[N];
    fill(p, N, &r, 1.0f);
    lmf_opt_segment seg = {0, N, 1};
    lmf_adamw a, b;
    CHECK(lmf_adamw_init(&a, N, 0.9, 0.95, 1e-8, 0.1) == 0);
    for (int s = 0; s < 3; s++) {
        fill(g, N, &r, 1.0f);
        CHECK(lmf_adamw_step(&a, p, g, &seg, 1, 1e-3) == 0);
    }
    CHECK(lmf_adamw_save(&a, path) == 0);
    CHECK(lmf_adamw_init(&b, N, 0.5, 0.5, 0.0, 0.0) == 0);
    CHECK_MSG(lmf_adamw_load(&b, path) == 0, "%s", lmf_last_error());
    CHECK(b.step == 3 && b.beta1 == 0.9 && b.beta2 == 0.95 && b.eps == 1e-8 &&
          b.weight_decay == 0.1);
    CHECK(!memcmp(a.m, b.m, sizeof(float) * N) && !memcmp(a.v, b.v, sizeof(float) * N));
    /* Resumed and uninterrupted runs take the same next step. */
    float p2[N];
    memcpy(p2, p, sizeof p);
    fill(g, N, &r, 1.0f);
    CHECK(lmf_adamw_step(&a, p, g, &seg, 1, 1e-3) == 0);
    CHECK(lmf_adamw_step(&b, p2, g, &seg, 1, 1e-3) == 0);
    CHECK(!memcmp(p, p2, sizeof p));
    CHECK(lmf_adamw_save(&a, path) == 0);

    lmf_mapped_file mf;
    CHECK(lmf_file_map(&mf, path) == 0);
    CHECK(mf.size == 64 + 8 * N);
    uint8_t *copy = malloc(mf.size);
    memcpy(copy, mf.data, mf.size);
    const size_t size = mf.size;
    lmf_file_unmap(&mf);
    int64_t step_before = b.step;

    /* bad magic */
    copy[0] ^= 0xff;
    CHECK(write_bytes(bad, copy, size) == 0);
    CHECK(lmf_adamw_load(&b, bad) == LMF_EFORMAT);
    CHECK(strstr(lmf_last_error(), bad) && strstr(lmf_last_error(), "magic"));
    copy[0] ^= 0xff;
    /* truncated: a short moment array, and a short header */
    CHECK(write_bytes(bad, copy, size - 4) == 0);
    CHECK(lmf_adamw_load(&b, bad) == LMF_EFORMAT);
    CHECK(strstr(lmf_last_error(), bad) && strstr(lmf_last_error(), "truncated"));
    CHECK(write_bytes(bad, copy, 20) == 0);
    CHECK(lmf_adamw_load(&b, bad) == LMF_EFORMAT);
    CHECK(strstr(lmf_last_error(), "truncated") != NULL);
    /* wrong version */
    copy[8] = 2;
    CHECK(write_bytes(bad, copy, size) == 0);
    CHECK(lmf_adamw_load(&b, bad) == LMF_EUNSUPPORTED);
    CHECK(strstr(lmf_last_error(), bad) && strstr(lmf_last_error(), "version 2"));
    copy[8] = 1;
    /* a state for a different parameter count */
    lmf_adamw c;
    CHECK(lmf_adamw_init(&c, N + 1, 0.9, 0.95, 1e-8, 0.1) == 0);
    CHECK(lmf_adamw_load(&c, path) == LMF_ESHAPE);
    CHECK(strstr(lmf_last_error(), path) && strstr(lmf_last_error(), "37"));
    lmf_adamw_free(&c);
    /* a corrupted hyperparameter (beta1 = 2) */
    double beta1 = 2.0;
    memcpy(copy + 32, &beta1, 8);
    CHECK(write_bytes(bad, copy, size) == 0);
    CHECK(lmf_adamw_load(&b, bad) == LMF_EFORMAT);
    CHECK(strstr(lmf_last_error(), "adam_beta1") != NULL);
    /* failed loads left the state alone */
    CHECK(b.step == step_before && b.beta1 == 0.9);

    free(copy);
    lmf_adamw_free(&a);
    lmf_adamw_free(&b);
    unlink(path);
    unlink(bad);
    rmdir(dir);
}

/* Results must not depend on the thread count (clipping sums in fixed chunks). */
static void test_threads(void) {
    enum { N = 100003 };
    float *p1 = malloc(N * sizeof(float)), *p2 = malloc(N * sizeof(float));
    float *g1 = malloc(N * sizeof(float)), *g2 = malloc(N * sizeof(float));
    lmf_rng r;
    lmf_rng_seed(&r, 3);
    fill(p1, N, &r, 1.0f);
    fill(g1, N, &r, 0.01f);
    memcpy(p2, p1, N * sizeof(float));
    memcpy(g2, g1, N * sizeof(float));
    lmf_opt_segment segs[3] = {{0, 90000, 1}, {90000, 7, 0}, {90007, N - 90007, 1}};
    lmf_adamw a, b;
    CHECK(lmf_adamw_init(&a, N, 0.9, 0.95, 1e-8, 0.1) == 0);
    CHECK(lmf_adamw_init(&b, N, 0.9, 0.95, 1e-8, 0.1) == 0);
    lmf_threads_set(1);
    float n1 = lmf_clip_grad_norm(g1, segs, 3, 1.0);
    CHECK(lmf_adamw_step(&a, p1, g1, segs, 3, 1e-3) == 0);
    lmf_threads_set(4);
    float n2 = lmf_clip_grad_norm(g2, segs, 3, 1.0);
    CHECK(lmf_adamw_step(&b, p2, g2, segs, 3, 1e-3) == 0);
    CHECK(n1 == n2 && n1 > 1.0f);
    CHECK(!memcmp(p1, p2, N * sizeof(float)));
    lmf_adamw_free(&a);
    lmf_adamw_free(&b);
    free(p1), free(p2), free(g1), free(g2);
}

/* ---- --trace: inputs and results for the PyTorch comparison ---- */

enum { TRACE_STEPS = 30, TRACE_TENSORS = 4 };

static int trace(const char *type, const char *out) {
    /* (7, 5) weight, (5) bias, (3, 4) weight, (4) norm weight. */
    static const int shapes[TRACE_TENSORS][2] = {{7, 5}, {5, 0}, {3, 4}, {4, 0}};
    static const int is_norm_or_bias[TRACE_TENSORS] = {0, 1, 0, 1};
    lmf_param table[TRACE_TENSORS];
    memset(table, 0, sizeof table);
    size_t n = 0;
    for (int i = 0; i < TRACE_TENSORS; i++) {
        table[i].ndim = shapes[i][1] ? 2 : 1;
        table[i].shape[0] = shapes[i][0];
        table[i].shape[1] = shapes[i][1];
        table[i].offset = n;
        table[i].numel = (size_t)shapes[i][0] * (size_t)(shapes[i][1] ? shapes[i][1] : 1);
        table[i].is_norm_or_bias = is_norm_or_bias[i];
        n += table[i].numel;
    }
    const int64_t total = TRACE_STEPS, warmup = lmf_warmup_steps(0, 0.1, total);
    const double min_lr_rate = strcmp(type, "cosine_with_min_lr") == 0 ? 0.1 : 0.0;
    float *p = malloc(n * sizeof(float) * (TRACE_STEPS + 2));
    float *grads = p + n, *final = p + n * (TRACE_STEPS + 1);
    double lrs[TRACE_STEPS];
    float norms[TRACE_STEPS];
    lmf_opt_segment *segs = NULL;
    int n_segs = 0, rc = 0;
    lmf_schedule s;
    lmf_adamw o;
    memset(&o, 0, sizeof o);
    if (!p) return 1;
    lmf_rng r;
    lmf_rng_seed(&r, 2024);
    fill(p, n, &r, 0.5f);
    /* Every third step small gradients (norm ~0.15, no clipping), otherwise norm ~7. */
    for (int k = 0; k < TRACE_STEPS; k++) fill(grads + n * k, n, &r, k % 3 == 0 ? 0.02f : 1.0f);
    memcpy(final, p, n * sizeof(float));
    if ((rc = lmf_schedule_init(&s, type, 1e-3, total, warmup, min_lr_rate)) ||
        (rc = lmf_opt_segments_from_params(table, TRACE_TENSORS, NULL, &segs, &n_segs)) ||
        (rc = lmf_adamw_init(&o, n, 0.9, 0.95, 1e-8, 0.1)))
        goto done;
    float *g = malloc(n * sizeof(float));
    if (!g) {
        rc = 1;
        goto done;
    }
    for (int k = 0; k < TRACE_STEPS; k++) {
        memcpy(g, grads + n * k, n * sizeof(float));
        norms[k] = lmf_clip_grad_norm(g, segs, n_segs, 1.0);
        lrs[k] = lmf_schedule_lr(&s, k);
        if ((rc = lmf_adamw_step(&o, final, g, segs, n_segs, lrs[k]))) break;
    }
    free(g);
    if (rc) goto done;
    FILE *f = fopen(out, "wb");
    if (!f) {
        rc = 1;
        goto done;
    }
    int32_t hdr[4 + 3 * TRACE_TENSORS] = {TRACE_STEPS, TRACE_TENSORS, (int32_t)total,
                                          (int32_t)warmup};
    for (int i = 0; i < TRACE_TENSORS; i++) {
        hdr[4 + 3 * i] = shapes[i][0];
        hdr[5 + 3 * i] = shapes[i][1];
        hdr[6 + 3 * i] = !is_norm_or_bias[i];
    }
    /* layout: "OPTTRACE", i32 header, f32 params0[n], f32 grads[steps][n], f64 lr[steps],
     * f32 grad_norm[steps], f32 final params[n] */
    fwrite("OPTTRACE", 1, 8, f);
    fwrite(hdr, sizeof hdr, 1, f);
    fwrite(p, sizeof(float), n * (TRACE_STEPS + 1), f);
    fwrite(lrs, sizeof lrs, 1, f);
    fwrite(norms, sizeof norms, 1, f);
    fwrite(final, sizeof(float), n, f);
    if (fclose(f) != 0) rc = 1;
done:
    if (rc < 0) fprintf(stderr, "test_optim --trace: %s\n", lmf_last_error());
    lmf_adamw_free(&o);
    free(segs);
    free(p);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--trace")) return trace(argv[2], argv[3]);
    if (argc != 1) {
        fprintf(stderr, "usage: test_optim [--trace SCHEDULE OUT.bin]\n");
        return 2;
    }
    test_adamw_hand();
    test_segments();
    test_clip();
    test_schedules();
    test_state_file();
    test_threads();
    return test_summary("test_optim");
}
