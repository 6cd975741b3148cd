/* Inference kernels: f32 and bf16 matrix x few-vectors products and vectorised paged attention
 * (declared in lmforge/decode_kernels.h). A decode step is memory-bound: the products stream
 * each weight row once, in 4-row tiles held against up to 4 input rows, threads taking
 * contiguous row ranges so every core reads one sequential stream. */
#include "lmforge/decode_kernels.h"

#include "vexpf.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define PAR_MIN_WORK (1 << 16) /* multiply-adds below which one thread does the product */
#define WBLOCK       64        /* weight rows per cache block (bf16 prefill) */
#define XBLOCK       64        /* input rows per cache block */

void lmf_matvec_f32_ref(float *y, const float *x, const float *W, int n, int out, int in) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            float s = 0;
            for (int k = 0; k < in; k++) s += x[(size_t)i * in + k] * W[(size_t)o * in + k];
            y[(size_t)i * out + o] = s;
        }
}

void lmf_matvec_bf16_ref(float *y, const float *x, const uint16_t *W, int n, int out, int in) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            float s = 0;
            for (int k = 0; k < in; k++)
                s += lmf_bf16_to_f32(lmf_f32_to_bf16(x[(size_t)i * in + k])) *
                     lmf_bf16_to_f32(W[(size_t)o * in + k]);
            y[(size_t)i * out + o] = s;
        }
}

/* How far ahead of its reads a single-row kernel asks for weight bytes into L2. The rows of a
 * one-row step stream strictly in address order, yet the hardware prefetcher alone left the
 * step at 85-90 % of a plain read of the same bytes; asking for the lines 2 KB ahead (one
 * prefetcht1 per line read) made one-token steps 4-10 % faster (llama-110m, 2 threads, f32 and
 * bf16, token by token against the bench's read: per-token medians 0.88-0.95 -> 0.97-0.99).
 * 1 KB gained less, 4 KB lost part of it on bf16; into L1 (prefetcht0) or non-temporal was
 * 5-10 % slower than none. */
#define ROW_PREFETCH 2048

/* Asks for bytes at p into L2. The tiles read a quad of weight rows as 4 interleaved streams
 * of a few KB, then jump to the next quad: the hardware prefetcher did not keep up, and asking
 * for the next quad's rows while a quad's tiles run made the bf16 tiles 8-20 % faster on weights
 * from memory (one thread) and a bf16 step of 4 / 8 / 16 rows 35 / 46 / 18 % faster (32 decodes
 * + a 32-token prefill: 11 %); f32 +1-2 %. Into L1 instead was 2 % slower. */
static inline void prefetch_l2(const void *p, size_t bytes) {
    for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)p + b, 0, 2);
}

/* Asks for the `lines` cache lines ROW_PREFETCH bytes after p into L2. */
static inline void prefetch_ahead(const void *p, int lines) {
    prefetch_l2((const char *)p + ROW_PREFETCH, 64 * (size_t)lines);
}

#if defined(__AVX512F__)
/* Single input row against weight rows r0..r0+3 (those below `out`): one weight row after the
 * other, so the weights stream strictly in address order, the lines ROW_PREFETCH ahead asked
 * for as each line is read; 4 partial sums along k hiding the FMA latency. (A 4-row
 * interleave measured 10-40 % slower.) */
static void row_f32(float *y, const float *x, int in, const float *W, int r0, int out) {
    for (int j = r0; j < r0 + 4 && j < out; j++) {
        const float *w = W + (size_t)j * in;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int k = 0;
        for (; k + 64 <= in; k += 64) {
            prefetch_ahead(w + k, 4);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(w + k), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(w + k + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 32), _mm512_loadu_ps(w + k + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 48), _mm512_loadu_ps(w + k + 48), a3);
        }
        for (; k < in; k += 16) {
            __mmask16 m = in - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (in - k)) - 1);
            prefetch_ahead(w + k, 1);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + k), _mm512_maskz_loadu_ps(m, w + k),
                                 a0);
        }
        y[j] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}

/* 4 x 4 tiles: four input rows against four weight rows, 16 sums in registers, each loaded
 * vector used 4 times. The main loop loads whole vectors and only the tail is masked (masked
 * loads every step measured ~1.5x slower on Zen 4). Named accumulators, not an array, so they
 * stay in registers. */
#define TILE_STEP(LOAD, FMA)                                                                       \
    do {                                                                                           \
        VT v0 = LOAD(w0 + k), v1 = LOAD(w1 + k), v2 = LOAD(w2 + k), v3 = LOAD(w3 + k), u;          \
        u = LOAD(x0 + k);                                                                          \
        a00 = FMA(a00, u, v0), a01 = FMA(a01, u, v1), a02 = FMA(a02, u, v2),                       \
        a03 = FMA(a03, u, v3);                                                                     \
        u = LOAD(x1 + k);                                                                          \
        a10 = FMA(a10, u, v0), a11 = FMA(a11, u, v1), a12 = FMA(a12, u, v2),                       \
        a13 = FMA(a13, u, v3);                                                                     \
        u = LOAD(x2 + k);                                                                          \
        a20 = FMA(a20, u, v0), a21 = FMA(a21, u, v1), a22 = FMA(a22, u, v2),                       \
        a23 = FMA(a23, u, v3);                                                                     \
        u = LOAD(x3 + k);                                                                          \
        a30 = FMA(a30, u, v0), a31 = FMA(a31, u, v1), a32 = FMA(a32, u, v2),                       \
        a33 = FMA(a33, u, v3);                                                                     \
    } while (0)

