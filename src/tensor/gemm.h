/* Internal: the GEMM entry points of the cpu backend (row-major). */
#ifndef LMF_TENSOR_GEMM_H
#define LMF_TENSOR_GEMM_H

#include <stdint.h>

void lmf_gemm_f32(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
/* A, B bfloat16; accumulation and C float32 (gemm_bf16.c). */
void lmf_gemm_bf16(int ta, int tb, int M, int N, int K, float alpha, const uint16_t *A, int lda,
                   const uint16_t *B, int ldb, float beta, float *C, int ldc);
/* Non-zero when lmf_gemm_bf16 runs on native bf16 instructions and LMF_NO_BF16 is unset. */
int lmf_gemm_bf16_native(void);

#endif
