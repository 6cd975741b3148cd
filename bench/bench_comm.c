/* lmf_comm all-reduce against plain blocking MPI_Allreduce (f32, in place), and the bf16 custom
 * operation, for a few sizes: what the timed polling wait (non-blocking collective + MPI_Test +
 * sleeps) costs. Run under mpirun: mpirun -np 2 bench_comm [iterations]. Rank 0 prints one line
 * per size: microseconds per call and bus bandwidth 2(P-1)/P * bytes / time. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "lmforge/comm.h"
#include "lmforge/core.h"

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 20;
    lmf_comm *c;
    lmf_comm_options o = {.force_mpi = 1};
    if (lmf_comm_init(&c, &o)) {
        fprintf(stderr, "bench_comm: %s\n", lmf_last_error());
        return 1;
    }
    int P = lmf_comm_size(c), R = lmf_comm_rank(c);
    static const size_t sizes[] = {1024, 262144, 1 << 20, 1 << 24}; /* floats */
    float *x = lmf_alloc(sizeof(float) << 24, "bench buffer");
    if (R == 0)
        printf("%d ranks; us per all-reduce (busbw GB/s): bytes | MPI_Allreduce | lmf f32 | "
               "lmf bf16\n",
               P);
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        int it = n >= (1 << 24) ? (iters + 3) / 4 : iters;
        double t[3];
        for (int k = 0; k < 3; k++) {
            for (int w = -2; w < it; w++) { /* two warm-up calls */
                if (w == 0) {
                    MPI_Barrier(MPI_COMM_WORLD);
                    t[k] = MPI_Wtime();
                }
                if (k == 0)
                    MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                else if (k == 1)
                    lmf_comm_allreduce(c, x, n, LMF_F32, LMF_REDUCE_SUM);
                else
                    lmf_comm_allreduce(c, x, n, LMF_BF16, LMF_REDUCE_SUM);
            }
            t[k] = (MPI_Wtime() - t[k]) / it;
        }
        if (R == 0) {
            double f = 2.0 * (P - 1) / P;
            printf("%10zu | %9.1f (%5.2f) | %9.1f (%5.2f) | %9.1f (%5.2f)\n", n * 4, t[0] * 1e6,
                   f * n * 4 / t[0] / 1e9, t[1] * 1e6, f * n * 4 / t[1] / 1e9, t[2] * 1e6,
                   f * n * 2 / t[2] / 1e9);
        }
    }
    /* Overlap: a 64 MiB all-reduce posted before 200 ms of "backward" (a spin on the clock),
     * with and without lmf_comm_progress every ~1 ms; then the wait that remains. */
    for (int with_progress = 0; with_progress < 2; with_progress++) {
        lmf_comm_req *r;
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        lmf_comm_iallreduce(c, x, (size_t)1 << 24, LMF_F32, LMF_REDUCE_SUM, &r);
        double next = t0;
        while (MPI_Wtime() - t0 < 0.2)
            if (with_progress && MPI_Wtime() >= next) {
                lmf_comm_progress(c);
                next += 1e-3;
            }
        double t1 = MPI_Wtime();
        lmf_comm_wait(&r);
        if (R == 0)
            printf("overlap, 64 MiB all-reduce behind 200 ms of compute, %s: wait after compute "
                   "%.1f ms\n",
                   with_progress ? "lmf_comm_progress every 1 ms" : "no MPI calls while computing",
                   (MPI_Wtime() - t1) * 1e3);
    }
    lmf_free(x);
    lmf_comm_free(c);
    return 0;
}