/* The tile's setup for inputs k0 .. k0 + len - 1 (weight rows past `out` repeat the last one;
 * their sums are dropped). */
#define TILE_BEGIN(T)                                                                              \
    const T *w0 = W + (size_t)(r0 < out ? r0 : out - 1) * in + k0,                                 \
            *w1 = W + (size_t)(r0 + 1 < out ? r0 + 1 : out - 1) * in + k0,                         \
            *w2 = W + (size_t)(r0 + 2 < out ? r0 + 2 : out - 1) * in + k0,                         \
            *w3 = W + (size_t)(r0 + 3 < out ? r0 + 3 : out - 1) * in + k0;                         \
    const T *x0 = x + k0, *x1 = x0 + ldx, *x2 = x1 + ldx, *x3 = x2 + ldx;                          \
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00,       \
           a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, \
           a32 = a00, a33 = a00;                                                                   \
    int k = 0

/* The sums of 16 vectors v[0..15] as one vector (lane l = the sum of v[l]): a tree of
 * unpacks and 128-bit lane shuffles, 45 instructions against 16 x 8 for one reduce each. With
 * 768 inputs (24 steps of the bf16 tile) the separate reduces were a fifth of the tile's
 * instructions: one thread, 4-64 input rows, 10-23 % faster on 768 inputs, 3 % on 2048 (bf16),
 * 3 % (f32). */
static inline __m512 sum16(__m512 v0, __m512 v1, __m512 v2, __m512 v3, __m512 v4, __m512 v5,
                           __m512 v6, __m512 v7, __m512 v8, __m512 v9, __m512 v10, __m512 v11,
                           __m512 v12, __m512 v13, __m512 v14, __m512 v15) {
#define PAIR_PS(a, b) _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
#define PAIR_PD(a, b)                                                                              \
    _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))),  \
                  _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))))
#define PAIR_LANES(a, b)                                                                           \
    _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xdd))
    /* each 128-bit lane of u_k: that lane's partial sums of v[4k .. 4k+3] */
    __m512 u0 = PAIR_PD(PAIR_PS(v0, v1), PAIR_PS(v2, v3));
    __m512 u1 = PAIR_PD(PAIR_PS(v4, v5), PAIR_PS(v6, v7));
    __m512 u2 = PAIR_PD(PAIR_PS(v8, v9), PAIR_PS(v10, v11));
    __m512 u3 = PAIR_PD(PAIR_PS(v12, v13), PAIR_PS(v14, v15));
    return PAIR_LANES(PAIR_LANES(u0, u1), PAIR_LANES(u2, u3));
#undef PAIR_PS
#undef PAIR_PD
#undef PAIR_LANES
}

/* Four sums into y, or added to it (acc: a later block of inputs). */
static inline void store4(float *y, __m128 v, int acc) {
    _mm_storeu_ps(y, acc ? _mm_add_ps(_mm_loadu_ps(y), v) : v);
}

/* The tile's 16 sums, reduced together (sum16) and stored four per input row (added to y when
 * acc). */
#define TILE_END()                                                                                 \
    do {                                                                                           \
        __m512 s =                                                                                 \
            sum16(a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33); \
        if (r0 + 4 <= out) {                                                                       \
            store4(y + r0, _mm512_extractf32x4_ps(s, 0), acc);                                     \
            store4(y + (size_t)ldy + r0, _mm512_extractf32x4_ps(s, 1), acc);                       \
            store4(y + 2 * (size_t)ldy + r0, _mm512_extractf32x4_ps(s, 2), acc);                   \
            store4(y + 3 * (size_t)ldy + r0, _mm512_extractf32x4_ps(s, 3), acc);                   \
        } else {                                                                                   \
            float t[16];                                                                           \
            _mm512_storeu_ps(t, s);                                                                \
            for (int i = 0; i < 4; i++)                                                            \
                for (int j = 0; j < 4 && r0 + j < out; j++) {                                      \
                    float *yij = y + (size_t)i * ldy + r0 + j;                                     \
                    *yij = (acc ? *yij : 0) + t[4 * i + j];                                        \
                }                                                                                  \
        }                                                                                          \
    } while (0)

static inline __m512 fma_f32(__m512 acc, __m512 a, __m512 b) {
    return _mm512_fmadd_ps(a, b, acc);
}

