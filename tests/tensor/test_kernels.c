/* Every cpu-backend kernel against the plain-C reference backend on random inputs, and the
 * reference attention backward against central finite differences. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/tensor.h"
#include "test.h"

static lmf_rng rng;

static float *randn(size_t n, float scale) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = scale * lmf_rng_normal(&rng);
    return x;
}

static float *dup(const float *x, size_t n) {
    float *y = malloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

#define CHECK_CLOSE(a, b, n, tol)                                                                  \
    do {                                                                                           \
        double r_ = test_max_rel(a, b, n);                                                         \
        CHECK_MSG(r_ <= (tol), "%s vs %s: max rel err %.3g > %.3g", #a, #b, r_, (double)(tol));    \
    } while (0)

static void test_gemm(const lmf_backend *cpu, const lmf_backend *ref) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int M = 37, N = 29, K = 53;
            float *A = randn(M * K, 1), *B = randn(K * N, 1), *C1 = randn(M * N, 1),
                  *C2 = dup(C1, M * N);
            int lda = ta ? M : K, ldb = tb ? K : N;
            cpu->gemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 1.0f, C1, N);
            ref->gemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 1.0f, C2, N);
            CHECK_CLOSE(C1, C2, (size_t)M * N, 1e-5);
            free(A), free(B), free(C1), free(C2);
        }
}

static uint16_t *bf16_of(const float *x, size_t n) {
    uint16_t *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = lmf_f32_to_bf16(x[i]);
    return y;
}

/* bf16 GEMM: cpu (oneDNN matmul) against the reference on the same bf16 operands. Products of
 * two bf16 values are exact in float32, so the two differ only by float32 accumulation order:
 * 1e-5 of the largest entry. Against sgemm on the unrounded inputs the difference must be of
 * bf16's size (~2^-9 per input), which shows the cpu kernel really rounds its inputs. */
static void test_gemm_bf16(const lmf_backend *cpu, const lmf_backend *ref) {
    const int shapes[][3] = {{37, 29, 53}, {64, 96, 128}, {1, 300, 257}, {130, 7, 1000}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
                float *A = randn((size_t)M * K, 1), *B = randn((size_t)K * N, 1),
                      *C1 = randn((size_t)M * N, 1), *C2 = dup(C1, (size_t)M * N),
                      *C3 = dup(C1, (size_t)M * N);
                uint16_t *Ab = bf16_of(A, (size_t)M * K), *Bb = bf16_of(B, (size_t)K * N);
                int lda = ta ? M : K, ldb = tb ? K : N;
                float beta = si % 2 ? 1.0f : 0.0f, alpha = si == 2 ? 1.0f : 0.5f;
                cpu->gemm_bf16(ta, tb, M, N, K, alpha, Ab, lda, Bb, ldb, beta, C1, N);
                ref->gemm_bf16(ta, tb, M, N, K, alpha, Ab, lda, Bb, ldb, beta, C2, N);
                ref->gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C3, N);
                double e = test_max_rel(C1, C2, (size_t)M * N),
                       r = test_max_rel(C1, C3, (size_t)M * N);
                CHECK_MSG(e < 1e-5, "bf16 gemm %dx%dx%d ta=%d tb=%d: cpu vs ref rel err %.3g", M, N,
                          K, ta, tb, e);
                CHECK_MSG(r > 1e-4 && r < 3e-2,
                          "bf16 gemm %dx%dx%d: vs f32 of the unrounded inputs rel %.3g", M, N, K,
                          r);
                free(A), free(B), free(C1), free(C2), free(C3), free(Ab), free(Bb);
            }
    /* to_bf16 is bit-exact with lmf_f32_to_bf16, specials and rounding ties included. */
    size_t n = 100003;
    float *x = randn(n, 3);
    const uint32_t special[] = {0x7fc00000, 0x7f800001, 0xffc00001, 0x7f800000, 0xff800000,
                                0x00000001, 0x80000001, 0x007fffff, 0x3f808000, 0x3f818000,
                                0x3f80ffff, 0x7f7fffff, 0x00000000, 0x80000000};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) memcpy(&x[i], &special[i], 4);
    uint16_t *b1 = malloc(n * 2), *b2 = malloc(n * 2), *b3 = bf16_of(x, n);
    cpu->to_bf16(b1, x, n);
    ref->to_bf16(b2, x, n);
    CHECK(memcmp(b1, b3, n * 2) == 0 && memcmp(b2, b3, n * 2) == 0);
    CHECK(b3[0] == 0x7fc0 && (b3[1] & 0x7fc0) == 0x7fc0 && b3[3] == 0x7f80 && b3[8] == 0x3f80 &&
          b3[9] == 0x3f82);
    free(x), free(b1), free(b2), free(b3);
    /* LMF_NO_BF16 turns bf16 compute off on both backends; the cpu one otherwise needs the
     * CPU's AVX-512 BF16 (and oneDNN: the OpenBLAS build says no). */
    CHECK(ref->has_bf16() && cpu->has_bf16() <= lmf_cpu_has_avx512_bf16());
