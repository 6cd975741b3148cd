/* Quantized weight formats (lmforge/quant.h): block quantizers, dequantizers, NF4's double
 * quantization of scales and the plain-C reference products that every fast kernel is tested
 * against. Quantizers round scales up to the next f16 so that nothing clips and the per-element
 * error bound is exactly the format's half-step. */
#include "lmforge/quant.h"

#include "lmforge/core.h"
#include "tensor/quant_blocks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* QLoRA paper, appendix E (bitsandbytes' NF4 table). */
const float lmf_nf4_code[16] = {-1.0f,
                                -0.6961928009986877f,
                                -0.5250730514526367f,
                                -0.39491748809814453f,
                                -0.28444138169288635f,
                                -0.18477343022823334f,
                                -0.09105003625154495f,
                                0.0f,
                                0.07958029955625534f,
                                0.16093020141124725f,
                                0.24611230194568634f,
                                0.33791524171829224f,
                                0.44070982933044434f,
                                0.5626170039176941f,
                                0.7229568362236023f,
                                1.0f};

/* bitsandbytes' fp4 (sign bit, then the e2m1-like code its dequantize tree spells out). */
const float lmf_fp4_code[16] = {
    0.0f,  0.005208333333f,  0.66666667f,  1.0f,  0.33333333f,  0.5f,  0.16666667f,  0.25f,
    -0.0f, -0.005208333333f, -0.66666667f, -1.0f, -0.33333333f, -0.5f, -0.16666667f, -0.25f};

static const struct {
    const char *name;
    int block;
    size_t bytes;
} info[LMF_QTYPE_COUNT] = {
    [LMF_Q8_0] = {"q8_0", 32, sizeof(blk_q8_0)}, [LMF_Q4_0] = {"q4_0", 32, sizeof(blk_q4_0)},
    [LMF_Q4_1] = {"q4_1", 32, sizeof(blk_q4_1)}, [LMF_NF4] = {"nf4", 64, sizeof(blk_nf4)},
    [LMF_FP4] = {"fp4", 64, sizeof(blk_nf4)},    [LMF_Q4_K] = {"q4_k", 256, sizeof(blk_q4_k)},
};

const char *lmf_qtype_name(lmf_qtype t) {
    return (unsigned)t < LMF_QTYPE_COUNT ? info[t].name : "?";
}

int lmf_qtype_parse(const char *name, lmf_qtype *out) {
    for (int t = 0; t < LMF_QTYPE_COUNT; t++)
        if (!strcasecmp(name, info[t].name)) {
            *out = (lmf_qtype)t;
            return 0;
        }
    return lmf_errorf(LMF_EUNSUPPORTED,
                      "quantization type \"%s\": expected q8_0, q4_0, q4_1, nf4, fp4 or q4_k",
                      name);
}

int lmf_qtype_from_bits(int bits, const char *type, lmf_qtype *out) {
    const char *t = type ? type : "nf4";
    if (bits == 8)
        *out = LMF_Q8_0;
    else if (bits != 4)
        return lmf_errorf(LMF_EINVAL, "quantization_bit: %d, expected 4 or 8", bits);
    else if (!strcmp(t, "nf4"))
        *out = LMF_NF4;
    else if (!strcmp(t, "fp4"))
        *out = LMF_FP4;
    else if (!strcmp(t, "int"))
        *out = LMF_Q4_1;
    else
        return lmf_errorf(LMF_EINVAL, "quantization_type: \"%s\", expected nf4, fp4 or int", t);
    return 0;
}

int lmf_qtype_block(lmf_qtype t) {
    return info[t].block;
}

size_t lmf_qtype_block_bytes(lmf_qtype t) {
    return info[t].bytes;
}

size_t lmf_quant_row_bytes(lmf_qtype t, int64_t n) {
    if (n <= 0 || n % info[t].block) return 0;
    return (size_t)(n / info[t].block) * info[t].bytes;
}

