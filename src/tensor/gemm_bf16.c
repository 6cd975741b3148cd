/* The cpu backend's bfloat16 GEMM: bf16 A and B, products accumulated in float32 into a float32
 * C, through oneDNN's matmul primitive (brgemm kernels on AVX-512 BF16: twice the multiply rate
 * of sgemm and half the operand traffic). Also decides whether bf16 compute is worth using on
 * this machine: AVX-512 BF16 present (cpuid + OS support for the zmm state), oneDNN linked, and
 * LMF_NO_BF16 unset. Where oneDNN is absent (the OpenBLAS build) or fails, the GEMM still gives
 * the right answer through float32 (slowly), so callers never need a second code path. */
#include "lmforge/core.h"
#include "lmforge/tensor.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(LMF_GEMM_DNNL)
#include <dnnl.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "gemm.h"

int lmf_cpu_has_avx512_bf16(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xe6) != 0xe6) return 0; /* XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM saved by the OS */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 16))) return 0; /* AVX512F */
    if (!(b & (1u << 30))) return 0;                                             /* AVX512BW */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1; /* AVX512_BF16 */
#else
    return 0;
#endif
}

int lmf_bf16_disabled_by_env(void) {
    const char *s = getenv("LMF_NO_BF16");
    return s && *s && strcmp(s, "0") != 0;
}

int lmf_gemm_bf16_native(void) {
#if defined(LMF_GEMM_DNNL)
    return !lmf_bf16_disabled_by_env() && lmf_cpu_has_avx512_bf16();
#else
    return 0; /* Debian's OpenBLAS has no bf16 GEMM */
#endif
}

/* Float32 route: widen both operands (exact) and run sgemm. */
static void gemm_bf16_via_f32(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A,
                              int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb;
    float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b);
    if (!a || !b) {
        lmf_warn("bf16 gemm: out of memory widening %zu + %zu values; result left unchanged", na,
                 nb);
    } else {
        lmf_convert_to_f32(a, A, LMF_BF16, na);
        lmf_convert_to_f32(b, B, LMF_BF16, nb);
        lmf_gemm_f32(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, C, ldc);
    }
    free(a);
    free(b);
}

#if defined(LMF_GEMM_DNNL)
static dnnl_engine_t engine;
static dnnl_stream_t stream;
static int dnnl_ready;
static pthread_once_t dnnl_once = PTHREAD_ONCE_INIT;

static void dnnl_init(void) {
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return;
    if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) return;
    dnnl_ready = 1;
}

/* One matmul through a freshly described primitive: oneDNN's primitive cache makes the
 * repeat creation of a shape cheap (tens of microseconds against milliseconds of GEMM). A
 * transposed operand is described by its strides, so nothing is copied here. */
static int dnnl_matmul_bf16(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A,
                            int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_dims_t ad = {M, K}, bd = {K, N}, cd = {M, N};
    dnnl_dims_t as = {ta ? 1 : lda, ta ? lda : 1}, bs = {tb ? 1 : ldb, tb ? ldb : 1}, cs = {ldc, 1};
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t am = NULL, bm = NULL, cm = NULL;
    dnnl_matmul_desc_t desc;
    int ok = dnnl_memory_desc_init_by_strides(&a_md, 2, ad, dnnl_bf16, as) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&b_md, 2, bd, dnnl_bf16, bs) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&c_md, 2, cd, dnnl_f32, cs) == dnnl_success &&
             dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md) == dnnl_success &&
             dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && alpha != 1.0f)
        ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) == dnnl_success;
    if (ok && beta != 0.0f)
        ok = dnnl_post_ops_create(&po) == dnnl_success &&
             dnnl_post_ops_append_sum(po, beta) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    ok = ok && dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL) == dnnl_success &&
         dnnl_primitive_create(&prim, pd) == dnnl_success &&
         dnnl_memory_create(&am, &a_md, engine, (void *)A) == dnnl_success &&
         dnnl_memory_create(&bm, &b_md, engine, (void *)B) == dnnl_success &&
         dnnl_memory_create(&cm, &c_md, engine, C) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
        ok = dnnl_primitive_execute(prim, stream, 3, args) == dnnl_success &&
             dnnl_stream_wait(stream) == dnnl_success;
    }
    if (am) dnnl_memory_destroy(am);
    if (bm) dnnl_memory_destroy(bm);
    if (cm) dnnl_memory_destroy(cm);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok;
}
#endif

void lmf_gemm_bf16(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                   const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        lmf_gemm_f32(ta, tb, M, N, 0, alpha, NULL, lda, NULL, ldb, beta, C, ldc);
        return;
    }
#if defined(LMF_GEMM_DNNL)
    pthread_once(&dnnl_once, dnnl_init);
    if (dnnl_ready && dnnl_matmul_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
        return;
    static int warned;
    if (!warned) {
        warned = 1;
        lmf_warn("oneDNN bf16 matmul failed (%dx%dx%d); computing bf16 GEMMs through float32", M, N,
                 K);
    }
#endif
    gemm_bf16_via_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
