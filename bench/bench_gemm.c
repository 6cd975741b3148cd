/* GEMM libraries on lmforge's shapes: OpenBLAS (OpenMP build) against oneDNN, both linked
 * here directly, same threads, same process, and lmforge's bf16 GEMM (oneDNN matmul, bf16
 * inputs, f32 accumulation) beside them. Prints GFLOP/s per shape and the ratios.
 * Usage: bench_gemm [threads] [tokens]   (defaults 2, 1024 = batch 4 x 256) */
#include <cblas.h>
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>

#include "lmforge/core.h"
#include "lmforge/tensor.h"

typedef struct shape {
    const char *what;
    int ta, tb, M, N, K;
} shape;

static uint16_t *Ab, *Bb;

static double run(int lib, const shape *s, float *A, float *B, float *C, int reps) {
    int lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = lmf_time_sec();
        if (lib == 2)
            lmf_backend_cpu()->gemm_bf16(s->ta, s->tb, s->M, s->N, s->K, 1.0f, Ab, lda, Bb, ldb,
                                         0.0f, C, s->N);
        else if (lib == 0)
            cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans,
                        s->tb ? CblasTrans : CblasNoTrans, s->M, s->N, s->K, 1.0f, A, lda, B, ldb,
                        0.0f, C, s->N);
        else
            dnnl_sgemm(s->ta ? 'T' : 'N', s->tb ? 'T' : 'N', s->M, s->N, s->K, 1.0f, A, lda, B, ldb,
                       0.0f, C, s->N);
        double t = lmf_time_sec() - t0;
        if (t < best) best = t;
    }
    return 2.0 * s->M * s->N * s->K / best / 1e9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, n = argc > 2 ? atoi(argv[2]) : 1024;
    lmf_threads_set(threads);
    openblas_set_num_threads(threads);
    int C = 768, F = 2048, V = 32000;
    shape shapes[] = {
        {"qkvo fwd  x W^T", 0, 1, n, C, C},   {"up fwd    x W^T", 0, 1, n, F, C},
        {"down fwd  h W^T", 0, 1, n, C, F},   {"lm_head   x W^T", 0, 1, n, V, C},
        {"up dx     dy W", 0, 0, n, C, F},    {"up dW     dy^T x", 1, 0, F, C, n},
        {"lm_head dW dy^T x", 1, 0, V, C, n}, {"attn S=QK^T 256x256x64", 0, 1, 256, 256, 64},
    };
    size_t big = (size_t)V * (n > F ? n : F) + (size_t)V * C;
    float *A = malloc(big * 4), *B = malloc(big * 4), *Cm = malloc(big * 4);
    for (size_t i = 0; i < big; i++) A[i] = B[i] = (float)((i % 17) - 8) / 8.0f;
    Ab = malloc(big * 2), Bb = malloc(big * 2);
    lmf_backend_cpu()->to_bf16(Ab, A, big);
    lmf_backend_cpu()->to_bf16(Bb, B, big);
    printf("GEMM on lmforge's llama-110m shapes, %d threads, %d tokens (bf16: %s)\n", threads, n,
           lmf_backend_cpu()->has_bf16() ? "AVX-512 BF16" : "no native bf16 here");
    printf("%-26s %12s %12s %8s %12s %8s\n", "shape", "OpenBLAS", "oneDNN", "ratio", "bf16",
           "vs f32");
    double sum_o = 0, sum_d = 0, sum_b = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const shape *s = &shapes[i];
        run(0, s, A, B, Cm, 1), run(1, s, A, B, Cm, 1), run(2, s, A, B, Cm, 1); /* warm up */
        double o = run(0, s, A, B, Cm, 5), d = run(1, s, A, B, Cm, 5), b = run(2, s, A, B, Cm, 5);
        sum_o += 1 / o, sum_d += 1 / d, sum_b += 1 / b;
        printf("%-26s %9.1f GF %9.1f GF %7.2fx %9.1f GF %7.2fx\n", s->what, o, d, d / o, b, b / d);
    }
    size_t ns = sizeof shapes / sizeof *shapes;
    printf("equal-work harmonic mean: OpenBLAS %.1f GF/s, oneDNN %.1f GF/s, bf16 %.1f GF/s\n",
           ns / sum_o, ns / sum_d, ns / sum_b);
    free(A), free(B), free(Cm), free(Ab), free(Bb);
    return 0;
}
