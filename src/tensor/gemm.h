/* Internal: the single-precision GEMM entry point of the cpu backend (row-major). */
#ifndef LMF_TENSOR_GEMM_H
#define LMF_TENSOR_GEMM_H

void lmf_gemm_f32(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);

#endif
