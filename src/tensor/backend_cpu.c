/* The cpu backend: GEMM from the chosen library, elementwise and reduction kernels in C with
 * OpenMP (vectorised by the compiler), attention as per-head GEMM tiles. Tested against
 * backend_ref.c. */
#include "lmforge/tensor.h"

#include "host_memory.h"
#include "lmforge/decode_kernels.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "vexpf.h"

#define PAR_MIN 4096 /* below this many elements, threads cost more than they save */

/* lmf_f32_to_bf16 in a form the compiler vectorises (no branch): round to nearest even, NaN
 * made quiet. vcvtneps2bf16 is not used: it flushes denormals, which would break bit equality
 * with the reference. */
static void cpu_to_bf16(uint16_t *dst, const float *src, size_t n) {
#pragma omp parallel for if (n > 4 * PAR_MIN) schedule(static)
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        uint32_t q = (u >> 16) | 0x40u;
        dst[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

static void cpu_embed_fwd(float *out, const float *table, const int32_t *ids, int n, int C) {
#pragma omp parallel for if ((size_t)n * C > PAR_MIN)
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * C, table + (size_t)ids[i] * C, sizeof(float) * C);
}

static void cpu_embed_bwd(float *dtable, const float *dout, const int32_t *ids, int n, int C) {
    /* Parallel over columns so duplicate ids never race. */
#pragma omp parallel for if ((size_t)n * C > PAR_MIN)
    for (int c0 = 0; c0 < C; c0 += 64) {
        int c1 = c0 + 64 < C ? c0 + 64 : C;
        for (int i = 0; i < n; i++) {
            float *d = dtable + (size_t)ids[i] * C;
            const float *g = dout + (size_t)i * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

static void cpu_rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int n, int C,
                            float eps) {
#pragma omp parallel for if ((size_t)n * C > PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C;
        float ss = 0;
        for (int c = 0; c < C; c++) ss += xi[c] * xi[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        if (rstd) rstd[i] = r;
        for (int c = 0; c < C; c++) oi[c] = xi[c] * r * w[c];
    }
}

static void cpu_rmsnorm_bwd(float *dx, float *dw, const float *dout, const float *x, const float *w,
                            const float *rstd, int n, int C, int accumulate) {
#pragma omp parallel for if ((size_t)n * C > PAR_MIN)
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * C, *dyi = dout + (size_t)i * C;
        float *dxi = dx + (size_t)i * C;
        float r = rstd[i], dot = 0;
        for (int c = 0; c < C; c++) dot += dyi[c] * w[c] * xi[c];
        float k = dot * r * r * r / C;
        if (accumulate)
            for (int c = 0; c < C; c++) dxi[c] += dyi[c] * w[c] * r - xi[c] * k;
        else
            for (int c = 0; c < C; c++) dxi[c] = dyi[c] * w[c] * r - xi[c] * k;
    }
    if (!dw) return;
#pragma omp parallel for if ((size_t)n * C > PAR_MIN)
    for (int c0 = 0; c0 < C; c0 += 64) {
        int c1 = c0 + 64 < C ? c0 + 64 : C;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * C, *dyi = dout + (size_t)i * C;
            float r = rstd[i];
            for (int c = c0; c < c1; c++) dw[c] += dyi[c] * xi[c] * r;
        }
    }
}

static void cpu_bias_fwd(float *y, const float *bias, int n, int C) {
#pragma omp parallel for if ((size_t)n * C > PAR_MIN)
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) y[(size_t)i * C + c] += bias[c];
}

static void cpu_bias_bwd(float *dbias, const float *dy, int n, int C) {
#pragma omp parallel for if ((size_t)n * C > PAR_MIN)
    for (int c0 = 0; c0 < C; c0 += 64) {
        int c1 = c0 + 64 < C ? c0 + 64 : C;
        for (int i = 0; i < n; i++)
            for (int c = c0; c < c1; c++) dbias[c] += dy[(size_t)i * C + c];
    }
}