int lmf_quant_check_shape(lmf_qtype t, int64_t rows, int64_t cols, const char *what) {
    if (rows < 0 || cols <= 0 || cols % info[t].block)
        return lmf_errorf(LMF_ESHAPE,
                          "%s: shape [%lld, %lld] cannot be quantized as %s: the row length must "
                          "be a positive multiple of %d",
                          what, (long long)rows, (long long)cols, info[t].name, info[t].block);
    return 0;
}

/* ---- f16 rounding in a chosen direction ---- */

/* Smallest f16 >= v (v >= 0, finite); 0x7c00 (inf) when v exceeds the f16 range. */
static uint16_t f16_up(float v) {
    if (!(v > 0)) return 0; /* also -0.0, whose sign bit would read as a huge half */
    uint16_t h = lmf_f32_to_f16(v);
    if (h >= 0x7c00) return 0x7c00;
    if (lmf_f16_to_f32(h) < v) h++;
    return h;
}

/* Largest f16 <= v (finite v). */
static uint16_t f16_down(float v) {
    if (v < 0) return (uint16_t)(0x8000 | f16_up(-v));
    if (v == 0) return 0; /* -0.0 too */
    uint16_t h = lmf_f32_to_f16(v);
    if (h >= 0x7c00) return 0x7bff;
    if (lmf_f16_to_f32(h) > v) h--;
    return h;
}

static int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- per-format block quantizers; each returns 0 or 1 when the scale overflows f16 ---- */

static int quant_q8_0(blk_q8_0 *b, const float *x) {
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
    uint16_t dh = f16_up(amax / 127.0f);
    if (dh >= 0x7c00) return 1;
    float d = lmf_f16_to_f32(dh);
    b->d = dh;
    for (int i = 0; i < 32; i++)
        b->qs[i] = (int8_t)(d ? clampi((int)roundf(x[i] / d), -127, 127) : 0);
    return 0;
}

static int quant_q4_0(blk_q4_0 *b, const float *x) {
    float amax = 0, mx = 0;
    for (int i = 0; i < 32; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), mx = x[i];
    uint16_t dh = f16_up(amax / 8.0f);
    if (dh >= 0x7c00) return 1;
    if (mx > 0) dh |= 0x8000; /* the signed extreme maps to -8, GGML's convention */
    float d = lmf_f16_to_f32(dh);
    b->d = dh;
    uint8_t q[32];
    for (int i = 0; i < 32; i++) q[i] = (uint8_t)(d ? clampi((int)roundf(x[i] / d) + 8, 0, 15) : 8);
    for (int j = 0; j < 16; j++) b->qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
    return 0;
}

static int quant_q4_1(blk_q4_1 *b, const float *x) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < 32; i++) mn = fminf(mn, x[i]), mx = fmaxf(mx, x[i]);
    uint16_t mh = f16_down(mn);
    float m = lmf_f16_to_f32(mh);
    if (!isfinite(m) || fabsf(mn) > 65504.0f) return 1;
    uint16_t dh = f16_up((mx - m) / 15.0f);
    if (dh >= 0x7c00) return 1;
    float d = lmf_f16_to_f32(dh);
    b->d = dh, b->m = mh;
    uint8_t q[32];
    for (int i = 0; i < 32; i++)
        q[i] = (uint8_t)(d ? clampi((int)roundf((x[i] - m) / d), 0, 15) : 0);
    for (int j = 0; j < 16; j++) b->qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
    return 0;
}

/* Nearest code value to v: the sorted code values and their 4-bit indices. */
typedef struct code_table {
    int n;
    float v[16];
    uint8_t idx[16];
} code_table;

static const code_table nf4_sorted = {
    16,
    {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
     -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
     0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
     0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}};

static const code_table fp4_sorted = {15,
                                      {-1.0f, -0.66666667f, -0.5f, -0.33333333f, -0.25f,
                                       -0.16666667f, -0.005208333333f, 0.0f, 0.005208333333f,
                                       0.16666667f, 0.25f, 0.33333333f, 0.5f, 0.66666667f, 1.0f},
                                      {11, 10, 13, 12, 15, 14, 9, 0, 1, 6, 7, 4, 5, 2, 3}};

