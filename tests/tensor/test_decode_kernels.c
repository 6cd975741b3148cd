/* The inference kernels against their plain-C references: f32 and bf16 matrix x few-vectors
 * products on random and odd shapes (tails of the 16/32-wide vectors, row counts that are not
 * multiples of the 4 x 4 tile, one and many threads; the single-thread row-range kernels on
 * uneven ranges into a wider output), and the vectorised paged attention
 * against the ref backend's on scattered block tables, GQA, odd head sizes and prefill chunks,
 * over float32, bfloat16 and int8 caches; the KV cache formats' round-trip error bounds. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/decode_kernels.h"
#include "test.h"

static lmf_rng rng;

static float *randn(size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = lmf_rng_normal(&rng);
    return p;
}

static void check_matvec(int n, int out, int in) {
    float *x = randn((size_t)n * in), *W = randn((size_t)out * in);
    float *y = malloc(sizeof(float) * n * out), *yr = malloc(sizeof(float) * n * out);
    uint16_t *Wb = malloc(2 * (size_t)out * in + 2), *xb = malloc(2 * (size_t)n * in + 2);
    for (size_t i = 0; i < (size_t)out * in; i++) Wb[i] = lmf_f32_to_bf16(W[i]);
    lmf_matvec_f32(y, x, W, n, out, in);
    lmf_matvec_f32_ref(yr, x, W, n, out, in);
    double e = test_max_rel(y, yr, (size_t)n * out);
    CHECK_MSG(e < 1e-5, "f32 n=%d out=%d in=%d: rel err %g", n, out, in, e);
    lmf_matvec_bf16(y, x, Wb, n, out, in, xb);
    lmf_matvec_bf16_ref(yr, x, Wb, n, out, in);
    e = test_max_rel(y, yr, (size_t)n * out);
    CHECK_MSG(e < 1e-5, "bf16 n=%d out=%d in=%d: rel err %g", n, out, in, e);
    /* And bf16 is close to the f32 product (weights and inputs rounded to 8 bits). */
    lmf_matvec_f32_ref(yr, x, W, n, out, in);
    e = test_max_rel(y, yr, (size_t)n * out);
    CHECK_MSG(e < 3e-2, "bf16 vs f32 n=%d out=%d in=%d: rel err %g", n, out, in, e);
    /* x rounded to bf16 by lmf_round_bf16 (the row-range kernels' input) is lmf_f32_to_bf16's. */
    lmf_round_bf16(xb, x, (size_t)n * in);
    for (size_t i = 0; i < (size_t)n * in; i++)
        if (xb[i] != lmf_f32_to_bf16(x[i])) {
            CHECK_MSG(0, "round_bf16 of x[%zu]", i);
            break;
        }
    /* The single-thread row-range kernels, in three uneven pieces into a wider y; the bf16 input
     * at a padded row stride (the padding poisoned with NaN: never read). */
    size_t ldx = (size_t)in + 5;
    uint16_t *xbp = malloc(2 * (size_t)n * ldx);
    for (int i = 0; i < n; i++) {
        memcpy(xbp + i * ldx, xb + (size_t)i * in, 2 * (size_t)in);
        for (size_t k = (size_t)in; k < ldx; k++) xbp[i * ldx + k] = 0x7fc0;
    }
    int ld = out + 3, cut[4] = {0, out / 3, out / 3 + (out - out / 3) / 2 + 1, out};
    if (cut[2] > out) cut[2] = out;
    float *yw = malloc(sizeof(float) * n * ld);
    for (int kind = 0; kind < 2; kind++) {
        for (int j = 0; j < 3; j++)
            if (kind)
                lmf_matvec_bf16_rows(yw, ld, xbp, ldx, Wb, n, in, cut[j], cut[j + 1]);
            else
                lmf_matvec_f32_rows(yw, ld, x, W, n, in, cut[j], cut[j + 1]);
        if (kind)
            lmf_matvec_bf16_ref(yr, x, Wb, n, out, in);
        else
            lmf_matvec_f32_ref(yr, x, W, n, out, in);
        double worst = 0;
        for (int i = 0; i < n; i++)
            worst = fmax(worst, test_max_rel(yw + (size_t)i * ld, yr + (size_t)i * out, out));
        CHECK_MSG(worst < 1e-5, "%s rows n=%d out=%d in=%d: rel err %g", kind ? "bf16" : "f32", n,
                  out, in, worst);
    }
    /* The transposed-input f32 kernel (many rows), the same three pieces; the rows past n in
     * the padded xt are poisoned first to show they are zeroed and never stored. */
    float *xt = malloc(sizeof(float) * lmf_xt_stride(n) * in);
    for (size_t i = 0; i < lmf_xt_stride(n) * in; i++) xt[i] = NAN;
    lmf_transpose_input(xt, x, n, in);
    size_t xld = lmf_xt_stride(n), bad = 0;
    for (int k = 0; k < in; k++) /* x transposed exactly, the padding rows zeroed */
        for (size_t i = 0; i < xld; i++)
            bad += xt[k * xld + i] != (i < (size_t)n ? x[i * in + k] : 0.0f);
    CHECK_MSG(!bad, "transpose n=%d in=%d: %zu values wrong", n, in, bad);
    for (size_t i = 0; i < (size_t)n * ld; i++) yw[i] = NAN;
    for (int j = 0; j < 3; j++) lmf_matmul_f32_xt(yw, ld, xt, n, W, in, cut[j], cut[j + 1]);
    lmf_matvec_f32_ref(yr, x, W, n, out, in);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        worst = fmax(worst, test_max_rel(yw + (size_t)i * ld, yr + (size_t)i * out, out));
        for (int o = out; o < ld; o++)
            CHECK_MSG(isnan(yw[(size_t)i * ld + o]), "xt wrote past out");
    }
    CHECK_MSG(worst < 1e-5, "f32 transposed-input n=%d out=%d in=%d: rel err %g", n, out, in,
              worst);
    free(xt);
    /* lmf_round_bf16 gives lmf_f32_to_bf16's bits: ties both ways, denormals, inf, NaN. */
    float rx[9] = {1.00390625f, 1.01171875f, -3.5f,     1e-3f, 1e-40f,
                   -1e-45f,     INFINITY,    -INFINITY, NAN};
    uint16_t rb[9];
    lmf_round_bf16(rb, rx, 9);
    for (int i = 0; i < 9; i++) CHECK_MSG(rb[i] == lmf_f32_to_bf16(rx[i]), "round_bf16 [%d]", i);
    free(yw), free(xbp);
    free(x), free(W), free(y), free(yr), free(Wb), free(xb);
}