#if defined(LMF_GEMM_DNNL)
    CHECK(cpu->has_bf16() == lmf_cpu_has_avx512_bf16());
#endif
    setenv("LMF_NO_BF16", "1", 1);
    CHECK(!ref->has_bf16() && !cpu->has_bf16());
    setenv("LMF_NO_BF16", "0", 1);
    CHECK(ref->has_bf16());
    unsetenv("LMF_NO_BF16");
    printf("test_kernels: AVX-512 BF16 %s; cpu bf16 gemm %s\n",
           lmf_cpu_has_avx512_bf16() ? "present" : "absent",
           cpu->has_bf16() ? "native" : "through float32");
}

static void test_norm_rope_swiglu(const lmf_backend *cpu, const lmf_backend *ref) {
    int n = 33, C = 80;
    float *x = randn(n * C, 1), *w = randn(C, 1), *dy = randn(n * C, 1);
    float *o1 = malloc(n * C * 4), *o2 = malloc(n * C * 4), r1[33], r2[33];
    cpu->rmsnorm_fwd(o1, r1, x, w, n, C, 1e-5f);
    ref->rmsnorm_fwd(o2, r2, x, w, n, C, 1e-5f);
    CHECK_CLOSE(o1, o2, (size_t)n * C, 1e-6);
    float *dx1 = randn(n * C, 1), *dx2 = dup(dx1, n * C), dw1[80] = {0}, dw2[80] = {0};
    cpu->rmsnorm_bwd(dx1, dw1, dy, x, w, r1, n, C, 1);
    ref->rmsnorm_bwd(dx2, dw2, dy, x, w, r2, n, C, 1);
    CHECK_CLOSE(dx1, dx2, (size_t)n * C, 1e-5);
    CHECK_CLOSE(dw1, dw2, (size_t)C, 1e-5);

    int pos[33];
    float inv[16];
    for (int i = 0; i < n; i++) pos[i] = (i * 7) % 50;
    for (int i = 0; i < 16; i++) inv[i] = powf(10000.0f, -(float)i / 16);
    float *q1 = dup(x, n * C), *q2 = dup(x, n * C);
    cpu->rope(q1, C, pos, inv, n, 2, 32, 0); /* two heads of 32 inside rows of 80 */
    ref->rope(q2, C, pos, inv, n, 2, 32, 0);
    CHECK_CLOSE(q1, q2, (size_t)n * C, 1e-6);
    cpu->rope(q1, C, pos, inv, n, 2, 32, 1); /* inverse rotation restores the input */
    CHECK_CLOSE(q1, x, (size_t)n * C, 1e-5);

    float *g = randn(n * C, 2), *u = randn(n * C, 1);
    cpu->swiglu_fwd(o1, g, u, (size_t)n * C);
    ref->swiglu_fwd(o2, g, u, (size_t)n * C);
    CHECK_CLOSE(o1, o2, (size_t)n * C, 1e-6);
    float *dg1 = malloc(n * C * 4), *du1 = malloc(n * C * 4), *dg2 = malloc(n * C * 4),
          *du2 = malloc(n * C * 4);
    cpu->swiglu_bwd(dg1, du1, dy, g, u, (size_t)n * C);
    ref->swiglu_bwd(dg2, du2, dy, g, u, (size_t)n * C);
    CHECK_CLOSE(dg1, dg2, (size_t)n * C, 1e-6);
    CHECK_CLOSE(du1, du2, (size_t)n * C, 1e-6);
    free(x), free(w), free(dy), free(o1), free(o2), free(dx1), free(dx2), free(q1), free(q2);
    free(g), free(u), free(dg1), free(du1), free(dg2), free(du2);
}