static uint8_t nearest_code(const code_table *c, float v) {
    int lo = 0, hi = c->n - 1; /* the answer lies in [lo, hi] */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < c->v[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - c->v[lo] <= c->v[hi] - v ? c->idx[lo] : c->idx[hi];
}

static int quant_4bit_code(blk_nf4 *b, const float *x, const code_table *c) {
    float amax = 0;
    for (int i = 0; i < 64; i++) amax = fmaxf(amax, fabsf(x[i]));
    b->absmax = amax;
    uint8_t q[64];
    for (int i = 0; i < 64; i++) q[i] = nearest_code(c, amax ? x[i] / amax : 0.0f);
    for (int j = 0; j < 32; j++) b->qs[j] = (uint8_t)((q[2 * j] << 4) | q[2 * j + 1]);
    return 0;
}

static int quant_q4_k(blk_q4_k *b, const float *x) {
    float mn[8], mx[8], maxneg = 0;
    for (int s = 0; s < 8; s++) {
        mn[s] = 0, mx[s] = 0; /* GGML keeps min <= 0 (stored as a non-negative offset) */
        for (int i = 0; i < 32; i++)
            mn[s] = fminf(mn[s], x[32 * s + i]), mx[s] = fmaxf(mx[s], x[32 * s + i]);
        maxneg = fmaxf(maxneg, -mn[s]);
    }
    uint16_t dminh = f16_up(maxneg / 63.0f);
    if (dminh >= 0x7c00) return 1;
    float dmin = lmf_f16_to_f32(dminh), need[8], m1[8], maxneed = 0;
    uint8_t m6[8], sc[8];
    for (int s = 0; s < 8; s++) {
        m6[s] = (uint8_t)(dmin ? clampi((int)ceilf(-mn[s] / dmin), 0, 63) : 0);
        m1[s] = dmin * m6[s];
        need[s] = (mx[s] + m1[s]) / 15.0f;
        maxneed = fmaxf(maxneed, need[s]);
    }
    uint16_t dh = f16_up(maxneed / 63.0f);
    if (dh >= 0x7c00) return 1;
    float d = lmf_f16_to_f32(dh);
    b->d = dh, b->dmin = dminh;
    memset(b->scales, 0, sizeof b->scales);
    for (int s = 0; s < 8; s++) {
        sc[s] = (uint8_t)(d ? clampi((int)ceilf(need[s] / d), 0, 63) : 0);
        if (s < 4) {
            b->scales[s] |= sc[s];
            b->scales[s + 4] |= m6[s];
        } else {
            b->scales[s + 4] = (uint8_t)((sc[s] & 0xF) | ((m6[s] & 0xF) << 4));
            b->scales[s - 4] |= (uint8_t)((sc[s] >> 4) << 6);
            b->scales[s] |= (uint8_t)((m6[s] >> 4) << 6);
        }
    }
    uint8_t q[256];
    for (int s = 0; s < 8; s++) {
        float d1 = d * sc[s], mm = dmin * m6[s];
        for (int i = 0; i < 32; i++)
            q[32 * s + i] =
                (uint8_t)(d1 ? clampi((int)roundf((x[32 * s + i] + mm) / d1), 0, 15) : 0);
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    return 0;
}

static int quant_block(lmf_qtype t, void *dst, const float *x) {
    switch (t) {
    case LMF_Q8_0:
        return quant_q8_0(dst, x);
    case LMF_Q4_0:
        return quant_q4_0(dst, x);
    case LMF_Q4_1:
        return quant_q4_1(dst, x);
    case LMF_NF4:
        return quant_4bit_code(dst, x, &nf4_sorted);
    case LMF_FP4:
        return quant_4bit_code(dst, x, &fp4_sorted);
    default:
        return quant_q4_k(dst, x);
    }
}

int lmf_quantize(lmf_qtype t, void *dst, const float *src, int64_t rows, int64_t cols,
                 const char *what) {
    int rc = lmf_quant_check_shape(t, rows, cols, what);
    if (rc) return rc;
    size_t rb = lmf_quant_row_bytes(t, cols), bb = info[t].bytes;
    int64_t nb = cols / info[t].block, bad_row = -1;
    int bad_kind = 0; /* 1: non-finite value, 2: scale overflow */
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
    for (int64_t r = 0; r < rows; r++) {
        const float *x = src + r * cols;
        uint8_t *out = (uint8_t *)dst + (size_t)r * rb;
        int kind = 0;
        for (int64_t i = 0; i < cols && !kind; i++)
            if (!isfinite(x[i])) kind = 1;
        for (int64_t b = 0; b < nb && !kind; b++)
            if (quant_block(t, out + b * bb, x + b * info[t].block)) kind = 2;
        if (kind) {
#pragma omp critical(lmf_quant_err)
            if (bad_row < 0 || r < bad_row) bad_row = r, bad_kind = kind;
        }
    }
    if (bad_row >= 0)
        return lmf_errorf(LMF_ERANGE,
                          bad_kind == 1
                              ? "%s: row %lld holds a non-finite value; cannot quantize as %s"
                              : "%s: row %lld: a block's scale exceeds the f16 range "
                                "(|value| > ~8e6); cannot quantize as %s",
                          what, (long long)bad_row, info[t].name);
    return 0;
}

int lmf_quantize_from(lmf_qtype t, void *dst, const void *src, lmf_dtype dt, int64_t rows,
                      int64_t cols, const char *what) {
    if (dt == LMF_F32) return lmf_quantize(t, dst, src, rows, cols, what);
    int rc = lmf_quant_check_shape(t, rows, cols, what);
    if (rc) return rc;
    float *tmp = malloc(sizeof(float) * (size_t)cols);
    if (!tmp) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", what);
    size_t es = lmf_dtype_size(dt), rb = lmf_quant_row_bytes(t, cols);
    for (int64_t r = 0; r < rows && !rc; r++) {
        lmf_convert_to_f32(tmp, (const uint8_t *)src + (size_t)r * cols * es, dt, (size_t)cols);
        rc = lmf_quantize(t, (uint8_t *)dst + (size_t)r * rb, tmp, 1, cols, what);
        if (rc) rc = lmf_error_prefix(rc, "row %lld", (long long)r);
    }
    free(tmp);
    return rc;
}

/* ---- dequantization ---- */

static void deq_block(lmf_qtype t, float *y, const void *src) {
    switch (t) {
    case LMF_Q8_0: {
        const blk_q8_0 *b = src;
        float d = lmf_f16_to_f32(b->d);
        for (int i = 0; i < 32; i++) y[i] = d * b->qs[i];
        break;
    }
    case LMF_Q4_0: {
        const blk_q4_0 *b = src;
        float d = lmf_f16_to_f32(b->d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * ((b->qs[j] & 0xF) - 8);
            y[j + 16] = d * ((b->qs[j] >> 4) - 8);
        }
        break;
    }
    case LMF_Q4_1: {
        const blk_q4_1 *b = src;
        float d = lmf_f16_to_f32(b->d), m = lmf_f16_to_f32(b->m);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (b->qs[j] & 0xF) + m;
            y[j + 16] = d * (b->qs[j] >> 4) + m;
        }
        break;
    }
    case LMF_NF4:
    case LMF_FP4: {
        const blk_nf4 *b = src;
        const float *code = t == LMF_NF4 ? lmf_nf4_code : lmf_fp4_code;
        for (int j = 0; j < 32; j++) {
            y[2 * j] = b->absmax * code[b->qs[j] >> 4];
            y[2 * j + 1] = b->absmax * code[b->qs[j] & 0xF];
        }
        break;
    }
    default: {
        const blk_q4_k *b = src;
        float d = lmf_f16_to_f32(b->d), dmin = lmf_f16_to_f32(b->dmin);
        for (int c = 0; c < 4; c++) {
            uint8_t sc, m;
            q4k_scale_min(2 * c, b->scales, &sc, &m);
            float d1 = d * sc, m1 = dmin * m;
            q4k_scale_min(2 * c + 1, b->scales, &sc, &m);
            float d2 = d * sc, m2 = dmin * m;
            const uint8_t *q = b->qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                y[64 * c + l] = d1 * (q[l] & 0xF) - m1;
                y[64 * c + 32 + l] = d2 * (q[l] >> 4) - m2;
            }
        }
        break;
    }
    }
}

