/* The plain-C reference backend: the simplest correct form of every op, written for clarity.
 * Fast kernels (backend_cpu.c) and future device backends are tested against it. */
#include "lmforge/tensor.h"

#include "host_memory.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void ref_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                float b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += (double)a * b;
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * acc + (beta == 0 ? 0 : beta * *c));
        }
}

static void ref_gemm_bf16(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A,
                          int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                uint16_t a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                uint16_t b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += (double)lmf_bf16_to_f32(a) * lmf_bf16_to_f32(b);
            }
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * acc + (beta == 0 ? 0 : beta * *c));
        }
}

static void ref_to_bf16(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = lmf_f32_to_bf16(src[i]);
}

static int ref_has_bf16(void) {
    return !lmf_bf16_disabled_by_env();
}

static void ref_embed_fwd(float *out, const float *table, const int32_t *ids, int n, int C) {
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * C, table + (size_t)ids[i] * C, sizeof(float) * C);
}

static void ref_embed_bwd(float *dtable, const float *dout, const int32_t *ids, int n, int C) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) dtable[(size_t)ids[i] * C + c] += dout[(size_t)i * C + c];
}

static void ref_rmsnorm_fwd(float *out, float *rstd, const float *x, const float *w, int n, int C,
                            float eps) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)xi[c] * xi[c];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        if (rstd) rstd[i] = r;
        for (int c = 0; c < C; c++) out[(size_t)i * C + c] = xi[c] * r * w[c];
    }
}

static void ref_rmsnorm_bwd(float *dx, float *dw, const float *dout, const float *x, const float *w,
                            const float *rstd, int n, int C, int accumulate) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * C, *dyi = dout + (size_t)i * C;
        float r = rstd[i];
        double dot = 0;
        for (int c = 0; c < C; c++) dot += (double)dyi[c] * w[c] * xi[c];
        float k = (float)(dot * r * r * r / C);
        for (int c = 0; c < C; c++) {
            float g = dyi[c] * w[c] * r - xi[c] * k;
            float *d = &dx[(size_t)i * C + c];
            *d = accumulate ? *d + g : g;
            if (dw) dw[c] += dyi[c] * xi[c] * r;
        }
    }
}

static void ref_bias_fwd(float *y, const float *bias, int n, int C) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) y[(size_t)i * C + c] += bias[c];
}

static void ref_bias_bwd(float *dbias, const float *dy, int n, int C) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) dbias[c] += dy[(size_t)i * C + c];
}

static void ref_rope(float *x, int ld, const int32_t *pos, const float *inv_freq, int n, int heads,
                     int D, int inverse) {
    int half = D / 2;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < heads; h++) {
            float *v = x + (size_t)t * ld + (size_t)h * D;
            for (int i = 0; i < half; i++) {
                float ang = (float)pos[t] * inv_freq[i];
                float c = (float)cos(ang), s = (float)sin(ang);
                if (inverse) s = -s;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
}

static void ref_attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                         const int32_t *seg, const lmf_attn_shape *s) {
    int T = s->T, H = s->H, KVH = s->KVH, D = s->D, group = H / KVH;
    int qs = H * D, ks = KVH * D;
    double *p = malloc(sizeof(double) * T);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                size_t qi = (size_t)b * T + t;
                const float *qv = q + qi * qs + (size_t)h * D;
                double mx = -INFINITY;
                for (int j = 0; j <= t; j++) {
                    size_t kj = (size_t)b * T + j;
                    p[j] = -INFINITY;
                    if (seg[kj] != seg[qi]) continue;
                    const float *kv = k + kj * ks + (size_t)(h / group) * D;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += (double)qv[d] * kv[d];
                    p[j] = dot * s->scale;
                    if (p[j] > mx) mx = p[j];
                }
                double sum = 0;
                for (int j = 0; j <= t; j++) sum += (p[j] = exp(p[j] - mx));
                float *o = out + qi * qs + (size_t)h * D;
                for (int d = 0; d < D; d++) {
                    double acc = 0;
                    for (int j = 0; j <= t; j++)
                        acc += p[j] * v[((size_t)b * T + j) * ks + (size_t)(h / group) * D + d];
                    o[d] = (float)(acc / sum);
                }
                lse[((size_t)b * H + h) * T + t] = (float)(mx + log(sum));
            }
    free(p);
}

static void ref_attn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v,
                         const int32_t *seg, const lmf_attn_shape *s) {
    int T = s->T, H = s->H, KVH = s->KVH, D = s->D, group = H / KVH;
    int qs = H * D, ks = KVH * D;
    size_t n = (size_t)s->B * T;
    memset(dq, 0, sizeof(float) * n * qs);
    memset(dk, 0, sizeof(float) * n * ks);
    memset(dv, 0, sizeof(float) * n * ks);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                size_t qi = (size_t)b * T + t;
                const float *qv = q + qi * qs + (size_t)h * D;
                const float *go = dout + qi * qs + (size_t)h * D,
                            *o = out + qi * qs + (size_t)h * D;
                double Dt = 0;
                for (int d = 0; d < D; d++) Dt += (double)go[d] * o[d];
                float l = lse[((size_t)b * H + h) * T + t];
                for (int j = 0; j <= t; j++) {
                    size_t kj = (size_t)b * T + j;
                    if (seg[kj] != seg[qi]) continue;
                    size_t off = kj * ks + (size_t)(h / group) * D;
                    double dot = 0, dp = 0;
                    for (int d = 0; d < D; d++) {
                        dot += (double)qv[d] * k[off + d];
                        dp += (double)go[d] * v[off + d];
                    }
                    double pj = exp(dot * s->scale - l), ds = pj * (dp - Dt) * s->scale;
                    for (int d = 0; d < D; d++) {
                        dq[qi * qs + (size_t)h * D + d] += (float)(ds * k[off + d]);
                        dk[off + d] += (float)(ds * qv[d]);
                        dv[off + d] += (float)(pj * go[d]);
                    }
                }
            }
}

