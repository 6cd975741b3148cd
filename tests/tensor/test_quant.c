/* Quantized formats and kernels: per-format error bounds from the format maths (Q8_0 / Q4_1
 * |err| <= d/2, Q4_0 <= d/2 except the clipped +8 step, Q4_K <= d*sc/2, NF4 / FP4 the nearest
 * code value), hand-built GGML blocks decoded to hand-computed values, and the AVX-512 products
 * (y = x W^T, dx = dy W) against the double-accumulating plain-C references and against f32
 * products with the dequantized matrix, on random and adversarial blocks (one huge outlier per
 * block, all-zero blocks, denormal-sized scales), 1 and 2 threads. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/decode_kernels.h"
#include "lmforge/quant.h"
#include "tensor/quant_blocks.h"
#include "test.h"

static lmf_rng rng;

enum { RANDOM, OUTLIER, ZEROS, TINY, MIXED, N_KINDS };
static const char *kind_name[] = {"random", "outlier", "zeros", "tiny", "mixed"};

static void fill(float *x, int64_t n, int kind, int block) {
    for (int64_t i = 0; i < n; i++) {
        float v = lmf_rng_normal(&rng);
        switch (kind) {
        case OUTLIER: /* one value per block 1000x the rest */
            x[i] = (i % block == (i / block) % block) ? 1000.0f * (v < 0 ? -1 : 1) : 0.01f * v;
            break;
        case ZEROS:
            x[i] = (i / block) % 2 ? (i % 2 ? -0.0f : 0.0f) : v; /* -0.0 too */
            break;
        case TINY: /* scales far below f16's normal range */
            x[i] = 1e-9f * v;
            break;
        case MIXED: /* blocks of wildly different magnitude */
            x[i] = v * powf(10.0f, (float)((i / block) % 7) - 3.0f);
            break;
        default:
            x[i] = v;
        }
    }
}

/* The largest half-gap between neighbouring code values (the 4-bit codes' error bound). */
static float half_gap(const float *code) {
    float v[16];
    memcpy(v, code, sizeof v);
    for (int i = 0; i < 16; i++)
        for (int j = i + 1; j < 16; j++)
            if (v[j] < v[i]) {
                float t = v[i];
                v[i] = v[j], v[j] = t;
            }
    float g = 0;
    for (int i = 0; i + 1 < 16; i++) g = fmaxf(g, (v[i + 1] - v[i]) / 2);
    return g;
}

/* Per-element bound for value k of row (quantized) given the original x. */
static double elem_bound(lmf_qtype t, const uint8_t *row, int64_t k, float x) {
    int64_t b = k / lmf_qtype_block(t);
    switch (t) {
    case LMF_Q8_0:
        return lmf_f16_to_f32(((const blk_q8_0 *)row)[b].d) / 2;
    case LMF_Q4_0: {
        float d = lmf_f16_to_f32(((const blk_q4_0 *)row)[b].d);
        return d != 0 && x / d > 7.5f ? fabsf(d) : fabsf(d) / 2;
    }
    case LMF_Q4_1:
        return lmf_f16_to_f32(((const blk_q4_1 *)row)[b].d) / 2;
    case LMF_NF4:
    case LMF_FP4: {
        /* the nearest code value: no other code is closer */
        const float *code = t == LMF_NF4 ? lmf_nf4_code : lmf_fp4_code;
        float a = ((const blk_nf4 *)row)[b].absmax;
        double best = INFINITY;
        for (int c = 0; c < 16; c++) best = fmin(best, fabs((double)x - (double)a * code[c]));
        return best;
    }
    default: {
        const blk_q4_k *q = (const blk_q4_k *)row + k / 256;
        uint8_t sc, m;
        q4k_scale_min((int)(k % 256) / 32, q->scales, &sc, &m);
        return lmf_f16_to_f32(q->d) * sc / 2;
    }
    }
}

