/* A job with a failing rank, driven by test_comm_fault.sh: every rank loops over all-reduces
 * and barriers; at iteration 3 the victim rank either sleeps far beyond the timeout ("stuck"),
 * kills itself with SIGKILL ("kill"), or does the same inside a sub-communicator of the ranks
 * with its parity ("substuck"), or posts a broadcast where the others all-reduce ("mismatch").
 * "none" runs clean; "loop" runs 100 iterations 100 ms apart
 * (for cutting a node's cable from outside). Usage:
 *   comm_fault stuck|kill|substuck|mismatch|none|loop VICTIM TIMEOUT_S */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmforge/comm.h"
#include "lmforge/core.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr,
                "usage: comm_fault stuck|kill|substuck|mismatch|none|loop VICTIM TIMEOUT_S\n");
        return 2;
    }
    const char *mode = argv[1];
    int victim = atoi(argv[2]);
    lmf_comm_options o = {.timeout_s = atof(argv[3])};
    lmf_comm *world, *sub = NULL;
    if (lmf_comm_init(&world, &o)) {
        fprintf(stderr, "comm_fault: %s\n", lmf_last_error());
        return 1;
    }
    int rank = lmf_comm_rank(world);
    if (lmf_comm_split(world, rank % 2, rank, &sub)) return 1;
    lmf_comm *c = strcmp(mode, "substuck") ? world : sub;
    size_t n = 1 << 18;
    float *x = calloc(n, sizeof(float));
    int loop = !strcmp(mode, "loop");
    for (int it = 0; it < (loop ? 100 : 10); it++) {
        if (loop) usleep(100000);
        if (it == 3 && rank == victim) {
            fprintf(stderr, "comm_fault: rank %d: %s now\n", rank, mode);
            if (!strcmp(mode, "kill")) raise(SIGKILL);
            if (!strcmp(mode, "mismatch")) { /* a broadcast where the others all-reduce */
                lmf_comm_broadcast(c, x, 64, 0);
                return 1;
            }
            if (strcmp(mode, "none") && !loop) sleep(600);
        }
        if (lmf_comm_allreduce(c, x, n, LMF_F32, LMF_REDUCE_SUM) || lmf_comm_barrier(c)) {
            fprintf(stderr, "comm_fault: %s\n", lmf_last_error());
            return 1;
        }
    }
    free(x);
    lmf_comm_free(sub);
    lmf_comm_free(world);
    return 0;
}
