/* Products with quantized weights (lmforge/quant.h): y = x W^T and dx = dy W with W stored as
 * quantized rows, x and y float32. The AVX-512 path decodes each block in registers (nibbles
 * widened to 32-bit lanes, a 16-entry table lookup with vpermps for NF4 / FP4) and multiplies it
 * against up to four input rows at once, so a weight byte is read once per four rows; it is
 * compiled with target attributes and chosen at run time, the plain-C references in quant.c
 * being the fallback. Threads (the one OpenMP pool) take contiguous ranges of output rows. */
#include "lmforge/quant.h"

#include "lmforge/core.h"
#include "tensor/gemm.h"
#include "tensor/quant_blocks.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define PAR_MIN_WORK (1 << 16) /* multiply-adds below which one thread does the product */
#define XBLOCK       64        /* input rows per cache block */
/* From this many input rows (QLoRA's forward and backward, prefill) a product dequantizes W a
 * panel at a time and multiplies with the GEMM library: each weight decoded once rather than
 * once per 4 input rows, the multiply-adds at the library's speed (llama-110m q8_0 LoRA step of
 * 64 tokens: 4.7 s before, 0.41 s after, f32 0.25 s; bench/bench_qlora.sh). */
#define PANEL_MIN_ROWS 16
#define PANEL_BYTES    (2 << 20) /* float32 bytes of one dequantized panel */

/* Values one decode step of a row takes: a 32-value block (Q8_0, Q4_0, Q4_1), or 64 values
 * (NF4 / FP4 blocks, Q4_K's chunks). */
static int unit_values(lmf_qtype t) {
    return t == LMF_Q8_0 || t == LMF_Q4_0 || t == LMF_Q4_1 ? 32 : 64;
}

static int env_disables_avx512(void) {
    const char *v = getenv("LMF_NO_AVX512");
    return v && v[0] && strcmp(v, "0");
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define HAVE_X86_KERNELS 1
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

int lmf_quant_kernels_avx512(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 !env_disables_avx512();
    }
    return cached;
}

AVX512 static inline float h2f(uint16_t h) {
    return _cvtsh_ss(h);
}

/* 16 bytes widened to 16 lanes of int32. */
AVX512 static inline __m512i load16_u8(const uint8_t *p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}

/* Each decoder turns one unit of a row (32 or 64 values) into NV vectors of 16 floats, in the
 * order the matching x layout expects (natural order except NF4/FP4: see permute_x). */
#define DEC_Q8_0(row, u, w)                                                                        \
    do {                                                                                           \
        const blk_q8_0 *b_ = (const blk_q8_0 *)(row) + (u);                                        \
        __m512 d_ = _mm512_set1_ps(h2f(b_->d));                                                    \
        w[0] = _mm512_mul_ps(d_, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(                          \
                                     _mm_loadu_si128((const __m128i *)b_->qs))));                  \
        w[1] = _mm512_mul_ps(d_, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(                          \
                                     _mm_loadu_si128((const __m128i *)(b_->qs + 16)))));           \
    } while (0)

/* 4-bit integer codes through a 16-entry table scaled per block (one multiply, then vpermps
 * per 16 values): fewer operations than widening, offsetting and converting each value. */
static const float q4_0_lut[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
static const float q4_1_lut[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

#define DEC_Q4_0(row, u, w)                                                                        \
    do {                                                                                           \
        const blk_q4_0 *b_ = (const blk_q4_0 *)(row) + (u);                                        \
        __m512 s_ = _mm512_mul_ps(_mm512_loadu_ps(q4_0_lut), _mm512_set1_ps(h2f(b_->d)));          \
        __m512i v_ = load16_u8(b_->qs);                                                            \
        w[0] = _mm512_permutexvar_ps(_mm512_and_si512(v_, _mm512_set1_epi32(15)), s_);             \
        w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(v_, 4), s_);                                \
    } while (0)

#define DEC_Q4_1(row, u, w)                                                                        \
    do {                                                                                           \
        const blk_q4_1 *b_ = (const blk_q4_1 *)(row) + (u);                                        \
        __m512 s_ = _mm512_fmadd_ps(_mm512_loadu_ps(q4_1_lut), _mm512_set1_ps(h2f(b_->d)),         \
                                    _mm512_set1_ps(h2f(b_->m)));                                   \
        __m512i v_ = load16_u8(b_->qs);                                                            \
        w[0] = _mm512_permutexvar_ps(_mm512_and_si512(v_, _mm512_set1_epi32(15)), s_);             \
        w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(v_, 4), s_);                                \
    } while (0)