static void tile_f32(float *y, int ldy, const float *x, size_t ldx, int in, const float *W, int r0,
                     int out, int k0, int len, int acc) {
    typedef __m512 VT;
    TILE_BEGIN(float);
#define LOAD_F32(p) _mm512_loadu_ps(p)
    for (; k + 16 <= len; k += 16) TILE_STEP(LOAD_F32, fma_f32);
    if (k < len) {
        __mmask16 m = (__mmask16)((1u << (len - k)) - 1);
#define LOADM_F32(p) _mm512_maskz_loadu_ps(m, p)
        TILE_STEP(LOADM_F32, fma_f32);
    }
    TILE_END();
}
#endif

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
static inline __m512bh bf16_load(__mmask32 m, const uint16_t *p) {
    return (__m512bh)_mm512_maskz_loadu_epi16(m, p);
}

static void row_bf16(float *y, const uint16_t *x, int in, const uint16_t *W, int r0, int out) {
    for (int j = r0; j < r0 + 4 && j < out; j++) {
        const uint16_t *w = W + (size_t)j * in;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int k = 0;
        for (; k + 128 <= in; k += 128) {
            prefetch_ahead(w + k, 4);
            a0 = _mm512_dpbf16_ps(a0, bf16_load(~0u, x + k), bf16_load(~0u, w + k));
            a1 = _mm512_dpbf16_ps(a1, bf16_load(~0u, x + k + 32), bf16_load(~0u, w + k + 32));
            a2 = _mm512_dpbf16_ps(a2, bf16_load(~0u, x + k + 64), bf16_load(~0u, w + k + 64));
            a3 = _mm512_dpbf16_ps(a3, bf16_load(~0u, x + k + 96), bf16_load(~0u, w + k + 96));
        }
        for (; k < in; k += 32) {
            __mmask32 m = in - k >= 32 ? ~0u : (__mmask32)((1u << (in - k)) - 1);
            prefetch_ahead(w + k, 1);
            a0 = _mm512_dpbf16_ps(a0, bf16_load(m, x + k), bf16_load(m, w + k));
        }
        y[j] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}

static inline __m512 fma_bf16(__m512 acc, __m512bh a, __m512bh b) {
    return _mm512_dpbf16_ps(acc, a, b);
}

static void tile_bf16(float *y, int ldy, const uint16_t *x, size_t ldx, int in, const uint16_t *W,
                      int r0, int out, int k0, int len, int acc) {
    typedef __m512bh VT;
    TILE_BEGIN(uint16_t);
#define LOAD_BF16(p) bf16_load(~0u, p)
    for (; k + 32 <= len; k += 32) TILE_STEP(LOAD_BF16, fma_bf16);
    if (k < len) {
        __mmask32 m = (__mmask32)((1u << (len - k)) - 1);
#define LOADM_BF16(p) bf16_load(m, p)
        TILE_STEP(LOADM_BF16, fma_bf16);
    }
    TILE_END();
}
#endif

/* Inputs per block of a tile's pass: a tile's 4 input and 4 weight rows of 2048 bf16 values
 * (the down product) are 32 KB, all of L1, and ran at 72-80 GMAC/s a core against 91-108 at 768;
 * in blocks of at most KBLOCK (sums of later blocks added to y) they stay in L1. */
#define KBLOCK 1024

/* Rows r0..r1 of the product on the calling thread: input rows in blocks of XBLOCK, tiles of
 * 4 x 4 over the inputs in blocks of about KBLOCK (multiples of 32) with the next quad of weight
 * rows asked for meanwhile, single input rows streaming one weight row after the other. */
#define ROWS_BODY(KIND, XT, WT)                                                                    \
    int kblocks = (in + KBLOCK - 1) / KBLOCK, klen = ((in + kblocks - 1) / kblocks + 31) & ~31;    \
    for (int x0 = 0; x0 < n; x0 += XBLOCK) {                                                       \
        int x1 = x0 + XBLOCK < n ? x0 + XBLOCK : n, xt = x0 + (x1 - x0) / 4 * 4;                   \
        for (int r = r0; r < r1; r += 4) {                                                         \
            if (xt > x0 && r + 4 < r1)                                                             \
                prefetch_l2((WT) + (size_t)(r + 4) * in,                                           \
                            sizeof *(WT) * (size_t)in * (size_t)(r + 8 < r1 ? 4 : r1 - r - 4));    \
            for (int k0 = 0; k0 < in; k0 += klen)                                                  \
                for (int i = x0; i < xt; i += 4)                                                   \
                    tile_##KIND(y + (size_t)i * ldy, ldy, (XT) + (size_t)i * ldx, ldx, in, (WT),   \
                                r, r1, k0, k0 + klen < in ? klen : in - k0, k0 > 0);               \
            for (int i = xt; i < x1; i++)                                                          \
                row_##KIND(y + (size_t)i * ldy, (XT) + (size_t)i * ldx, in, (WT), r, r1);          \
        }                                                                                          \
    }