static void cpu_rope(float *x, int ld, const int32_t *pos, const float *inv_freq, int n, int heads,
                     int D, int inverse) {
    int half = D / 2;
#pragma omp parallel
    {
        float *cs = malloc(sizeof(float) * D);
#pragma omp for
        for (int t = 0; t < n; t++) {
            for (int i = 0; i < half; i++) {
                float ang = (float)pos[t] * inv_freq[i];
                cs[i] = (float)cos(ang);
                cs[half + i] = inverse ? -(float)sin(ang) : (float)sin(ang);
            }
            for (int h = 0; h < heads; h++) {
                float *v = x + (size_t)t * ld + (size_t)h * D;
                for (int i = 0; i < half; i++) {
                    float a = v[i], b = v[i + half], c = cs[i], s = cs[half + i];
                    v[i] = a * c - b * s;
                    v[i + half] = b * c + a * s;
                }
            }
        }
        free(cs);
    }
}

/* Fills S (T x T, row stride T) for one row b: S = scale * Q K^T, masked (causal + segment)
 * entries -inf. Then turns each row into probabilities using lse if given, else computes the
 * softmax and stores its log-sum-exp in lse_out. */
static void scores_to_probs(float *S, int T, const int32_t *seg, const float *lse_in,
                            float *lse_out) {
    for (int t = 0; t < T; t++) {
        float *row = S + (size_t)t * T;
        float mx = -INFINITY;
        for (int j = 0; j <= t; j++) {
            if (seg[j] != seg[t]) row[j] = -INFINITY;
            mx = row[j] > mx ? row[j] : mx;
        }
        if (lse_in) {
            float l = lse_in[t];
            for (int j = 0; j <= t; j++) row[j] = expf(row[j] - l);
        } else {
            float sum = 0;
            for (int j = 0; j <= t; j++) sum += (row[j] = expf(row[j] - mx));
            float inv = 1.0f / sum;
            for (int j = 0; j <= t; j++) row[j] *= inv;
            lse_out[t] = mx + logf(sum);
        }
        for (int j = t + 1; j < T; j++) row[j] = 0;
    }
}

static void cpu_attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                         const int32_t *seg, const lmf_attn_shape *s) {
    int T = s->T, H = s->H, KVH = s->KVH, D = s->D, group = H / KVH;
    int qs = H * D, ks = KVH * D;
#pragma omp parallel
    {
        float *S = malloc(sizeof(float) * T * T);
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < s->B; b++)
            for (int h = 0; h < H; h++) {
                size_t r0 = (size_t)b * T;
                const float *Q = q + r0 * qs + (size_t)h * D;
                const float *K = k + r0 * ks + (size_t)(h / group) * D;
                const float *V = v + r0 * ks + (size_t)(h / group) * D;
                lmf_gemm_f32(0, 1, T, T, D, s->scale, Q, qs, K, ks, 0.0f, S, T);
                scores_to_probs(S, T, seg + r0, NULL, lse + ((size_t)b * H + h) * T);
                lmf_gemm_f32(0, 0, T, D, T, 1.0f, S, T, V, ks, 0.0f, out + r0 * qs + (size_t)h * D,
                             qs);
            }
        free(S);
    }
}

static void cpu_attn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v,
                         const int32_t *seg, const lmf_attn_shape *s) {
    int T = s->T, H = s->H, KVH = s->KVH, D = s->D, group = H / KVH;
    int qs = H * D, ks = KVH * D;
    /* One task per (row, kv head): the heads of a group add into the same dk/dv columns. */
#pragma omp parallel
    {
        float *P = malloc(sizeof(float) * T * T), *dS = malloc(sizeof(float) * T * T);
        float *Dt = malloc(sizeof(float) * T);
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < s->B; b++)
            for (int kh = 0; kh < KVH; kh++) {
                size_t r0 = (size_t)b * T;
                const float *K = k + r0 * ks + (size_t)kh * D, *V = v + r0 * ks + (size_t)kh * D;
                float *dK = dk + r0 * ks + (size_t)kh * D, *dV = dv + r0 * ks + (size_t)kh * D;
                for (int h = kh * group; h < (kh + 1) * group; h++) {
                    const float *Q = q + r0 * qs + (size_t)h * D;
                    const float *dO = dout + r0 * qs + (size_t)h * D;
                    const float *O = out + r0 * qs + (size_t)h * D;
                    float *dQ = dq + r0 * qs + (size_t)h * D;
                    float beta = h == kh * group ? 0.0f : 1.0f;
                    lmf_gemm_f32(0, 1, T, T, D, s->scale, Q, qs, K, ks, 0.0f, P, T);
                    scores_to_probs(P, T, seg + r0, lse + ((size_t)b * H + h) * T, NULL);
                    /* dV (+)= P^T dO */
                    lmf_gemm_f32(1, 0, T, D, T, 1.0f, P, T, dO, qs, beta, dV, ks);
                    /* dP = dO V^T, then dS = P * (dP - rowsum(dO * O)) * scale */
                    lmf_gemm_f32(0, 1, T, T, D, 1.0f, dO, qs, V, ks, 0.0f, dS, T);
                    for (int t = 0; t < T; t++) {
                        float acc = 0;
                        for (int d = 0; d < D; d++)
                            acc += dO[(size_t)t * qs + d] * O[(size_t)t * qs + d];
                        Dt[t] = acc;
                    }
                    for (int t = 0; t < T; t++) {
                        float *ds = dS + (size_t)t * T;
                        const float *p = P + (size_t)t * T;
                        for (int j = 0; j < T; j++) ds[j] = p[j] * (ds[j] - Dt[t]) * s->scale;
                    }
                    /* dQ = dS K; dK (+)= dS^T Q */
                    lmf_gemm_f32(0, 0, T, D, T, 1.0f, dS, T, K, ks, 0.0f, dQ, qs);
                    lmf_gemm_f32(1, 0, T, D, T, 1.0f, dS, T, Q, qs, beta, dK, ks);
                }
            }
        free(P);
        free(dS);
        free(Dt);
    }
}