/* NF4 / FP4: w[0] = even values 0..30, w[1] = odd values 1..31, w[2], w[3] likewise for
 * 32..63 (x permuted to match). lut is the 16 code values. */
#define DEC_CODE4(row, u, w, lut)                                                                  \
    do {                                                                                           \
        const blk_nf4 *b_ = (const blk_nf4 *)(row) + (u);                                          \
        __m512 s_ = _mm512_mul_ps(lut, _mm512_set1_ps(b_->absmax));                                \
        __m512i v0_ = load16_u8(b_->qs), v1_ = load16_u8(b_->qs + 16), f_ = _mm512_set1_epi32(15); \
        w[0] = _mm512_permutexvar_ps(_mm512_srli_epi32(v0_, 4), s_);                               \
        w[1] = _mm512_permutexvar_ps(_mm512_and_si512(v0_, f_), s_);                               \
        w[2] = _mm512_permutexvar_ps(_mm512_srli_epi32(v1_, 4), s_);                               \
        w[3] = _mm512_permutexvar_ps(_mm512_and_si512(v1_, f_), s_);                               \
    } while (0)

/* Q4_K: unit u is the 64-value chunk u % 4 of super-block u / 4; each 32-value sub-block's 16
 * possible values d * sc * q - dmin * m made once and looked up (as Q4_1), the same arithmetic
 * per value as widening and converting each one, fewer operations. */
#define DEC_Q4_K(row, u, w)                                                                        \
    do {                                                                                           \
        const blk_q4_k *b_ = (const blk_q4_k *)(row) + (u) / 4;                                    \
        int c_ = (int)((u) % 4);                                                                   \
        uint8_t sc_, m_;                                                                           \
        float d_ = h2f(b_->d), dm_ = h2f(b_->dmin);                                                \
        q4k_scale_min(2 * c_, b_->scales, &sc_, &m_);                                              \
        __m512 d1_ = _mm512_set1_ps(d_ * sc_), m1_ = _mm512_set1_ps(dm_ * m_);                     \
        q4k_scale_min(2 * c_ + 1, b_->scales, &sc_, &m_);                                          \
        __m512 d2_ = _mm512_set1_ps(d_ * sc_), m2_ = _mm512_set1_ps(dm_ * m_);                     \
        __m512i v0_ = load16_u8(b_->qs + 32 * c_), v1_ = load16_u8(b_->qs + 32 * c_ + 16);         \
        __m512i f_ = _mm512_set1_epi32(15);                                                        \
        __m512 l1_ = _mm512_fmsub_ps(d1_, _mm512_loadu_ps(q4_1_lut), m1_),                         \
               l2_ = _mm512_fmsub_ps(d2_, _mm512_loadu_ps(q4_1_lut), m2_);                         \
        w[0] = _mm512_permutexvar_ps(_mm512_and_si512(v0_, f_), l1_);                              \
        w[1] = _mm512_permutexvar_ps(_mm512_and_si512(v1_, f_), l1_);                              \
        w[2] = _mm512_permutexvar_ps(_mm512_srli_epi32(v0_, 4), l2_);                              \
        w[3] = _mm512_permutexvar_ps(_mm512_srli_epi32(v1_, 4), l2_);                              \
    } while (0)

