/* Tensor layer: element types, and the compute backend through which the model does all of its
 * arithmetic. Model code never touches activation memory directly; it calls lmf_backend ops on
 * buffers the backend allocated, so a CUDA backend (cuBLAS + own kernels) plugs in as another
 * table without model changes. Two CPU tables exist: "cpu" (GEMM library + OpenMP/AVX-512
 * kernels) and "ref" (plain C, the oracle each fast kernel is tested against).
 * All matrices are row-major float32 (bf16 GEMM operands excepted); weights are stored as
 * Hugging Face stores them, (out_features, in_features), so a linear layer is y = x W^T. */
#ifndef LMFORGE_TENSOR_H
#define LMFORGE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum lmf_dtype { LMF_F32, LMF_BF16, LMF_F16, LMF_DTYPE_COUNT } lmf_dtype;

size_t lmf_dtype_size(lmf_dtype t);
const char *lmf_dtype_name(lmf_dtype t); /* safetensors spelling: "F32", "BF16", "F16" */
int lmf_dtype_parse(const char *name, lmf_dtype *out); /* 0 or LMF_EUNSUPPORTED */

float lmf_bf16_to_f32(uint16_t h);
uint16_t lmf_f32_to_bf16(float f); /* round to nearest even, NaN kept */
float lmf_f16_to_f32(uint16_t h);
uint16_t lmf_f32_to_f16(float f);
/* Converts n elements of type t at src into float32. */
void lmf_convert_to_f32(float *dst, const void *src, lmf_dtype t, size_t n);
void lmf_convert_from_f32(void *dst, lmf_dtype t, const float *src, size_t n);

/* Attention geometry for one call: B rows of T tokens, H query heads, KVH key/value heads
 * (H % KVH == 0, grouped-query attention), head size D. Token t of row b is row b*T+t of the
 * q (stride H*D), k and v (stride KVH*D) matrices. seg[b*T+t] is the token's segment id:
 * a query attends to keys of the same row and segment at positions <= its own (causal), so
 * packed sequences never see each other. */
typedef struct lmf_attn_shape {
    int B, T, H, KVH, D;
    float scale; /* usually 1/sqrt(D) */
} lmf_attn_shape;

/* Element type of a paged KV cache. INT8 stores each row of D values (one KV head of one token)
 * as D int8 q with one float32 scale: x ~= q * scale, scale = max|x| / 127, q = round(x / scale)
 * (so |x - q * scale| <= scale / 2); the scales live in the same block as the rows. */
typedef enum lmf_kv_dtype { LMF_KV_F32, LMF_KV_BF16, LMF_KV_INT8, LMF_KV_DTYPE_COUNT } lmf_kv_dtype;

/* "float32", "bfloat16", "int8" (the kv_cache_dtype config values). */
const char *lmf_kv_dtype_name(lmf_kv_dtype t);
/* Those names, and "auto" for float32 (without a model to go by; the serving commands resolve
 * auto with lmf_kv_dtype_auto); 0 or LMF_EUNSUPPORTED (no message set). */
int lmf_kv_dtype_parse(const char *name, lmf_kv_dtype *out);
size_t lmf_kv_dtype_size(lmf_kv_dtype t); /* bytes per value, scales aside: 4, 2, 1 */

/* Attention of new tokens over a paged KV cache (inference). A layer's cache is a set of blocks
 * of block_size token slots; token t of a sequence lives in block table[t / block_size], slot
 * t % block_size: its row of KV head h starts at byte
 *   table[..] * block_bytes + (slot * KVH + h) * D * lmf_kv_dtype_size(dtype)
 * from k (v likewise), and with INT8 its scale is the float at byte
 *   table[..] * block_bytes + scale_off + (slot * KVH + h) * 4.
 * The sequence's new tokens are rows q_row .. q_row + n_new - 1 of q/out (stride H*D), at
 * positions start .. start + n_new - 1, already written into the cache; each attends to cache
 * positions 0 .. its own. */
typedef struct lmf_paged_seq {
    int q_row, n_new, start;
    const int32_t *table;
} lmf_paged_seq;

typedef struct lmf_paged_shape {
    int H, KVH, D, block_size;
    size_t block_bytes; /* bytes between consecutive blocks of the same layer */
    float scale;
    lmf_kv_dtype dtype; /* of the cached values */
    size_t scale_off;   /* INT8: bytes from a block's rows of the layer to their scales */
} lmf_paged_shape;