static void cpu_swiglu_fwd(float *h, const float *gate, const float *up, size_t n) {
#pragma omp parallel for simd if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        h[i] = g / (1.0f + vexpf(-g)) * up[i];
    }
}

static void cpu_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *gate,
                           const float *up, size_t n) {
#pragma omp parallel for simd if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + vexpf(-g)), d = dh[i];
        float u = up[i];
        dup[i] = d * g * sg;
        dgate[i] = d * u * sg * (1.0f + g * (1.0f - sg));
    }
}

static void cpu_add(float *y, const float *x, size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void cpu_scale(float *y, float a, size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] *= a;
}

/* One exponential per logit: the exps go into the dlogits row (which may be the logits row
 * itself, so the target's logit is read first) and are scaled there once the sum is known. */
static void cpu_xent(float *losses, float *dlogits, const float *logits, const int32_t *targets,
                     int n, int V, float grad_scale) {
#pragma omp parallel for schedule(dynamic, 4)
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * V;
        int t = targets[i];
        if (t < 0) {
            losses[i] = 0;
            if (dlogits) memset(dlogits + (size_t)i * V, 0, sizeof(float) * V);
            continue;
        }
        float zt = z[t], mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        float sum = 0;
        if (dlogits) {
            float *d = dlogits + (size_t)i * V;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < V; j++) sum += (d[j] = vexpf(z[j] - mx));
            float k = grad_scale / sum;
#pragma omp simd
            for (int j = 0; j < V; j++) d[j] *= k;
            d[t] -= grad_scale;
        } else {
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < V; j++) sum += vexpf(z[j] - mx);
        }
        losses[i] = mx + logf(sum) - zt;
    }
}

static const lmf_backend cpu_backend = {
    .name = "cpu",
    .alloc = lmf_host_alloc,
    .free = lmf_host_free,
    .zero = lmf_host_zero,
    .copy = lmf_host_copy,
    .gemm = lmf_gemm_f32,
    .gemm_bf16 = lmf_gemm_bf16,
    .to_bf16 = cpu_to_bf16,
    .has_bf16 = lmf_gemm_bf16_native,
    .embed_fwd = cpu_embed_fwd,
    .embed_bwd = cpu_embed_bwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .bias_fwd = cpu_bias_fwd,
    .bias_bwd = cpu_bias_bwd,
    .rope = cpu_rope,
    .attn_fwd = cpu_attn_fwd,
    .attn_bwd = cpu_attn_bwd,
    .attn_paged = lmf_attn_paged_fast,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .add = cpu_add,
    .scale = cpu_scale,
    .xent = cpu_xent,
};

const lmf_backend *lmf_backend_cpu(void) {
    return &cpu_backend;
}

const lmf_backend *lmf_backend_by_name(const char *name) {
    if (!strcmp(name, "cpu")) return &cpu_backend;
    if (!strcmp(name, "ref")) return lmf_backend_ref();
    return NULL;
}