/* dot_<type>_<NX>: out[i] = row . x[i] for NX input rows (pointers; x[i] of `in` floats). */
#define DEFINE_DOT(NAME, NX, UNIT, NV, DECODE, SETUP)                                              \
    AVX512 static void NAME(const uint8_t *row, const float *const *x, int in, float *out) {       \
        SETUP;                                                                                     \
        __m512 acc[NX][NV];                                                                        \
        for (int i = 0; i < NX; i++)                                                               \
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();                          \
        int64_t nu = in / (UNIT);                                                                  \
        for (int64_t u = 0; u < nu; u++) {                                                         \
            __m512 w[NV];                                                                          \
            DECODE;                                                                                \
            for (int i = 0; i < NX; i++)                                                           \
                for (int v = 0; v < NV; v++)                                                       \
                    acc[i][v] = _mm512_fmadd_ps(w[v], _mm512_loadu_ps(x[i] + u * (UNIT) + 16 * v), \
                                                acc[i][v]);                                        \
        }                                                                                          \
        for (int i = 0; i < NX; i++) {                                                             \
            __m512 s = acc[i][0];                                                                  \
            for (int v = 1; v < NV; v++) s = _mm512_add_ps(s, acc[i][v]);                          \
            out[i] = _mm512_reduce_add_ps(s);                                                      \
        }                                                                                          \
    }

#define NOSETUP (void)0
#define NF4LUT  __m512 lut = _mm512_loadu_ps(lmf_nf4_code)
#define FP4LUT  __m512 lut = _mm512_loadu_ps(lmf_fp4_code)

DEFINE_DOT(dot_q8_0_1, 1, 32, 2, DEC_Q8_0(row, u, w), NOSETUP)
DEFINE_DOT(dot_q8_0_4, 4, 32, 2, DEC_Q8_0(row, u, w), NOSETUP)
DEFINE_DOT(dot_q4_0_1, 1, 32, 2, DEC_Q4_0(row, u, w), NOSETUP)
DEFINE_DOT(dot_q4_0_4, 4, 32, 2, DEC_Q4_0(row, u, w), NOSETUP)
DEFINE_DOT(dot_q4_1_1, 1, 32, 2, DEC_Q4_1(row, u, w), NOSETUP)
DEFINE_DOT(dot_q4_1_4, 4, 32, 2, DEC_Q4_1(row, u, w), NOSETUP)
DEFINE_DOT(dot_nf4_1, 1, 64, 4, DEC_CODE4(row, u, w, lut), NF4LUT)
DEFINE_DOT(dot_nf4_4, 4, 64, 4, DEC_CODE4(row, u, w, lut), NF4LUT)
DEFINE_DOT(dot_fp4_1, 1, 64, 4, DEC_CODE4(row, u, w, lut), FP4LUT)
DEFINE_DOT(dot_fp4_4, 4, 64, 4, DEC_CODE4(row, u, w, lut), FP4LUT)
DEFINE_DOT(dot_q4_k_1, 1, 64, 4, DEC_Q4_K(row, u, w), NOSETUP)
DEFINE_DOT(dot_q4_k_4, 4, 64, 4, DEC_Q4_K(row, u, w), NOSETUP)

typedef void (*dot_fn)(const uint8_t *, const float *const *, int, float *);

static void pick_dot(lmf_qtype t, dot_fn *f1, dot_fn *f4) {
    switch (t) {
    case LMF_Q8_0:
        *f1 = dot_q8_0_1, *f4 = dot_q8_0_4;
        break;
    case LMF_Q4_0:
        *f1 = dot_q4_0_1, *f4 = dot_q4_0_4;
        break;
    case LMF_Q4_1:
        *f1 = dot_q4_1_1, *f4 = dot_q4_1_4;
        break;
    case LMF_NF4:
        *f1 = dot_nf4_1, *f4 = dot_nf4_4;
        break;
    case LMF_FP4:
        *f1 = dot_fp4_1, *f4 = dot_fp4_4;
        break;
    default:
        *f1 = dot_q4_k_1, *f4 = dot_q4_k_4;
        break;
    }
}

/* NF4 / FP4 decode to (even, odd) halves of each 32 values; x is permuted the same way once per
 * call so the inner loop needs no shuffles. */