typedef struct lmf_backend {
    const char *name;
    void *(*alloc)(size_t bytes); /* zero-filled; NULL when out of memory */
    void (*free)(void *p);
    void (*zero)(void *p, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);

    /* C = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; A is M x K after op, B is K x N. */
    void (*gemm)(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc);

    /* Mixed precision: the same GEMM with A and B in bfloat16 (lmf_f32_to_bf16 bit patterns),
     * products accumulated in float32 into the float32 C. */
    void (*gemm_bf16)(int trans_a, int trans_b, int M, int N, int K, float alpha, const uint16_t *A,
                      int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc);
    /* dst[i] = lmf_f32_to_bf16(src[i]) (round to nearest even, NaN kept), bit for bit. */
    void (*to_bf16)(uint16_t *dst, const float *src, size_t n);
    /* Non-zero when bf16 compute is worth using on this backend here: for cpu, the CPU has
     * AVX-512 BF16 and oneDNN is linked; the ref backend always can. Both answer 0 when the
     * environment variable LMF_NO_BF16 is set (to anything but "" or "0"). */
    int (*has_bf16)(void);

    /* out[i, :] = table[ids[i], :]; C columns. */
    void (*embed_fwd)(float *out, const float *table, const int32_t *ids, int n, int C);
    /* dtable[ids[i], :] += dout[i, :] (serial over i: duplicate ids accumulate). */
    void (*embed_bwd)(float *dtable, const float *dout, const int32_t *ids, int n, int C);

    /* out = x * rsqrt(mean(x^2) + eps) * w over rows of C; rstd[i] saved for backward.
     * Any of out/x may alias. */
    void (*rmsnorm_fwd)(float *out, float *rstd, const float *x, const float *w, int n, int C,
                        float eps);
    /* dx (+)= d/dx, dw += d/dw (dw may be NULL when frozen). accumulate != 0 adds into dx. */
    void (*rmsnorm_bwd)(float *dx, float *dw, const float *dout, const float *x, const float *w,
                        const float *rstd, int n, int C, int accumulate);

    /* y += bias over rows; dbias += column sums of dy. */
    void (*bias_fwd)(float *y, const float *bias, int n, int C);
    void (*bias_bwd)(float *dbias, const float *dy, int n, int C);

    /* Rotary embedding in Hugging Face's rotate-half layout on x (n rows of heads*D, stride
     * ld), in place. Angle for pair i at token t: pos[t] * inv_freq[i]. inverse != 0 applies
     * the transposed rotation (the backward pass). */
    void (*rope)(float *x, int ld, const int32_t *pos, const float *inv_freq, int n, int heads,
                 int D, int inverse);

    /* Causal, segment-masked grouped-query attention. out: (B*T, H*D); lse: (B, H, T) log-sum-exp
     * of each query's scaled scores, saved for backward. */
    void (*attn_fwd)(float *out, float *lse, const float *q, const float *k, const float *v,
                     const int32_t *seg, const lmf_attn_shape *s);
    /* dq, dk, dv are overwritten. */
    void (*attn_bwd)(float *dq, float *dk, float *dv, const float *dout, const float *out,
                     const float *lse, const float *q, const float *k, const float *v,
                     const int32_t *seg, const lmf_attn_shape *s);

    void (*attn_paged)(float *out, const float *q, const void *k, const void *v,
                       const lmf_paged_seq *seqs, int n_seqs, const lmf_paged_shape *s);

    /* h = silu(gate) * up; backward gives dgate and dup. */
    void (*swiglu_fwd)(float *h, const float *gate, const float *up, size_t n);
    void (*swiglu_bwd)(float *dgate, float *dup, const float *dh, const float *gate,
                       const float *up, size_t n);

    /* y += x (n elements) and y *= a. */
    void (*add)(float *y, const float *x, size_t n);
    void (*scale)(float *y, float a, size_t n);

    /* Cross-entropy of rows of logits (n x V) against targets (-100 = ignored). losses[i]
     * gets -log softmax[target] (0 when ignored). When dlogits is non-NULL the rows are
     * replaced by grad_scale * (softmax - onehot) (zero rows for ignored targets); dlogits may
     * alias logits. logprobs non-NULL receives log softmax[target]. */
    void (*xent)(float *losses, float *dlogits, const float *logits, const int32_t *targets, int n,
                 int V, float grad_scale);
} lmf_backend;

const lmf_backend *lmf_backend_cpu(void);
const lmf_backend *lmf_backend_ref(void);
/* "cpu" or "ref"; NULL if unknown. */
const lmf_backend *lmf_backend_by_name(const char *name);

/* cpuid: AVX-512 BF16 (vdpbf16ps) present and its register state enabled by the OS. */
int lmf_cpu_has_avx512_bf16(void);
/* Non-zero when the environment variable LMF_NO_BF16 is set to anything but "" or "0". */
int lmf_bf16_disabled_by_env(void);

/* Sets the one thread pool (OpenMP, and the GEMM library on the same pool). */
void lmf_compute_set_threads(int n);
/* Describes the GEMM library compiled in ("OpenBLAS 0.3.21 (OpenMP)", "oneDNN 2.6"). */
const char *lmf_gemm_library(void);

#endif