static void check_roundtrip(lmf_qtype t, int kind, int rows, int cols) {
    size_t rb = lmf_quant_row_bytes(t, cols);
    float *x = malloc(sizeof(float) * rows * cols), *y = malloc(sizeof(float) * rows * cols);
    uint8_t *q = malloc(rb * rows);
    fill(x, (int64_t)rows * cols, kind, lmf_qtype_block(t));
    int rc = lmf_quantize(t, q, x, rows, cols, "test");
    CHECK_MSG(rc == 0, "%s %s: %s", lmf_qtype_name(t), kind_name[kind], lmf_last_error());
    lmf_dequantize(t, y, q, rows, cols);
    int bad = 0;
    double worst = 0, gap = t == LMF_NF4 ? half_gap(lmf_nf4_code) : half_gap(lmf_fp4_code);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            float xv = x[(size_t)r * cols + k], yv = y[(size_t)r * cols + k];
            double err = fabs((double)xv - yv);
            double bound = elem_bound(t, q + rb * r, k, xv);
            /* NF4 / FP4 pick the code nearest to x / absmax in float: ties within rounding */
            double slack = t == LMF_NF4 || t == LMF_FP4
                               ? 1e-6 * ((const blk_nf4 *)(q + rb * r))[k / 64].absmax
                               : 0;
            if (err > bound * (1 + 1e-5) + slack + 1e-30 && bad++ < 3)
                fprintf(stderr, "%s %s row %d col %d: x %g deq %g err %g > bound %g\n",
                        lmf_qtype_name(t), kind_name[kind], r, k, xv, yv, err, bound);
            if (t == LMF_NF4 || t == LMF_FP4) {
                /* and the stated whole-format bound: absmax * largest half-gap */
                float a = ((const blk_nf4 *)(q + rb * r))[k / 64].absmax;
                if (err > a * gap * (1 + 1e-5) && bad++ < 3)
                    fprintf(stderr, "%s: err %g > absmax %g * %g\n", lmf_qtype_name(t), err, a,
                            gap);
            }
            worst = fmax(worst, err);
        }
    CHECK_MSG(bad == 0, "%s %s: %d elements over the bound", lmf_qtype_name(t), kind_name[kind],
              bad);
    /* All-zero blocks come back exactly zero. */
    if (kind == ZEROS) {
        int nz = 0;
        for (size_t i = 0; i < (size_t)rows * cols; i++) nz += x[i] == 0 && y[i] != 0;
        CHECK_MSG(nz == 0, "%s: %d zeros not kept", lmf_qtype_name(t), nz);
    }
    free(x), free(y), free(q);
}