static void permute_x(float *dst, const float *x, int n, int in) {
    for (int i = 0; i < n; i++)
        for (int b = 0; b < in; b += 32)
            for (int j = 0; j < 16; j++) {
                dst[(size_t)i * in + b + j] = x[(size_t)i * in + b + 2 * j];
                dst[(size_t)i * in + b + 16 + j] = x[(size_t)i * in + b + 2 * j + 1];
            }
}

/* y[i * ldy + o] for input rows [x0, x1) and weight rows [r0, r1), on the calling thread; x in
 * the order the dot kernels expect (permute_x for NF4 / FP4). */
AVX512 static void rows_avx(float *y, int ldy, const float *x, lmf_qtype t, const void *W, int in,
                            int x0, int x1, int r0, int r1) {
    dot_fn f1, f4;
    pick_dot(t, &f1, &f4);
    size_t rb = lmf_quant_row_bytes(t, in);
    for (int o = r0; o < r1; o++) {
        const uint8_t *row = (const uint8_t *)W + (size_t)o * rb;
        int i = x0;
        for (; i + 4 <= x1; i += 4) {
            const float *xs[4] = {x + (size_t)i * in, x + (size_t)(i + 1) * in,
                                  x + (size_t)(i + 2) * in, x + (size_t)(i + 3) * in};
            float r[4];
            f4(row, xs, in, r);
            for (int k = 0; k < 4; k++) y[(size_t)(i + k) * ldy + o] = r[k];
        }
        for (; i < x1; i++) {
            const float *xs[1] = {x + (size_t)i * in};
            f1(row, xs, in, &y[(size_t)i * ldy + o]);
        }
    }
}

static int needs_permuted_x(lmf_qtype t) {
    return t == LMF_NF4 || t == LMF_FP4;
}

static void qmatmul_avx(float *y, const float *x, lmf_qtype t, const void *W, int n, int out,
                        int in) {
    float *xp = NULL;
    if (needs_permuted_x(t)) {
        xp = malloc(sizeof(float) * (size_t)n * in);
        if (!xp) { /* no scratch: the reference still gives the right answer */
            lmf_qmatmul_ref(y, x, t, W, n, out, in);
            return;
        }
        permute_x(xp, x, n, in);
        x = xp;
    }
    for (int x0 = 0; x0 < n; x0 += XBLOCK) {
        int x1 = x0 + XBLOCK < n ? x0 + XBLOCK : n;
        if ((double)(x1 - x0) * out * in <= PAR_MIN_WORK) {
            rows_avx(y, out, x, t, W, in, x0, x1, 0, out);
            continue;
        }
#pragma omp parallel
        {
            int nth = omp_get_num_threads(), tid = omp_get_thread_num();
            int per = (out + nth - 1) / nth, r0 = tid * per, r1 = r0 + per < out ? r0 + per : out;
            if (r0 < r1) rows_avx(y, out, x, t, W, in, x0, x1, r0, r1);
        }
    }
    free(xp);
}

/* Decodes units [u0, u1) of a row into natural order at dst. */
AVX512 static void decode_units(float *dst, lmf_qtype t, const uint8_t *row, int64_t u0,
                                int64_t u1) {
    const __m512i even = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i odd =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    __m512 lut = _mm512_loadu_ps(t == LMF_FP4 ? lmf_fp4_code : lmf_nf4_code);
    for (int64_t u = u0; u < u1; u++) {
        __m512 w[4];
        int nv = unit_values(t) / 16;
        float *p = dst + (u - u0) * 16 * nv;
        switch (t) {
        case LMF_Q8_0:
            DEC_Q8_0(row, u, w);
            break;
        case LMF_Q4_0:
            DEC_Q4_0(row, u, w);
            break;
        case LMF_Q4_1:
            DEC_Q4_1(row, u, w);
            break;
        case LMF_Q4_K:
            DEC_Q4_K(row, u, w);
            break;
        default: {
            __m512 h[4];
            DEC_CODE4(row, u, h, lut);
            w[0] = _mm512_permutex2var_ps(h[0], even, h[1]);
            w[1] = _mm512_permutex2var_ps(h[0], odd, h[1]);
            w[2] = _mm512_permutex2var_ps(h[2], even, h[3]);
            w[3] = _mm512_permutex2var_ps(h[2], odd, h[3]);
            break;
        }
        }
        for (int v = 0; v < nv; v++) _mm512_storeu_ps(p + 16 * v, w[v]);
    }
}

