/* The collectives of a tensor-parallel shard (lmf_tp_comm in tensor_parallel.h) over an
 * lmf_comm: the model layer calls these hooks and never lmf_comm itself.
 *
 * A decode token makes 1 + 2 x layers small all-reduces in a row, each on the critical path of
 * every rank. lmf_comm_wait sleeps between its tests once 50 us have passed (it is made for
 * training, where a waiting rank leaves its core to compute threads), and those sleeps grow
 * to 200 us: here they would add up to more than the compute. These waits test and yield
 * instead (sched_yield: the core goes to whoever is runnable, else the test runs again at
 * once). The timeout and its diagnosis stay lmf_comm's (lmf_comm_test enforces them). */
#include <sched.h>

#include "lmforge/comm.h"
#include "lmforge/tensor_parallel.h"

static int wait_yield(lmf_comm_req **r) {
    int done = 0, rc;
    while (!(rc = lmf_comm_test(r, &done)) && !done) sched_yield();
    return rc;
}

static int allreduce_sum(void *user, float *buf, size_t count) {
    lmf_comm_req *r;
    int rc = lmf_comm_iallreduce(user, buf, count, LMF_F32, LMF_REDUCE_SUM, &r);
    return rc ? rc : wait_yield(&r);
}

static int gather(void *user, const float *part, const size_t *counts, float *out) {
    lmf_comm_req *r;
    int rc = lmf_comm_igatherv(user, part, out, counts, LMF_F32, 0, &r);
    return rc ? rc : wait_yield(&r);
}

void lmf_tp_comm_over(lmf_tp_comm *hooks, lmf_comm *c) {
    hooks->user = c;
    hooks->allreduce_sum = allreduce_sum;
    hooks->gather = gather;
}
