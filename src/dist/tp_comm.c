/* The collectives of a tensor-parallel shard (lmf_tp_comm in tensor_parallel.h) over an
 * lmf_comm: the model layer calls these hooks and never lmf_comm itself. */
#include "lmforge/comm.h"
#include "lmforge/tensor_parallel.h"

static int allreduce_sum(void *user, float *buf, size_t count) {
    return lmf_comm_allreduce(user, buf, count, LMF_F32, LMF_REDUCE_SUM);
}

static int gather(void *user, const float *part, const size_t *counts, float *out) {
    return lmf_comm_gatherv(user, part, out, counts, LMF_F32, 0);
}

void lmf_tp_comm_over(lmf_tp_comm *hooks, lmf_comm *c) {
    hooks->user = c;
    hooks->allreduce_sum = allreduce_sum;
    hooks->gather = gather;
}