static size_t align64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

/* Fast paged attention against the ref backend's over a cache of type t, laid out as
 * lmforge/tensor.h says (the pool's layout: 3 layers per block, this one the middle one), and
 * against the ref backend over a float32 cache holding the same values decoded
 * (lmf_kv_load_rows): the kernels widen and scale the stored rows as the format defines. */
static void check_attn(lmf_kv_dtype t, int H, int KVH, int D, int bs, int n_seqs, const int *start,
                       const int *n_new) {
    int n_blocks = 0, total = 0;
    for (int i = 0; i < n_seqs; i++) {
        n_blocks += (start[i] + n_new[i] + bs - 1) / bs;
        total += n_new[i];
    }
    size_t rows = (size_t)bs * KVH, es = lmf_kv_dtype_size(t), scale_off = align64(rows * D * es),
           layer = scale_off + (t == LMF_KV_INT8 ? align64(rows * sizeof(float)) : 0),
           stride = 3 * layer, f32_layer = rows * D * sizeof(float);
    uint8_t *k = calloc(stride * n_blocks, 1), *v = calloc(stride * n_blocks, 1);
    float *kf = malloc(3 * f32_layer * n_blocks), *vf = malloc(3 * f32_layer * n_blocks);
    for (int b = 0; b < n_blocks; b++)
        for (int w = 0; w < 2; w++) {
            uint8_t *dst = (w ? v : k) + b * stride + layer;
            float *x = randn(rows * D), *dec = (w ? vf : kf) + (b * 3 * f32_layer + f32_layer) / 4;
            lmf_kv_store_rows(t, dst, (float *)(dst + scale_off), x, (int)rows, D);
            lmf_kv_load_rows(t, dec, dst, (const float *)(dst + scale_off), (int)rows, D);
            free(x);
        }
    float *q = randn((size_t)total * H * D);
    float *o = malloc(sizeof(float) * total * H * D), *orf = malloc(sizeof(float) * total * H * D),
          *of = malloc(sizeof(float) * total * H * D);
    lmf_paged_seq *ps = malloc(sizeof *ps * n_seqs);
    int32_t *tables = malloc(sizeof(int32_t) * n_blocks);
    /* Blocks handed out in a scrambled order. */
    for (int b = 0; b < n_blocks; b++) tables[b] = (b * 7 + 3) % n_blocks;
    int row = 0, tb = 0;
    for (int i = 0; i < n_seqs; i++) {
        ps[i] = (lmf_paged_seq){row, n_new[i], start[i], tables + tb};
        row += n_new[i];
        tb += (start[i] + n_new[i] + bs - 1) / bs;
    }
    float sc = 1.0f / sqrtf((float)D);
    lmf_paged_shape sh = {H, KVH, D, bs, stride, sc, t, scale_off},
                    shf = {H, KVH, D, bs, 3 * f32_layer, sc, LMF_KV_F32, 0};
    lmf_attn_paged_fast(o, q, k + layer, v + layer, ps, n_seqs, &sh);
    lmf_backend_ref()->attn_paged(orf, q, k + layer, v + layer, ps, n_seqs, &sh);
    lmf_backend_ref()->attn_paged(of, q, (uint8_t *)kf + f32_layer, (uint8_t *)vf + f32_layer, ps,
                                  n_seqs, &shf);
    double e = test_max_rel(o, orf, (size_t)total * H * D),
           ef = test_max_rel(o, of, (size_t)total * H * D);
    CHECK_MSG(e < 1e-5 && ef < 1e-5, "attn %s H=%d KVH=%d D=%d bs=%d: rel err %g, %g (decoded)",
              lmf_kv_dtype_name(t), H, KVH, D, bs, e, ef);
    free(k), free(v), free(kf), free(vf), free(q), free(o), free(orf), free(of), free(ps),
        free(tables);
}