static void test_xent_embed(const lmf_backend *cpu, const lmf_backend *ref) {
    int n = 9, V = 1000;
    float *z = randn(n * V, 3), *d1 = malloc(n * V * 4), *d2 = malloc(n * V * 4), l1[9], l2[9];
    int32_t t[9] = {1, -1, 999, 0, 5, 5, -1, 17, 400};
    cpu->xent(l1, d1, z, t, n, V, 0.25f);
    ref->xent(l2, d2, z, t, n, V, 0.25f);
    CHECK_CLOSE(l1, l2, (size_t)n, 1e-5);
    CHECK_CLOSE(d1, d2, (size_t)n * V, 1e-5);
    CHECK(l1[1] == 0 && d1[V] == 0);
    /* In place (dlogits == logits), as the model calls it: the same numbers. */
    float *d3 = dup(z, (size_t)n * V), l3[9];
    cpu->xent(l3, d3, d3, t, n, V, 0.25f);
    CHECK(!memcmp(l3, l1, sizeof l1) && !memcmp(d3, d1, (size_t)n * V * 4));
    free(d3);
    /* Extreme logits: far below the max (underflow), a NaN logit poisons its row's loss. */
    float zz[2 * 4] = {0, -200, 50, -1e30f, 1, 2, NAN, 3}, dd[8], ll[2];
    int32_t tt[2] = {2, 3};
    cpu->xent(ll, dd, zz, tt, 2, 4, 1.0f);
    CHECK(fabsf(ll[0] - (logf(1 + expf(-50)) + 0)) < 1e-6 && dd[1] >= 0 && dd[1] < 1e-30f);
    CHECK(isnan(ll[1]));
    int32_t ids[6] = {3, 1, 3, 0, 7, 3};
    float *tab = randn(8 * 16, 1), *e1 = malloc(6 * 16 * 4), *e2 = malloc(6 * 16 * 4);
    cpu->embed_fwd(e1, tab, ids, 6, 16);
    ref->embed_fwd(e2, tab, ids, 6, 16);
    CHECK(!memcmp(e1, e2, 6 * 16 * 4));
    float dt1[128] = {0}, dt2[128] = {0};
    cpu->embed_bwd(dt1, e1, ids, 6, 16);
    ref->embed_bwd(dt2, e2, ids, 6, 16);
    CHECK_CLOSE(dt1, dt2, 128, 1e-6);
    free(z), free(d1), free(d2), free(tab), free(e1), free(e2);
}

/* Scalar objective sum(out * G) for finite differences of attention. */
static double attn_objective(const lmf_backend *be, const float *q, const float *k, const float *v,
                             const int32_t *seg, const lmf_attn_shape *s, const float *G) {
    size_t n = (size_t)s->B * s->T * s->H * s->D;
    float *out = malloc(n * 4), *lse = malloc((size_t)s->B * s->H * s->T * 4);
    be->attn_fwd(out, lse, q, k, v, seg, s);
    double acc = 0;
    for (size_t i = 0; i < n; i++) acc += (double)out[i] * G[i];
    free(out), free(lse);
    return acc;
}