void lmf_dequantize_row(lmf_qtype t, float *dst, const void *src, int64_t n) {
    int64_t nb = n / info[t].block;
    for (int64_t b = 0; b < nb; b++)
        deq_block(t, dst + b * info[t].block, (const uint8_t *)src + b * info[t].bytes);
}

void lmf_dequantize(lmf_qtype t, float *dst, const void *src, int64_t rows, int64_t cols) {
    size_t rb = lmf_quant_row_bytes(t, cols);
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
    for (int64_t r = 0; r < rows; r++)
        lmf_dequantize_row(t, dst + r * cols, (const uint8_t *)src + (size_t)r * rb, cols);
}

/* ---- NF4 double quantization of the block scales ---- */

void lmf_nf4_scales_compress(const float *absmax, int64_t n, int8_t *q, float *scales,
                             float *mean) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += absmax[i];
    float mu = n ? (float)(s / (double)n) : 0.0f;
    *mean = mu;
    for (int64_t g = 0; g * 256 < n; g++) {
        int64_t end = g * 256 + 256 < n ? g * 256 + 256 : n;
        float amax = 0;
        for (int64_t i = g * 256; i < end; i++) amax = fmaxf(amax, fabsf(absmax[i] - mu));
        float sc = amax / 127.0f;
        scales[g] = sc;
        for (int64_t i = g * 256; i < end; i++)
            q[i] = (int8_t)(sc ? clampi((int)roundf((absmax[i] - mu) / sc), -127, 127) : 0);
    }
}