/* The cache formats' round trip: bf16 within half an ulp (|x - r| <= 2^-8 |x|, and the bits of
 * lmf_f32_to_bf16); int8 within half a quantization step (|x - q * scale| <= scale / 2, scale =
 * max|x| / 127, the row's largest value stored as +-127), a zero row as zeros. */
static void check_kv_formats(void) {
    enum { ROWS = 7, D = 40 };
    float *x = randn(ROWS * D), y[ROWS * D], scales[ROWS];
    for (int d = 0; d < D; d++) x[3 * D + d] = 0;       /* a zero row */
    for (int d = 0; d < D; d++) x[4 * D + d] *= 1e-30f; /* a tiny one */
    for (int d = 0; d < D; d++) x[5 * D + d] *= 1e30f;  /* a huge one */
    x[6 * D + 5] = 10.0f, x[6 * D + 6] = -10.0f;        /* the row's max with both signs */
    uint16_t b[ROWS * D];
    lmf_kv_store_rows(LMF_KV_BF16, b, NULL, x, ROWS, D);
    lmf_kv_load_rows(LMF_KV_BF16, y, b, NULL, ROWS, D);
    int bad = 0;
    for (int i = 0; i < ROWS * D; i++)
        bad += b[i] != lmf_f32_to_bf16(x[i]) || fabs(y[i] - x[i]) > fabs(x[i]) / 256;
    CHECK_MSG(!bad, "bf16 kv rows: %d values off", bad);
    int8_t q[ROWS * D];
    lmf_kv_store_rows(LMF_KV_INT8, q, scales, x, ROWS, D);
    lmf_kv_load_rows(LMF_KV_INT8, y, q, scales, ROWS, D);
    bad = 0;
    for (int r = 0; r < ROWS; r++) {
        double amax = 0;
        int qmax = 0;
        for (int d = 0; d < D; d++) {
            amax = fmax(amax, fabs(x[r * D + d]));
            qmax = abs(q[r * D + d]) > qmax ? abs(q[r * D + d]) : qmax;
        }
        bad += fabs(scales[r] - amax / 127) > 1e-6 * amax / 127 || (amax > 0 && qmax != 127);
        for (int d = 0; d < D; d++)
            bad += fabs((double)y[r * D + d] - x[r * D + d]) > scales[r] * 0.5 * (1 + 1e-5) ||
                   q[r * D + d] < -127;
    }
    CHECK_MSG(!bad, "int8 kv rows: %d values or scales off", bad);
    CHECK(scales[3] == 0 && q[3 * D] == 0 && y[3 * D + 7] == 0);
    /* Hand-computed: max 2.54 gives scale 0.02; 1.0 -> 50, -0.062 -> -3.1 -> -3, 0.019 -> 0.95
     * -> 1. */
    float h[4] = {2.54f, 1.0f, -0.062f, 0.019f};
    int8_t hq[4];
    float hs;
    lmf_kv_store_rows(LMF_KV_INT8, hq, &hs, h, 1, 4);
    CHECK_NEAR(hs, 0.02, 1e-7);
    CHECK(hq[0] == 127 && hq[1] == 50 && hq[2] == -3 && hq[3] == 1);
    CHECK(q[6 * D + 5] == 127 && q[6 * D + 6] == -127);
    free(x);
}