void lmf_matvec_f32_rows(float *y, int ldy, const float *x, const float *W, int n, int in, int r0,
                         int r1) {
    if (in <= 0) {
        for (int i = 0; i < n; i++)
            for (int r = r0; r < r1; r++) y[(size_t)i * ldy + r] = 0;
        return;
    }
#if defined(__AVX512F__)
    size_t ldx = (size_t)in;
    ROWS_BODY(f32, x, W)
#else
    for (int i = 0; i < n; i++)
        for (int o = r0; o < r1; o++) {
            float s = 0;
            for (int k = 0; k < in; k++) s += x[(size_t)i * in + k] * W[(size_t)o * in + k];
            y[(size_t)i * ldy + o] = s;
        }
#endif
}

size_t lmf_bf16_x_stride(int in) {
    size_t ld = (size_t)in;
    return ld % 1024 == 0 ? ld + 32 : ld;
}

void lmf_matvec_bf16_rows(float *y, int ldy, const uint16_t *xb, size_t ldx, const uint16_t *W,
                          int n, int in, int r0, int r1) {
    if (in <= 0) {
        for (int i = 0; i < n; i++)
            for (int r = r0; r < r1; r++) y[(size_t)i * ldy + r] = 0;
        return;
    }
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
    ROWS_BODY(bf16, xb, W)
#else
    for (int i = 0; i < n; i++)
        for (int o = r0; o < r1; o++) {
            float s = 0;
            for (int k = 0; k < in; k++)
                s += lmf_bf16_to_f32(xb[(size_t)i * ldx + k]) *
                     lmf_bf16_to_f32(W[(size_t)o * in + k]);
            y[(size_t)i * ldy + o] = s;
        }
#endif
}

size_t lmf_xt_stride(int n) {
    return ((size_t)n + 15) & ~(size_t)15;
}

void lmf_transpose_input(float *xt, const float *x, int n, int in) {
    size_t ld = lmf_xt_stride(n);
    for (int k = 0; k < in; k++) {
        float *d = xt + (size_t)k * ld;
        for (int i = 0; i < n; i++) d[i] = x[(size_t)i * in + k];
        for (size_t i = (size_t)n; i < ld; i++) d[i] = 0;
    }
}

#if defined(__AVX512F__)
/* JR weight rows (j0.., those past r1 repeat the last one and are dropped) against NV * 16
 * input rows (i0..) of xt: JR * NV sums in registers, each weight value broadcast once per k
 * and used NV times, each input vector used JR times. */
static inline __attribute__((always_inline)) void xt_tile(float *y, int ldy, const float *xt,
                                                          size_t ld, int n, int i0, const float *W,
                                                          int in, int j0, int r1, int NV) {
    enum { JR = 12 };
    const float *w[JR];
    __m512 acc[JR][2];
#pragma GCC unroll 12
    for (int j = 0; j < JR; j++) {
        w[j] = W + (size_t)(j0 + j < r1 ? j0 + j : r1 - 1) * in;
        acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    }
    const float *a = xt + i0;
    for (int k = 0; k < in; k++, a += ld) {
        __m512 a0 = _mm512_loadu_ps(a), a1 = NV == 2 ? _mm512_loadu_ps(a + 16) : a0;
#pragma GCC unroll 12
        for (int j = 0; j < JR; j++) {
            __m512 b = _mm512_set1_ps(w[j][k]);
            acc[j][0] = _mm512_fmadd_ps(a0, b, acc[j][0]);
            if (NV == 2) acc[j][1] = _mm512_fmadd_ps(a1, b, acc[j][1]);
        }
    }
    for (int j = 0; j < JR && j0 + j < r1; j++)
        for (int v = 0; v < NV; v++) {
            float t[16];
            _mm512_storeu_ps(t, acc[j][v]);
            for (int u = 0; u < 16 && i0 + 16 * v + u < n; u++)
                y[(size_t)(i0 + 16 * v + u) * ldy + j0 + j] = t[u];
        }
}
#endif

void lmf_matmul_f32_xt(float *y, int ldy, const float *xt, int n, const float *W, int in, int r0,
                       int r1) {
    size_t ld = lmf_xt_stride(n);
#if defined(__AVX512F__)
    if (in > 0) {
        for (int j0 = r0; j0 < r1; j0 += 12) {
            int i0 = 0;
            for (; i0 + 32 <= (int)ld; i0 += 32) xt_tile(y, ldy, xt, ld, n, i0, W, in, j0, r1, 2);
            if (i0 < (int)ld) xt_tile(y, ldy, xt, ld, n, i0, W, in, j0, r1, 1);
        }
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        for (int o = r0; o < r1; o++) {
            float s = 0;
            for (int k = 0; k < in; k++) s += xt[(size_t)k * ld + i] * W[(size_t)o * in + k];
            y[(size_t)i * ldy + o] = s;
        }
}

void lmf_swiglu_row(float *h, const float *gate, const float *up, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) h[i] = gate[i] / (1.0f + vexpf(-gate[i])) * up[i];
}

/* lmf_f32_to_bf16 in a form the compiler vectorises (no call, no branch): round to nearest
 * even, NaN made quiet; the same bits (tested). */