/* Hand-built blocks in GGML's layouts decode to hand-computed values. */
static void check_layouts(void) {
    blk_q4_0 b0;
    b0.d = 0x3c00; /* 1.0 */
    for (int j = 0; j < 16; j++) b0.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    float y[256];
    lmf_dequantize_row(LMF_Q4_0, y, &b0, 32);
    int ok = 1;
    for (int j = 0; j < 16; j++) ok &= y[j] == (float)(j - 8) && y[j + 16] == (float)(7 - j);
    CHECK_MSG(ok, "Q4_0 layout: y[0]=%g y[16]=%g", y[0], y[16]);

    blk_q4_1 b1;
    b1.d = 0x3800; /* 0.5 */
    b1.m = 0xbc00; /* -1.0 */
    for (int j = 0; j < 16; j++) b1.qs[j] = (uint8_t)(j | (3 << 4));
    lmf_dequantize_row(LMF_Q4_1, y, &b1, 32);
    ok = 1;
    for (int j = 0; j < 16; j++) ok &= y[j] == 0.5f * j - 1.0f && y[j + 16] == 0.5f;
    CHECK_MSG(ok, "Q4_1 layout: y[3]=%g y[16]=%g", y[3], y[16]);

    blk_nf4 bn;
    bn.absmax = 2.0f;
    for (int j = 0; j < 32; j++) bn.qs[j] = (uint8_t)(((j % 16) << 4) | (15 - j % 16));
    lmf_dequantize_row(LMF_NF4, y, &bn, 64);
    CHECK(y[0] == -2.0f && y[1] == 2.0f && y[14] == 2.0f * 0.0f && y[30] == 2.0f * 1.0f);
    lmf_dequantize_row(LMF_FP4, y, &bn, 64);
    /* code 0 -> 0, 15 -> -0.25, code 3 -> 1, code 12 -> -1/3 */
    CHECK(y[0] == 0.0f && y[1] == -0.5f && y[6] == 2.0f && y[7] == 2.0f * -0.33333333f);

    /* Q4_K: d = 1, dmin = 0.5; sub-block j has scale j + 1 (j < 4 in the low 6 bits; j >= 4 split
     * into low nibble of scales[j + 4] and the top bits of scales[j - 4]) and min 2j. */
    blk_q4_k bk;
    memset(&bk, 0, sizeof bk);
    bk.d = 0x3c00, bk.dmin = 0x3800;
    int sc[8] = {1, 2, 3, 4, 5, 6, 40, 63}, mn[8] = {0, 2, 4, 6, 8, 10, 33, 63};
    for (int j = 0; j < 4; j++) {
        bk.scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        bk.scales[j + 4] = (uint8_t)(mn[j] | ((mn[j + 4] >> 4) << 6));
        bk.scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    for (int l = 0; l < 128; l++) bk.qs[l] = (uint8_t)((l % 16) | ((15 - l % 16) << 4));
    lmf_dequantize_row(LMF_Q4_K, y, &bk, 256);
    ok = 1;
    for (int k = 0; k < 256; k++) {
        int chunk = k / 64, within = k % 64, s = k / 32, l = within % 32;
        int qv = within < 32 ? l % 16 : 15 - l % 16;
        float want = 1.0f * sc[s] * qv - 0.5f * mn[s];
        (void)chunk;
        if (y[k] != want) {
            if (ok) fprintf(stderr, "Q4_K value %d: %g, want %g\n", k, y[k], want);
            ok = 0;
        }
    }
    CHECK(ok);
}

static void check_errors(void) {
    float x[64] = {0};
    uint8_t q[512];
    int rc = lmf_quantize(LMF_Q8_0, q, x, 1, 33, "model.layers.0.mlp.up_proj.weight");
    CHECK(rc == LMF_ESHAPE && strstr(lmf_last_error(), "up_proj") &&
          strstr(lmf_last_error(), "multiple of 32"));
    rc = lmf_quantize(LMF_NF4, q, x, 1, 32, "w");
    CHECK(rc == LMF_ESHAPE && strstr(lmf_last_error(), "multiple of 64"));
    x[5] = NAN;
    rc = lmf_quantize(LMF_Q4_0, q, x, 1, 32, "w");
    CHECK(rc == LMF_ERANGE && strstr(lmf_last_error(), "non-finite"));
    x[5] = 1e9f;
    rc = lmf_quantize(LMF_Q8_0, q, x, 1, 32, "w");
    CHECK(rc == LMF_ERANGE && strstr(lmf_last_error(), "f16 range"));
    CHECK(lmf_quant_row_bytes(LMF_Q4_K, 4096) == 16 * 144 &&
          lmf_quant_row_bytes(LMF_Q4_K, 100) == 0);
    lmf_qtype t;
    CHECK(lmf_qtype_parse("NF4", &t) == 0 && t == LMF_NF4);
    CHECK(lmf_qtype_parse("q3_k", &t) == LMF_EUNSUPPORTED);
}

/* bf16 / f16 input quantizes as its f32 conversion does. */
static void check_from_16bit(void) {
    float x[128], xc[128];
    uint16_t h[128];
    fill(x, 128, RANDOM, 32);
    uint8_t a[200], b[200];
    for (int dt = LMF_BF16; dt <= LMF_F16; dt++) {
        lmf_convert_from_f32(h, dt, x, 128);
        lmf_convert_to_f32(xc, h, dt, 128);
        CHECK(lmf_quantize_from(LMF_NF4, a, h, dt, 2, 64, "w") == 0);
        CHECK(lmf_quantize(LMF_NF4, b, xc, 2, 64, "w") == 0);
        CHECK(memcmp(a, b, 2 * lmf_quant_row_bytes(LMF_NF4, 64)) == 0);
    }
}

static void check_double_quant(void) {
    int n = 1000;
    float *a = malloc(sizeof(float) * n), *r = malloc(sizeof(float) * n), sc[4], mean;
    int8_t *q = malloc(n);
    for (int i = 0; i < n; i++) a[i] = 0.05f + 0.01f * fabsf(lmf_rng_normal(&rng));
    lmf_nf4_scales_compress(a, n, q, sc, &mean);
    lmf_nf4_scales_expand(r, n, q, sc, mean);
    int bad = 0;
    for (int i = 0; i < n; i++) bad += fabsf(a[i] - r[i]) > sc[i / 256] / 2 * 1.0001f + 1e-9f;
    CHECK_MSG(bad == 0, "double quantization: %d scales over scale/2", bad);
    free(a), free(r), free(q);
}

static void check_products(lmf_qtype t, int kind, int n, int out, int in) {
    size_t rb = lmf_quant_row_bytes(t, in);
    float *W = malloc(sizeof(float) * out * in), *Wd = malloc(sizeof(float) * out * in);
    float *x = malloc(sizeof(float) * n * in), *y = malloc(sizeof(float) * n * out);
    float *yr = malloc(sizeof(float) * n * out), *yf = malloc(sizeof(float) * n * out);
    float *dy = malloc(sizeof(float) * n * out), *dx = malloc(sizeof(float) * n * in);
    float *dxr = malloc(sizeof(float) * n * in);
    uint8_t *q = malloc(rb * out);
    fill(W, (int64_t)out * in, kind, lmf_qtype_block(t));
    fill(x, (int64_t)n * in, RANDOM, 32);
    fill(dy, (int64_t)n * out, RANDOM, 32);
    CHECK(lmf_quantize(t, q, W, out, in, "W") == 0);
    lmf_dequantize(t, Wd, q, out, in);
    lmf_qmatmul(y, x, t, q, n, out, in);
    lmf_qmatmul_ref(yr, x, t, q, n, out, in);
    lmf_matvec_f32_ref(yf, x, Wd, n, out, in);
    /* Errors relative to the size of the terms (sum |w x|): one dot product can cancel to ~0. */
    double scale = 1e-30, e1 = 0, e2 = 0, e3 = 0;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double s = 0, b = 0, yt = 0;
            for (int k = 0; k < in; k++) {
                float xv = x[(size_t)i * in + k];
                s += fabs((double)Wd[(size_t)o * in + k] * xv);
                b += fabs(xv) * elem_bound(t, q + rb * o, k, W[(size_t)o * in + k]);
                yt += (double)W[(size_t)o * in + k] * xv;
            }
            scale = fmax(scale, s);
            size_t j = (size_t)i * out + o;
            e1 = fmax(e1, fabs((double)y[j] - yr[j]) / fmax(s, 1e-30));
            e2 = fmax(e2, fabs((double)yf[j] - yr[j]) / fmax(s, 1e-30));
            /* |x . (W - deq W)| <= sum |x_k| bound_k: the format's error carried into y */
            double over = fabs((double)y[j] - yt) - (b * 1.0001 + 1e-5 * s);
            e3 = fmax(e3, over);
        }
    CHECK_MSG(e1 < 2e-6 && e2 < 2e-5,
              "%s %s n=%d out=%d in=%d: fast vs ref %g, f32(deq) vs ref %g (of sum|wx|)",
              lmf_qtype_name(t), kind_name[kind], n, out, in, e1, e2);
    CHECK_MSG(e3 <= 0, "%s %s n=%d out=%d in=%d: |y - x W^T| over sum|x| bound by %g",
              lmf_qtype_name(t), kind_name[kind], n, out, in, e3);
    /* The single-thread rows form (the fused decode step's): rows [r0, r1) into a wider y,
     * x in the kernels' order; the values of the whole product (the same bits below 16 input
     * rows, where both run the same kernel; past them lmf_qmatmul goes through dequantized
     * panels and the GEMM library), the rest untouched. */
    int r0 = out / 3, r1 = out - out / 4, ld = out + 3;
    float *xo = malloc(sizeof(float) * n * in), *yw = malloc(sizeof(float) * n * ld);
    for (int j = 0; j < n * ld; j++) yw[j] = -7.0f;
    lmf_qmatvec_rows(yw, ld, lmf_quant_order_input(t, xo, x, n, in), t, q, n, in, r0, r1);
    int same = 1;
    double ymax = 1e-30;
    for (int j = 0; j < n * out; j++) ymax = fmax(ymax, fabs(y[j]));
    for (int i = 0; i < n; i++)
        for (int o = 0; o < ld; o++) {
            float want = o >= r0 && o < r1 ? y[(size_t)i * out + o] : -7.0f,
                  got = yw[(size_t)i * ld + o];
            same &= n < 16 || want == -7.0f ? got == want : fabs(got - want) <= 1e-5 * ymax;
        }
    CHECK_MSG(same, "%s rows [%d, %d) of n=%d out=%d in=%d: differ from lmf_qmatmul",
              lmf_qtype_name(t), r0, r1, n, out, in);
    free(xo), free(yw);
    lmf_qmatmul_t(dx, dy, t, q, n, out, in);
    lmf_qmatmul_t_ref(dxr, dy, t, q, n, out, in);
    double ed = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < in; k++) {
            double s = 0;
            for (int o = 0; o < out; o++)
                s += fabs((double)dy[(size_t)i * out + o] * Wd[(size_t)o * in + k]);
            size_t j = (size_t)i * in + k;
            ed = fmax(ed, fabs((double)dx[j] - dxr[j]) / fmax(s, 1e-30));
        }
    CHECK_MSG(ed < 1e-6, "%s %s dx n=%d out=%d in=%d: fast vs ref %g (of sum|dy w|)",
              lmf_qtype_name(t), kind_name[kind], n, out, in, ed);
    (void)scale;
    free(W), free(Wd), free(x), free(y), free(yr), free(yf), free(dy), free(dx), free(dxr), free(q);
}