static void test_attention(const lmf_backend *cpu, const lmf_backend *ref) {
    lmf_attn_shape s = {2, 11, 4, 2, 8, 1.0f / sqrtf(8.0f)};
    size_t nq = (size_t)s.B * s.T * s.H * s.D, nk = (size_t)s.B * s.T * s.KVH * s.D;
    size_t nl = (size_t)s.B * s.H * s.T;
    int32_t seg[22];
    for (int i = 0; i < 22; i++) seg[i] = i < 11 ? (i < 5 ? 0 : 1) : 0; /* row 0 packs two */
    float *q = randn(nq, 1), *k = randn(nk, 1), *v = randn(nk, 1), *G = randn(nq, 1);
    float *o1 = malloc(nq * 4), *o2 = malloc(nq * 4), *l1 = malloc(nl * 4), *l2 = malloc(nl * 4);
    cpu->attn_fwd(o1, l1, q, k, v, seg, &s);
    ref->attn_fwd(o2, l2, q, k, v, seg, &s);
    CHECK_CLOSE(o1, o2, nq, 1e-5);
    CHECK_CLOSE(l1, l2, nl, 1e-5);
    /* Token 5 of row 0 starts a new segment: it sees only itself, so its output is v[5]. */
    for (int h = 0; h < s.H; h++)
        for (int d = 0; d < s.D; d++)
            CHECK_NEAR(o1[5 * s.H * s.D + h * s.D + d], v[5 * s.KVH * s.D + (h / 2) * s.D + d],
                       1e-5);
    float *dq1 = malloc(nq * 4), *dk1 = malloc(nk * 4), *dv1 = malloc(nk * 4);
    float *dq2 = malloc(nq * 4), *dk2 = malloc(nk * 4), *dv2 = malloc(nk * 4);
    cpu->attn_bwd(dq1, dk1, dv1, G, o1, l1, q, k, v, seg, &s);
    ref->attn_bwd(dq2, dk2, dv2, G, o2, l2, q, k, v, seg, &s);
    CHECK_CLOSE(dq1, dq2, nq, 1e-5);
    CHECK_CLOSE(dk1, dk2, nk, 1e-5);
    CHECK_CLOSE(dv1, dv2, nk, 1e-5);
    /* Central differences on a sample of inputs. */
    float *bufs[3] = {q, k, v}, *grads[3] = {dq2, dk2, dv2};
    size_t sizes[3] = {nq, nk, nk};
    double worst = 0;
    for (int which = 0; which < 3; which++)
        for (size_t i = 0; i < sizes[which]; i += 13) {
            float keep = bufs[which][i], h = 1e-2f;
            bufs[which][i] = keep + h;
            double fp = attn_objective(ref, q, k, v, seg, &s, G);
            bufs[which][i] = keep - h;
            double fm = attn_objective(ref, q, k, v, seg, &s, G);
            bufs[which][i] = keep;
            double num = (fp - fm) / (2 * h), err = fabs(num - grads[which][i]) / (1 + fabs(num));
            if (err > worst) worst = err;
        }
    CHECK_MSG(worst < 2e-3, "attention finite differences: worst error %.3g", worst);
    free(q), free(k), free(v), free(G), free(o1), free(o2), free(l1), free(l2);
    free(dq1), free(dk1), free(dv1), free(dq2), free(dk2), free(dv2);
}

static void test_dtypes(void) {
    float vals[] = {0.0f, 1.0f, -2.5f, 3.14159f, 65504.0f, 1e-6f, -1e-8f, 1e30f};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        float b = lmf_bf16_to_f32(lmf_f32_to_bf16(vals[i]));
        CHECK_MSG(fabsf(b - vals[i]) <= fabsf(vals[i]) * (1.0f / 256), "bf16 %g -> %g", vals[i], b);
        if (fabsf(vals[i]) <= 65504.0f) {
            float h = lmf_f16_to_f32(lmf_f32_to_f16(vals[i]));
            CHECK_MSG(fabsf(h - vals[i]) <= fmaxf(fabsf(vals[i]) / 1024, 6e-8f), "f16 %g -> %g",
                      vals[i], h);
        }
    }
    CHECK(lmf_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(lmf_f32_to_f16(1.0f) == 0x3c00);
    CHECK(lmf_f32_to_f16(-2.0f) == 0xc000);
    CHECK(lmf_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(lmf_f32_to_bf16(1.00390625f) == 0x3f80); /* ties to even */
    CHECK(lmf_f32_to_bf16(1.01171875f) == 0x3f82);
}

int main(void) {
    lmf_rng_seed(&rng, 42);
    lmf_compute_set_threads(2);
    const lmf_backend *cpu = lmf_backend_cpu(), *ref = lmf_backend_ref();
    test_gemm(cpu, ref);
    test_gemm_bf16(cpu, ref);
    test_norm_rope_swiglu(cpu, ref);
    test_xent_embed(cpu, ref);
    test_attention(cpu, ref);
    test_dtypes();
    return test_summary("test_kernels");
}