void lmf_round_bf16(uint16_t *xb, const float *x, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, q = (u >> 16) | 0x40u;
        xb[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

/* The threaded products: weight rows in blocks of WBLOCK, one block per OpenMP iteration
 * (static schedule, so each thread streams one contiguous range). */
#if defined(__AVX512F__)
static int n_wblocks(int out) {
    return (out + WBLOCK - 1) / WBLOCK;
}
#endif

void lmf_matvec_f32(float *y, const float *x, const float *W, int n, int out, int in) {
    if (n <= 0 || out <= 0) return;
#if defined(__AVX512F__)
    if (in <= 0) {
        memset(y, 0, sizeof(float) * (size_t)n * out);
        return;
    }
    int nblk = n_wblocks(out);
#pragma omp parallel for schedule(static) if ((double)n * out * in > PAR_MIN_WORK)
    for (int b = 0; b < nblk; b++)
        lmf_matvec_f32_rows(y, out, x, W, n, in, b * WBLOCK,
                            (b + 1) * WBLOCK < out ? (b + 1) * WBLOCK : out);
#else
    lmf_matvec_f32_ref(y, x, W, n, out, in);
#endif
}

void lmf_matvec_bf16(float *y, const float *x, const uint16_t *W, int n, int out, int in,
                     uint16_t *xb) {
    if (n <= 0 || out <= 0) return;
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
    if (in <= 0) {
        memset(y, 0, sizeof(float) * (size_t)n * out);
        return;
    }
    /* x rounded in slices of 16K values by the vectorised lmf_round_bf16, not one call to
     * lmf_f32_to_bf16 per value. */
    size_t nx = (size_t)n * in, slice = 1 << 14;
    long n_slices = (long)((nx + slice - 1) / slice);
#pragma omp parallel for schedule(static) if (nx > PAR_MIN_WORK)
    for (long j = 0; j < n_slices; j++)
        lmf_round_bf16(xb + j * slice, x + j * slice,
                       (size_t)j * slice + slice < nx ? slice : nx - (size_t)j * slice);
    int nblk = n_wblocks(out);
#pragma omp parallel for schedule(static) if ((double)n * out * in > PAR_MIN_WORK)
    for (int b = 0; b < nblk; b++)
        lmf_matvec_bf16_rows(y, out, xb, (size_t)in, W, n, in, b * WBLOCK,
                             (b + 1) * WBLOCK < out ? (b + 1) * WBLOCK : out);
#else
    (void)xb;
    lmf_matvec_bf16_ref(y, x, W, n, out, in);
#endif
}

/* ---- KV cache element types ---- */

void lmf_kv_store_rows(lmf_kv_dtype t, void *dst, float *scales, const float *src, int rows,
                       int D) {
    size_t n = (size_t)rows * D;
    if (t == LMF_KV_F32) {
        memcpy(dst, src, sizeof(float) * n);
        return;
    }
    if (t == LMF_KV_BF16) {
        lmf_round_bf16(dst, src, n);
        return;
    }
    int8_t *q = dst;
    for (int r = 0; r < rows; r++) {
        const float *x = src + (size_t)r * D;
        float amax = 0;
        for (int d = 0; d < D; d++) amax = fmaxf(amax, fabsf(x[d]));
        /* An all-zero row (or one with an infinity) stores zeros: no division by zero, and no
         * NaN or infinity converted to an integer. */
        float inv = amax > 0 && amax <= 3.4e38f ? 127.0f / amax : 0.0f;
        scales[r] = amax / 127.0f;
        int8_t *qr = q + (size_t)r * D;
        for (int d = 0; d < D; d++) {
            float y = nearbyintf(x[d] * inv);
            qr[d] = (int8_t)(y > 127.0f ? 127 : y < -127.0f ? -127 : y == y ? (int)y : 0);
        }
    }
}

void lmf_kv_load_rows(lmf_kv_dtype t, float *dst, const void *src, const float *scales, int rows,
                      int D) {
    size_t n = (size_t)rows * D;
    if (t == LMF_KV_F32) {
        memcpy(dst, src, sizeof(float) * n);
    } else if (t == LMF_KV_BF16) {
        const uint16_t *b = src;
        for (size_t i = 0; i < n; i++) dst[i] = lmf_bf16_to_f32(b[i]);
    } else {
        const int8_t *q = src;
        for (size_t i = 0; i < n; i++) dst[i] = (float)q[i] * scales[i / D];
    }
}

/* ---- paged attention ---- */

enum { CHUNK = 32 }; /* cached tokens scored together before one softmax rescale */

/* The kernel is written once for the three element types; each public entry instantiates it
 * with a constant type, so the float32 instance compiles to the plain float32 kernel. */
#define KV_INLINE static inline __attribute__((always_inline))

/* Element d of a cached row of type T, as float (int8: unscaled). */
KV_INLINE float kv_elem(const void *row, int d, lmf_kv_dtype T) {
    if (T == LMF_KV_F32) return ((const float *)row)[d];
    if (T == LMF_KV_BF16) return lmf_bf16_to_f32(((const uint16_t *)row)[d]);
    return (float)((const int8_t *)row)[d];
}

#if defined(__AVX512F__)
/* Elements d .. d+15 of a cached row of type T, widened to float (int8: unscaled). */
KV_INLINE __m512 kv_load16(const void *row, int d, lmf_kv_dtype T) {
    if (T == LMF_KV_F32) return _mm512_loadu_ps((const float *)row + d);
    if (T == LMF_KV_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + d))),
            16));
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)row + d))));
}
#endif

