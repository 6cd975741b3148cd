/* Matrix-vector speed with quantized weights against f32 and bf16 (the decode GEMV), on
 * llama-110m's matrix shapes, all formats measured back to back in one process so the ratios
 * hold on a shared machine. Each format cycles through enough copies of its matrix to exceed
 * the caches (--working-mb, default 256), as a decode step streams a model larger than L3; GB/s
 * is the weight bytes read per second. Each figure is the best of --reps rounds.
 * Usage: bench_quant [--threads 2] [--reps 7] [--n 1] [--working-mb 256] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/decode_kernels.h"
#include "lmforge/quant.h"

#include "bench_args.h"

enum { F32, BF16, Q8, Q4, NF4, N_FMT };
static const char *fmt_name[N_FMT] = {"f32", "bf16", "q8_0", "q4_0", "nf4"};

typedef struct fmt_data {
    size_t bytes; /* one matrix */
    int copies;
    void **mats;
} fmt_data;

static void run(int fmt, const void *W, float *y, const float *x, uint16_t *xb, int n, int out,
                int in) {
    switch (fmt) {
    case F32:
        lmf_matvec_f32(y, x, W, n, out, in);
        break;
    case BF16:
        lmf_matvec_bf16(y, x, W, n, out, in, xb);
        break;
    case Q8:
        lmf_qmatmul(y, x, LMF_Q8_0, W, n, out, in);
        break;
    case Q4:
        lmf_qmatmul(y, x, LMF_Q4_0, W, n, out, in);
        break;
    default:
        lmf_qmatmul(y, x, LMF_NF4, W, n, out, in);
        break;
    }
}

int main(int argc, char **argv) {
    int threads = atoi(bench_opt(argc, argv, "--threads", "2")),
        reps = atoi(bench_opt(argc, argv, "--reps", "7")),
        n = atoi(bench_opt(argc, argv, "--n", "1"));
    size_t working = (size_t)atoi(bench_opt(argc, argv, "--working-mb", "256")) << 20;
    lmf_compute_set_threads(threads);
    int shapes[][2] = {{768, 768}, {2048, 768}, {768, 2048}, {32000, 768}}; /* (out, in) */
    printf(
        "quantized matvec bench: %d threads, %d input row(s), best of %d, working set >= %zu MiB "
        "per format, AVX-512 quant kernels: %s\n",
        threads, n, reps, working >> 20, lmf_quant_kernels_avx512() ? "yes" : "no");
    printf("%-12s", "out x in");
    for (int f = 0; f < N_FMT; f++) printf(" %8s ms %6s GB/s", fmt_name[f], "");
    printf("   speed vs f32: bf16 q8_0 q4_0 nf4\n");
    lmf_rng rng;
    lmf_rng_seed(&rng, 1);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int out = shapes[s][0], in = shapes[s][1];
        size_t numel = (size_t)out * in;
        float *W = malloc(sizeof(float) * numel), *x = malloc(sizeof(float) * n * in),
              *y = malloc(sizeof(float) * n * out);
        uint16_t *xb = malloc(sizeof(uint16_t) * n * in);
        if (!W || !x || !y || !xb) {
            fprintf(stderr, "bench_quant: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < numel; i++) W[i] = 0.02f * lmf_rng_normal(&rng);
        for (int i = 0; i < n * in; i++) x[i] = lmf_rng_normal(&rng);
        fmt_data fd[N_FMT];
        for (int f = 0; f < N_FMT; f++) {
            fd[f].bytes = f == F32    ? numel * 4
                          : f == BF16 ? numel * 2
                                      : lmf_quant_row_bytes(f == Q8   ? LMF_Q8_0
                                                            : f == Q4 ? LMF_Q4_0
                                                                      : LMF_NF4,
                                                            in) *
                                            out;
            fd[f].copies = (int)((working + fd[f].bytes - 1) / fd[f].bytes);
            fd[f].mats = malloc(sizeof(void *) * fd[f].copies);
            for (int c = 0; c < fd[f].copies; c++) {
                void *p = lmf_alloc(fd[f].bytes, "bench matrix");
                if (!p) {
                    fprintf(stderr, "bench_quant: %s\n", lmf_last_error());
                    return 1;
                }
                if (c > 0) /* copies of the first: same bytes, other addresses */
                    memcpy(p, fd[f].mats[0], fd[f].bytes);
                else if (f == F32)
                    memcpy(p, W, fd[f].bytes);
                else if (f == BF16)
                    lmf_convert_from_f32(p, LMF_BF16, W, numel);
                else if (lmf_quantize(f == Q8   ? LMF_Q8_0
                                      : f == Q4 ? LMF_Q4_0
                                                : LMF_NF4,
                                      p, W, out, in, "bench")) {
                    fprintf(stderr, "bench_quant: %s\n", lmf_last_error());
                    return 1;
                }
                fd[f].mats[c] = p;
            }
        }
        double best[N_FMT];
        for (int f = 0; f < N_FMT; f++) best[f] = 1e30;
        for (int r = 0; r < reps; r++)
            for (int f = 0; f < N_FMT; f++) {
                /* one pass over all copies; time per call */
                double t0 = lmf_time_sec();
                for (int c = 0; c < fd[f].copies; c++) run(f, fd[f].mats[c], y, x, xb, n, out, in);
                double t = (lmf_time_sec() - t0) / fd[f].copies;
                if (t < best[f]) best[f] = t;
            }
        char label[32];
        snprintf(label, sizeof label, "%dx%d", out, in);
        printf("%-12s", label);
        for (int f = 0; f < N_FMT; f++)
            printf(" %11.4f %11.1f", best[f] * 1e3, fd[f].bytes / best[f] / 1e9);
        printf("   %15.2f %4.2f %4.2f %4.2f\n", best[F32] / best[BF16], best[F32] / best[Q8],
               best[F32] / best[Q4], best[F32] / best[NF4]);
        for (int f = 0; f < N_FMT; f++) {
            for (int c = 0; c < fd[f].copies; c++) lmf_free(fd[f].mats[c]);
            free(fd[f].mats);
        }
        free(W), free(x), free(y), free(xb);
    }
    return 0;
}