int main(void) {
    lmf_rng_seed(&rng, 5);
    printf("AVX-512 quantized kernels: %s\n", lmf_quant_kernels_avx512() ? "yes" : "no");
    check_layouts();
    check_errors();
    check_from_16bit();
    check_double_quant();
    for (int t = 0; t < LMF_QTYPE_COUNT; t++)
        for (int k = 0; k < N_KINDS; k++) check_roundtrip((lmf_qtype)t, k, 7, 512);
    int shapes[][3] = {{1, 1, 256}, {1, 37, 256},  {2, 5, 512},  {3, 64, 768},
                       {4, 9, 256}, {5, 33, 1024}, {9, 17, 256}, {70, 13, 512}};
    for (int th = 1; th <= 2; th++) {
        lmf_compute_set_threads(th);
        for (int t = 0; t < LMF_QTYPE_COUNT; t++)
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
                check_products((lmf_qtype)t, (int)(s % N_KINDS), shapes[s][0], shapes[s][1],
                               shapes[s][2]);
        /* Row lengths that are only a multiple of the small blocks. */
        check_products(LMF_Q8_0, RANDOM, 3, 20, 96);
        check_products(LMF_Q4_0, OUTLIER, 2, 7, 32);
        check_products(LMF_NF4, TINY, 5, 11, 192);
        check_products(LMF_Q4_1, RANDOM, 1, 300, 160);
    }
    return test_summary("test_quant");
}
