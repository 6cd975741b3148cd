/* The GEMM library behind the cpu backend, chosen at build time: OpenBLAS (OpenMP build) or
 * oneDNN. Both run on libgomp, the same pool as our OpenMP kernels. */
#include "lmforge/core.h"
#include "lmforge/tensor.h"

#include <omp.h>
#include <stdio.h>

#if defined(LMF_GEMM_DNNL)
#include <dnnl.h>
#else
#include <cblas.h>
#endif

#include "gemm.h"

void lmf_gemm_f32(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#if defined(LMF_GEMM_DNNL)
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}

void lmf_compute_set_threads(int n) {
    lmf_threads_set(n);
#if !defined(LMF_GEMM_DNNL)
    openblas_set_num_threads(lmf_threads_get());
#endif
}

const char *lmf_gemm_library(void) {
    static char buf[128];
#if defined(LMF_GEMM_DNNL)
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "oneDNN %d.%d.%d (%s)", v->major, v->minor, v->patch,
             v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime");
#else
    int par = openblas_get_parallel();
    snprintf(buf, sizeof buf, "%s (%s)", openblas_get_config(),
             par == 2   ? "OpenMP"
             : par == 1 ? "pthreads: not the shared pool!"
                        : "serial");
#endif
    return buf;
}