/* dx[:, strip] += g * w over the strip (len a multiple of 16). */
AVX512 static void axpy16(float *dx, float g, const float *w, int64_t len) {
    __m512 gv = _mm512_set1_ps(g);
    for (int64_t k = 0; k < len; k += 16)
        _mm512_storeu_ps(dx + k,
                         _mm512_fmadd_ps(gv, _mm512_loadu_ps(w + k), _mm512_loadu_ps(dx + k)));
}

static void qmatmul_t_avx(float *dx, const float *dy, lmf_qtype t, const void *W, int n, int out,
                          int in) {
    int unit = unit_values(t);
    int64_t nu = in / unit;
    size_t rb = lmf_quant_row_bytes(t, in);
    int fail = 0;
#pragma omp parallel if ((double)n * out * in > PAR_MIN_WORK)
    {
        int nth = omp_get_num_threads(), tid = omp_get_thread_num();
        int64_t per = (nu + nth - 1) / nth, u0 = tid * per, u1 = u0 + per < nu ? u0 + per : nu;
        if (u0 < u1) {
            int64_t len = (u1 - u0) * unit;
            float *w = malloc(sizeof(float) * (size_t)len);
            if (!w) {
#pragma omp atomic write
                fail = 1;
            } else {
                for (int i = 0; i < n; i++)
                    memset(dx + (size_t)i * in + u0 * unit, 0, sizeof(float) * len);
                for (int o = 0; o < out; o++) {
                    decode_units(w, t, (const uint8_t *)W + (size_t)o * rb, u0, u1);
                    for (int i = 0; i < n; i++) {
                        float g = dy[(size_t)i * out + o];
                        if (g != 0.0f) axpy16(dx + (size_t)i * in + u0 * unit, g, w, len);
                    }
                }
                free(w);
            }
        }
    }
    if (fail) lmf_qmatmul_t_ref(dx, dy, t, W, n, out, in);
}

int lmf_quant_has_fast_kernel(lmf_qtype t) {
    return (unsigned)t < LMF_QTYPE_COUNT && lmf_quant_kernels_avx512();
}

#else
int lmf_quant_kernels_avx512(void) {
    (void)env_disables_avx512;
    return 0;
}
int lmf_quant_has_fast_kernel(lmf_qtype t) {
    (void)t;
    return 0;
}
#endif

/* The plain-C rows form: y[i * ldy + o] for the n input rows and weight rows [r0, r1). */
static void rows_c(float *y, int ldy, const float *x, lmf_qtype t, const void *W, int n, int in,
                   int r0, int r1) {
    size_t rb = lmf_quant_row_bytes(t, in);
    for (int o = r0; o < r1; o++)
        for (int i = 0; i < n; i++)
            y[(size_t)i * ldy + o] =
                lmf_quant_dot_ref(t, (const uint8_t *)W + (size_t)o * rb, x + (size_t)i * in, in);
}

/* The plain-C path, parallel over output rows (the reference itself stays serial). */
static void qmatmul_c(float *y, const float *x, lmf_qtype t, const void *W, int n, int out,
                      int in) {
#pragma omp parallel for schedule(static) if ((double)n * out * in > PAR_MIN_WORK)
    for (int o = 0; o < out; o++) rows_c(y, out, x, t, W, n, in, o, o + 1);
}