/* q . k over D values. With AVX-512 and D a multiple of 16: two vector sums and one tree
 * reduction (the compiler's reduction of the plain loop added the 16 lanes one by one). */
KV_INLINE float dot_row(const float *q, const void *k, int D, lmf_kv_dtype T) {
#if defined(__AVX512F__)
    if (D % 16 == 0) {
        __m512 a = _mm512_setzero_ps(), b = a;
        int d = 0;
        for (; d + 32 <= D; d += 32) {
            a = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), kv_load16(k, d, T), a);
            b = _mm512_fmadd_ps(_mm512_loadu_ps(q + d + 16), kv_load16(k, d + 16, T), b);
        }
        if (d < D) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), kv_load16(k, d, T), a);
        return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
    }
#endif
    float dot = 0;
    if (T == LMF_KV_F32) {
        const float *kf = k;
#pragma omp simd reduction(+ : dot)
        for (int d = 0; d < D; d++) dot += q[d] * kf[d];
    } else {
        for (int d = 0; d < D; d++) dot += q[d] * kv_elem(k, d, T);
    }
    return dot;
}

/* a[0..D) += sum over t < nt of w[t] * row t, the rows ld bytes apart. With AVX-512 and D a
 * multiple of 16, up to four 16-wide slices of a stay in registers across the rows (four
 * independent FMA chains) instead of a load and a store per row. */
KV_INLINE void axpy_rows(float *a, const float *w, const uint8_t *rows, size_t ld, int nt, int D,
                         lmf_kv_dtype T) {
#if defined(__AVX512F__)
    if (D % 16 == 0) {
        for (int d = 0; d < D; d += 64) {
            int nv = (D - d) / 16 < 4 ? (D - d) / 16 : 4;
            __m512 x0 = _mm512_loadu_ps(a + d), x1 = nv > 1 ? _mm512_loadu_ps(a + d + 16) : x0,
                   x2 = nv > 2 ? _mm512_loadu_ps(a + d + 32) : x0,
                   x3 = nv > 3 ? _mm512_loadu_ps(a + d + 48) : x0;
            for (int t = 0; t < nt; t++) {
                const uint8_t *r = rows + (size_t)t * ld;
                __m512 wt = _mm512_set1_ps(w[t]);
                x0 = _mm512_fmadd_ps(wt, kv_load16(r, d, T), x0);
                if (nv > 1) x1 = _mm512_fmadd_ps(wt, kv_load16(r, d + 16, T), x1);
                if (nv > 2) x2 = _mm512_fmadd_ps(wt, kv_load16(r, d + 32, T), x2);
                if (nv > 3) x3 = _mm512_fmadd_ps(wt, kv_load16(r, d + 48, T), x3);
            }
            _mm512_storeu_ps(a + d, x0);
            if (nv > 1) _mm512_storeu_ps(a + d + 16, x1);
            if (nv > 2) _mm512_storeu_ps(a + d + 32, x2);
            if (nv > 3) _mm512_storeu_ps(a + d + 48, x3);
        }
        return;
    }
#endif
    for (int t = 0; t < nt; t++) {
        const uint8_t *vr = rows + (size_t)t * ld;
        if (T == LMF_KV_F32) {
            const float *vf = (const float *)vr;
#pragma omp simd
            for (int d = 0; d < D; d++) a[d] += w[t] * vf[d];
        } else {
            for (int d = 0; d < D; d++) a[d] += w[t] * kv_elem(vr, d, T);
        }
    }
}

/* Asks for the cached key and value rows of KV head kvh at positions from .. to - 1 (and their
 * int8 scales), into L2. In decode the cache has been evicted by the weights streamed since the
 * last token, and one head's rows are short (D values) at a stride of the whole KV row, in
 * blocks far apart: read in order, each would wait a memory latency; asked for many at once,
 * they arrive together. */
KV_INLINE void attn_prefetch(const uint8_t *k, const uint8_t *v, const lmf_paged_seq *sq, int from,
                             int to, int kvh, const lmf_paged_shape *s, lmf_kv_dtype T) {
    int D = s->D, KVH = s->KVH, bs = s->block_size;
    size_t es = lmf_kv_dtype_size(T), bytes = es * (size_t)D;
    /* block and slot stepped along, not divided out per position (two divisions a cached
     * token were a good part of the item's time at short contexts) */
    int bi = from / bs, slot = from % bs;
    for (int t = from; t < to; t++, slot++) {
        if (slot == bs) slot = 0, bi++;
        size_t blk = (size_t)sq->table[bi] * s->block_bytes, row = (size_t)slot * KVH + (size_t)kvh,
               off = blk + row * bytes;
        const char *kr = (const char *)(k + off), *vr = (const char *)(v + off);
        for (size_t b = 0; b < bytes; b += 64) {
            __builtin_prefetch(kr + b, 0, 2);
            __builtin_prefetch(vr + b, 0, 2);
        }
        if (T == LMF_KV_INT8) {
            size_t so = blk + s->scale_off + row * sizeof(float);
            __builtin_prefetch(k + so, 0, 2);
            __builtin_prefetch(v + so, 0, 2);
        }
    }
}