/* Element d of KV head h of token t of a sequence's paged cache, as a double (the layout of
 * lmforge/tensor.h, element by element). */
static double paged_elem(const void *base, const lmf_paged_seq *sq, int t, int h, int d,
                         const lmf_paged_shape *s) {
    size_t row = (size_t)(t % s->block_size) * s->KVH + h,
           blk = (size_t)sq->table[t / s->block_size] * s->block_bytes;
    const uint8_t *b = (const uint8_t *)base + blk;
    switch (s->dtype) {
    case LMF_KV_BF16:
        return lmf_bf16_to_f32(((const uint16_t *)b)[row * s->D + d]);
    case LMF_KV_INT8: {
        float scale;
        memcpy(&scale, b + s->scale_off + row * sizeof(float), sizeof scale);
        return (double)((const int8_t *)b)[row * s->D + d] * scale;
    }
    default:
        return ((const float *)b)[row * s->D + d];
    }
}

static void ref_attn_paged(float *out, const float *q, const void *k, const void *v,
                           const lmf_paged_seq *seqs, int n_seqs, const lmf_paged_shape *s) {
    int H = s->H, D = s->D, group = H / s->KVH;
    for (int si = 0; si < n_seqs; si++) {
        const lmf_paged_seq *sq = &seqs[si];
        int len = sq->start + sq->n_new;
        double *p = malloc(sizeof(double) * (size_t)len);
        for (int i = 0; i < sq->n_new; i++)
            for (int h = 0; h < H; h++) {
                const float *qv = q + (size_t)(sq->q_row + i) * H * D + (size_t)h * D;
                int upto = sq->start + i;
                double mx = -INFINITY, sum = 0;
                for (int t = 0; t <= upto; t++) {
                    double dot = 0;
                    for (int d = 0; d < D; d++)
                        dot += (double)qv[d] * paged_elem(k, sq, t, h / group, d, s);
                    p[t] = dot * s->scale;
                    if (p[t] > mx) mx = p[t];
                }
                for (int t = 0; t <= upto; t++) sum += (p[t] = exp(p[t] - mx));
                float *o = out + (size_t)(sq->q_row + i) * H * D + (size_t)h * D;
                for (int d = 0; d < D; d++) {
                    double acc = 0;
                    for (int t = 0; t <= upto; t++)
                        acc += p[t] * paged_elem(v, sq, t, h / group, d, s);
                    o[d] = (float)(acc / sum);
                }
            }
        free(p);
    }
}

static void ref_swiglu_fwd(float *h, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        h[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void ref_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *gate,
                           const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], sg = 1.0f / (1.0f + expf(-g)), d = dh[i];
        dup[i] = d * g * sg;
        dgate[i] = d * up[i] * sg * (1.0f + g * (1.0f - sg));
    }
}

static void ref_add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void ref_scale(float *y, float a, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] *= a;
}

static void ref_xent(float *losses, float *dlogits, const float *logits, const int32_t *targets,
                     int n, int V, float grad_scale) {
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * V;
        int t = targets[i];
        if (t < 0) {
            losses[i] = 0;
            if (dlogits) memset(dlogits + (size_t)i * V, 0, sizeof(float) * V);
            continue;
        }
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        for (int j = 0; j < V; j++) sum += exp(z[j] - mx);
        double lse = mx + log(sum);
        losses[i] = (float)(lse - z[t]);
        if (dlogits) {
            float *d = dlogits + (size_t)i * V;
            for (int j = 0; j < V; j++) {
                double p = exp(z[j] - lse);
                d[j] = (float)(grad_scale * (p - (j == t)));
            }
        }
    }
}

static const lmf_backend ref_backend = {
    .name = "ref",
    .alloc = lmf_host_alloc,
    .free = lmf_host_free,
    .zero = lmf_host_zero,
    .copy = lmf_host_copy,
    .gemm = ref_gemm,
    .gemm_bf16 = ref_gemm_bf16,
    .to_bf16 = ref_to_bf16,
    .has_bf16 = ref_has_bf16,
    .embed_fwd = ref_embed_fwd,
    .embed_bwd = ref_embed_bwd,
    .rmsnorm_fwd = ref_rmsnorm_fwd,
    .rmsnorm_bwd = ref_rmsnorm_bwd,
    .bias_fwd = ref_bias_fwd,
    .bias_bwd = ref_bias_bwd,
    .rope = ref_rope,
    .attn_fwd = ref_attn_fwd,
    .attn_bwd = ref_attn_bwd,
    .attn_paged = ref_attn_paged,
    .swiglu_fwd = ref_swiglu_fwd,
    .swiglu_bwd = ref_swiglu_bwd,
    .add = ref_add,
    .scale = ref_scale,
    .xent = ref_xent,
};

const lmf_backend *lmf_backend_ref(void) {
    return &ref_backend;
}