/* rows x in values of W into P, threads over rows; the AVX-512 decoders where they run. */
static void dequantize_panel(lmf_qtype t, float *P, const uint8_t *W, int rows, int in) {
    size_t rb = lmf_quant_row_bytes(t, in);
#ifdef HAVE_X86_KERNELS
    if (lmf_quant_kernels_avx512()) {
#pragma omp parallel for schedule(static) if ((int64_t)rows * in > (1 << 16))
        for (int r = 0; r < rows; r++)
            decode_units(P + (size_t)r * in, t, W + r * rb, 0, in / unit_values(t));
        return;
    }
#endif
    lmf_dequantize(t, P, W, rows, in);
}

/* Rows per panel of `in` floats: about PANEL_BYTES, a multiple of 16. */
static int panel_rows(int in, int out) {
    int r = (int)(PANEL_BYTES / (sizeof(float) * (size_t)in)) & ~15;
    if (r < 16) r = 16;
    return r < out ? r : out;
}

/* y = x W^T (transposed = 0) or dx = dy W (transposed = 1) through dequantized panels of W and
 * the GEMM library. Returns non-zero when no scratch could be had (nothing written). */
static int panel_product(float *y, const float *x, lmf_qtype t, const void *W, int n, int out,
                         int in, int transposed) {
    int pr = panel_rows(in, out);
    float *P = malloc(sizeof(float) * (size_t)pr * in);
    if (!P) return 1;
    size_t rb = lmf_quant_row_bytes(t, in);
    for (int r0 = 0; r0 < out; r0 += pr) {
        int rows = r0 + pr < out ? pr : out - r0;
        dequantize_panel(t, P, (const uint8_t *)W + (size_t)r0 * rb, rows, in);
        if (transposed) /* dx (n, in) += dy[:, r0:r0+rows] P */
            lmf_gemm_f32(0, 0, n, in, rows, 1.0f, x + r0, out, P, in, r0 ? 1.0f : 0.0f, y, in);
        else /* y[:, r0:r0+rows] = x P^T */
            lmf_gemm_f32(0, 1, n, rows, in, 1.0f, x, in, P, in, 0.0f, y + r0, out);
    }
    free(P);
    return 0;
}

void lmf_qmatmul(float *y, const float *x, lmf_qtype t, const void *W, int n, int out, int in) {
    if (n >= PANEL_MIN_ROWS && !panel_product(y, x, t, W, n, out, in, 0)) return;
#ifdef HAVE_X86_KERNELS
    if (lmf_quant_kernels_avx512()) {
        qmatmul_avx(y, x, t, W, n, out, in);
        return;
    }
#endif
    qmatmul_c(y, x, t, W, n, out, in);
}

void lmf_qmatmul_t(float *dx, const float *dy, lmf_qtype t, const void *W, int n, int out, int in) {
    if (n >= PANEL_MIN_ROWS && !panel_product(dx, dy, t, W, n, out, in, 1)) return;
#ifdef HAVE_X86_KERNELS
    if (lmf_quant_kernels_avx512()) {
        qmatmul_t_avx(dx, dy, t, W, n, out, in);
        return;
    }
#endif
    lmf_qmatmul_t_ref(dx, dy, t, W, n, out, in);
}

int lmf_quant_reorders_input(lmf_qtype t) {
#ifdef HAVE_X86_KERNELS
    return lmf_quant_kernels_avx512() && needs_permuted_x(t);
#else
    (void)t;
    return 0;
#endif
}

const float *lmf_quant_order_input(lmf_qtype t, float *dst, const float *x, int n, int in) {
#ifdef HAVE_X86_KERNELS
    if (lmf_quant_reorders_input(t)) {
        permute_x(dst, x, n, in);
        return dst;
    }
#endif
    (void)dst, (void)n, (void)in;
    return x;
}

void lmf_qmatvec_rows(float *y, int ldy, const float *x, lmf_qtype t, const void *W, int n, int in,
                      int r0, int r1) {
#ifdef HAVE_X86_KERNELS
    if (lmf_quant_kernels_avx512()) {
        rows_avx(y, ldy, x, t, W, in, 0, n, r0, r1);
        return;
    }
#endif
    rows_c(y, ldy, x, t, W, n, in, r0, r1);
}