/* Key and value bytes of one head asked for ahead of their use. Measured on one thread, 12
 * layers x 12 heads of 64 at 2048 positions (151 MB of f32 cache): all rows at once (as before
 * the window) 15-17 ms f32, 12-14 ms bf16; a window of 1 MB 24 / 18; 64 KB 10-14 / 7-11; 8 KB
 * 8.0-8.8 / 4.8-5.5; 4 KB 9.2-9.5 / 5.1-5.4. */
enum { PF_BYTES = 8 << 10 };

/* Positions of one head's rows in the first PF_BYTES window an item asks for. */
static int attn_window(const lmf_paged_shape *s, lmf_kv_dtype T) {
    return (int)(PF_BYTES / (2 * (lmf_kv_dtype_size(T) * s->D + (T == LMF_KV_INT8 ? 4 : 0))));
}

KV_INLINE void attn_item(float *out, const float *q, const uint8_t *k, const uint8_t *v,
                         const lmf_paged_seq *sq, int upto, int kvh, const lmf_paged_shape *s,
                         float *sc, float *acc, float *mx, float *sum, float *wv, lmf_kv_dtype T) {
    int D = s->D, KVH = s->KVH, G = s->H / KVH, bs = s->block_size;
    size_t row_bytes = lmf_kv_dtype_size(T) * (size_t)KVH * D;
    /* The rows are asked for PF_BYTES ahead of their use, not all at once: a long context's
     * rows (1 MB of f32 keys and values per head at 2048 tokens) evicted each other from L2
     * before they were read, and thousands of prefetches at once stall on the miss buffers. */
    int ahead = attn_window(s, T);
    attn_prefetch(k, v, sq, 0, ahead < upto + 1 ? ahead : upto + 1, kvh, s, T);
    for (int g = 0; g < G; g++) mx[g] = -INFINITY, sum[g] = 0;
    memset(acc, 0, sizeof(float) * (size_t)G * D);
    const float *qg = q + (size_t)kvh * G * D;
    for (int t0 = 0; t0 <= upto;) {
        int blk_end = (t0 / bs + 1) * bs, t1 = t0 + CHUNK;
        if (t1 > blk_end) t1 = blk_end;
        if (t1 > upto + 1) t1 = upto + 1;
        size_t blk = (size_t)sq->table[t0 / bs] * s->block_bytes,
               row0 = (size_t)(t0 % bs) * KVH + (size_t)kvh;
        const uint8_t *kb = k + blk + row0 * lmf_kv_dtype_size(T) * D,
                      *vb = v + blk + row0 * lmf_kv_dtype_size(T) * D;
        /* INT8: the chunk's scales, KVH floats apart (one per slot). */
        const float *ks = (const float *)(k + blk + s->scale_off) + row0,
                    *vs = (const float *)(v + blk + s->scale_off) + row0;
        int nt = t1 - t0;
        if (t0 + ahead <= upto)
            attn_prefetch(k, v, sq, t0 + ahead, t1 + ahead < upto + 1 ? t1 + ahead : upto + 1, kvh,
                          s, T);
        for (int t = 0; t < nt; t++) {
            const uint8_t *kr = kb + (size_t)t * row_bytes;
            float scale = T == LMF_KV_INT8 ? s->scale * ks[(size_t)t * KVH] : s->scale;
            for (int g = 0; g < G; g++)
                sc[g * CHUNK + t] = dot_row(qg + (size_t)g * D, kr, D, T) * scale;
        }
        for (int g = 0; g < G; g++) {
            float *p = sc + g * CHUNK, m = mx[g];
            for (int t = 0; t < nt; t++) m = p[t] > m ? p[t] : m;
            float corr = vexpf(mx[g] - m), l = sum[g] * corr;
#pragma omp simd reduction(+ : l)
            for (int t = 0; t < nt; t++) l += (p[t] = vexpf(p[t] - m));
            if (corr != 1.0f) {
                float *a = acc + (size_t)g * D;
#pragma omp simd
                for (int d = 0; d < D; d++) a[d] *= corr;
            }
            mx[g] = m, sum[g] = l;
        }
        for (int g = 0; g < G; g++) {
            const float *w = sc + g * CHUNK;
            if (T == LMF_KV_INT8) { /* the value rows' scales folded into the weights */
                for (int t = 0; t < nt; t++) wv[t] = w[t] * vs[(size_t)t * KVH];
                w = wv;
            }
            axpy_rows(acc + (size_t)g * D, w, vb, row_bytes, nt, D, T);
        }
        t0 = t1;
    }
    for (int g = 0; g < G; g++) {
        float inv = 1.0f / sum[g], *o = out + (size_t)(kvh * G + g) * D;
        const float *a = acc + (size_t)g * D;
#pragma omp simd
        for (int d = 0; d < D; d++) o[d] = a[d] * inv;
    }
}