void lmf_nf4_scales_expand(float *absmax, int64_t n, const int8_t *q, const float *scales,
                           float mean) {
    for (int64_t i = 0; i < n; i++) absmax[i] = mean + scales[i / 256] * q[i];
}

float lmf_nf4_block_absmax(const void *row, int64_t b) {
    return ((const blk_nf4 *)row)[b].absmax;
}

void lmf_nf4_set_block_absmax(void *row, int64_t b, float absmax) {
    ((blk_nf4 *)row)[b].absmax = absmax;
}

/* ---- plain-C reference products (double accumulation: the oracle) ---- */

float lmf_quant_dot_ref(lmf_qtype t, const void *row, const float *x, int64_t n) {
    float w[256];
    double s = 0;
    int bs = info[t].block;
    for (int64_t b = 0; b < n / bs; b++) {
        deq_block(t, w, (const uint8_t *)row + b * info[t].bytes);
        for (int i = 0; i < bs; i++) s += (double)w[i] * x[b * bs + i];
    }
    return (float)s;
}

void lmf_qmatmul_ref(float *y, const float *x, lmf_qtype t, const void *W, int n, int out, int in) {
    size_t rb = lmf_quant_row_bytes(t, in);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++)
            y[(size_t)i * out + o] =
                lmf_quant_dot_ref(t, (const uint8_t *)W + (size_t)o * rb, x + (size_t)i * in, in);
}

void lmf_qmatmul_t_ref(float *dx, const float *dy, lmf_qtype t, const void *W, int n, int out,
                       int in) {
    size_t rb = lmf_quant_row_bytes(t, in);
    float *w = malloc(sizeof(float) * (size_t)in);
    double *acc = malloc(sizeof(double) * (size_t)in);
    if (!w || !acc) { /* tests only; nothing sensible to return */
        free(w), free(acc);
        return;
    }
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < in; k++) acc[k] = 0;
        for (int o = 0; o < out; o++) {
            lmf_dequantize_row(t, w, (const uint8_t *)W + (size_t)o * rb, in);
            double g = dy[(size_t)i * out + o];
            for (int k = 0; k < in; k++) acc[k] += g * w[k];
        }
        for (int k = 0; k < in; k++) dx[(size_t)i * in + k] = (float)acc[k];
    }
    free(w), free(acc);
}