int main(void) {
    lmf_rng_seed(&rng, 11);
    int shapes[][3] = {{1, 1, 1},
                       {1, 5, 7},
                       {1, 64, 768},
                       {1, 33, 100},
                       {2, 13, 31},
                       {3, 17, 48},
                       {4, 8, 16},
                       {5, 70, 129},
                       {7, 3, 1000},
                       {9, 67, 65},
                       {16, 130, 96},
                       {70, 129, 77},
                       {1, 2048, 768},
                       {33, 40, 200},
                       {48, 25, 96},
                       /* inputs in 2 or 3 blocks of the tiles (KBLOCK) */
                       {9, 37, 2100},
                       {8, 13, 2048},
                       {70, 21, 1030}};
    for (int t = 1; t <= 2; t++) {
        lmf_compute_set_threads(t);
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            check_matvec(shapes[i][0], shapes[i][1], shapes[i][2]);
        for (int t = 0; t < LMF_KV_DTYPE_COUNT; t++) {
            lmf_kv_dtype dt = (lmf_kv_dtype)t;
            /* Decode rows (n_new 1) at various lengths, with prefill chunks beside them; head
             * sizes that are and are not multiples of the 16-wide vectors. */
            int st1[] = {0, 5, 16, 40}, nn1[] = {1, 1, 1, 1};
            check_attn(dt, 4, 2, 8, 4, 4, st1, nn1);
            check_attn(dt, 12, 12, 64, 16, 4, st1, nn1);
            int st2[] = {0, 3, 70}, nn2[] = {9, 1, 33};
            check_attn(dt, 6, 2, 12, 5, 3, st2, nn2);
            check_attn(dt, 8, 1, 16, 16, 3, st2, nn2);
            check_attn(dt, 4, 2, 48, 3, 3, st2, nn2);
            int st3[] = {100}, nn3[] = {1};
            check_attn(dt, 9, 3, 64, 16, 1, st3, nn3);
            check_attn(dt, 4, 4, 128, 16, 1, st3, nn3);
        }
    }
    check_kv_formats();
    return test_summary("test_decode_kernels");
}