#define ATTN_ITEM_ARGS                                                                             \
    float *out, const float *q, const uint8_t *k, const uint8_t *v, const lmf_paged_seq *sq,       \
        int upto, int kvh, const lmf_paged_shape *s, float *sc, float *acc, float *mx, float *sum, \
        float *wv
#define ATTN_ITEM_CALL(T) attn_item(out, q, k, v, sq, upto, kvh, s, sc, acc, mx, sum, wv, T)
static void attn_item_f32(ATTN_ITEM_ARGS) {
    ATTN_ITEM_CALL(LMF_KV_F32);
}
static void attn_item_bf16(ATTN_ITEM_ARGS) {
    ATTN_ITEM_CALL(LMF_KV_BF16);
}
static void attn_item_int8(ATTN_ITEM_ARGS) {
    ATTN_ITEM_CALL(LMF_KV_INT8);
}

void lmf_attn_paged_prefetch(const void *k, const void *v, const lmf_paged_seq *sq, int kvh,
                             const lmf_paged_shape *s) {
    int to = attn_window(s, s->dtype);
    attn_prefetch(k, v, sq, 0, to < sq->start ? to : sq->start, kvh, s, s->dtype);
}

size_t lmf_attn_paged_scratch(const lmf_paged_shape *s) {
    int G = s->H / s->KVH;
    return (size_t)G * CHUNK + (size_t)G * s->D + 2 * (size_t)G + CHUNK;
}

void lmf_attn_paged_item(float *out, const float *q, const void *k, const void *v,
                         const lmf_paged_seq *sq, int row, int kvh, const lmf_paged_shape *s,
                         float *scratch) {
    int G = s->H / s->KVH, HD = s->H * s->D, upto = sq->start + (row - sq->q_row);
    float *sc = scratch, *acc = sc + (size_t)G * CHUNK, *mx = acc + (size_t)G * s->D, *sum = mx + G,
          *wv = sum + G;
    void (*item)(ATTN_ITEM_ARGS) = s->dtype == LMF_KV_BF16   ? attn_item_bf16
                                   : s->dtype == LMF_KV_INT8 ? attn_item_int8
                                                             : attn_item_f32;
    item(out + (size_t)row * HD, q + (size_t)row * HD, k, v, sq, upto, kvh, s, sc, acc, mx, sum,
         wv);
}

void lmf_attn_paged_fast(float *out, const float *q, const void *k, const void *v,
                         const lmf_paged_seq *seqs, int n_seqs, const lmf_paged_shape *s) {
    int H = s->H, KVH = s->KVH, D = s->D, total = 0;
    double work = 0;
    for (int i = 0; i < n_seqs; i++) {
        total += seqs[i].n_new;
        work += (double)seqs[i].n_new * (seqs[i].start + seqs[i].n_new) * H * D;
    }
    int items = total * KVH;
#pragma omp parallel if (work > 16 * PAR_MIN_WORK && items > 1)
    {
        float *scratch = malloc(sizeof(float) * lmf_attn_paged_scratch(s));
        int si = 0;
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < items; it++) {
            int row = it / KVH, kvh = it % KVH;
            if (!scratch) continue; /* out of memory: leaves the rows untouched */
            while (si > 0 && row < seqs[si].q_row) si--;
            while (row >= seqs[si].q_row + seqs[si].n_new) si++;
            lmf_attn_paged_item(out, q, k, v, &seqs[si], row, kvh, s, scratch);
        }
        free(scratch);
    }
}

/* Single-thread streaming read of bytes at p (whole 64-byte vectors; a tail under 4 bytes is
 * left out): four independent sums so the loads are never waiting on an add, and the lines
 * ROW_PREFETCH ahead asked for as the single-row kernels do: that read took 3-6 % less time
 * than the same loop without (per-token medians, llama-110m's weights, 2 threads), and a
 * roofline must be the fastest read we know, or a decode could pass it. */
static double stream_part(const char *p, size_t bytes) {
    size_t n = bytes / sizeof(float);
    const float *f = (const float *)p;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch_ahead(f + i, 4);
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(f + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(f + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(f + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(f + i + 48));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; i < n; i++) s += f[i];
#else
    float s = 0;
    for (size_t i = 0; i < n; i++) s += f[i];
#endif
    return s;
}

double lmf_stream_read_regions(const void *const *p, const size_t *bytes, int n) {
    double total = 0;
#pragma omp parallel reduction(+ : total)
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        for (int r = 0; r < n; r++) {
            size_t per = (bytes[r] / nt + 63) & ~(size_t)63, b0 = per * id,
                   b1 = b0 + per < bytes[r] ? b0 + per : bytes[r];
            if (b0 < b1) total += stream_part((const char *)p[r] + b0, b1 - b0);
        }
    }
    return total;
}
