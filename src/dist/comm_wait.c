/* Requests of lmf_comm: creation, completion (with the LMF_REDUCE_AVG finishing step), and the
 * timed polling wait. Waiting polls MPI_Testall, spinning briefly and then sleeping with a
 * growing (capped) pause so that a waiting rank leaves its core to compute threads; the cap
 * stays small because OpenMPI only moves data inside MPI calls. Past a request's deadline the
 * timeout path in comm_diag.c takes over. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"
#include "lmforge/core.h"

/* Polling: spin this long after posting/entering a wait, then sleep from POLL_MIN_NS, doubling
 * up to POLL_MAX_NS between tests. */
#define SPIN_NS     50000.0
#define POLL_MIN_NS 2000L
#define POLL_MAX_NS 200000L

double comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *comm_op_name(int op) {
    static const char *names[OP_COUNT] = {"all-reduce", "reduce-scatter", "all-gather",
                                          "broadcast",  "barrier",        "gather"};
    return op >= 0 && op < OP_COUNT ? names[op] : "collective";
}

lmf_comm_req *comm_req_new(lmf_comm *c, int op, size_t bytes, int nmr) {
    lmf_comm_req *r = calloc(1, sizeof *r);
    if (!r) {
        lmf_errorf(LMF_ENOMEM, "comm \"%s\": %s request", c->name, comm_op_name(op));
        return NULL;
    }
    r->mr = nmr <= 2 ? r->inline_mr : malloc((size_t)nmr * sizeof(MPI_Request));
    if (!r->mr) {
        free(r);
        lmf_errorf(LMF_ENOMEM, "comm \"%s\": %s request", c->name, comm_op_name(op));
        return NULL;
    }
    for (int i = 0; i < nmr; i++) r->mr[i] = MPI_REQUEST_NULL;
    r->c = c;
    r->op = op;
    r->nmr = nmr;
    r->bytes = bytes;
    r->seq = ++c->seq;
    r->posted = comm_now();
    r->deadline = r->posted + c->timeout_s;
    r->next = c->active;
    if (c->active) c->active->prev = r;
    c->active = r;
    return r;
}

void comm_req_release(lmf_comm_req *r) {
    lmf_comm *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->active = r->next;
    if (r->next) r->next->prev = r->prev;
    if (r->mr != r->inline_mr) free(r->mr);
    free(r->vcounts);
    free(r);
}

static void finish(lmf_comm_req *r) {
    r->done = 1;
    if (!r->scale_buf) return;
    if (r->scale_t == LMF_F32) {
        float *f = r->scale_buf;
        for (size_t i = 0; i < r->scale_count; i++) f[i] *= r->scale;
    } else {
        uint16_t *h = r->scale_buf;
        for (size_t i = 0; i < r->scale_count; i++)
            h[i] = lmf_f32_to_bf16(lmf_bf16_to_f32(h[i]) * r->scale);
    }
}

/* One non-blocking look at r: 1 when complete, 0 when not, < 0 on an MPI error. */
static int poll_once(lmf_comm_req *r) {
    if (r->done) return 1;
    int flag = 1;
    if (r->nmr) {
        int rc = MPI_Testall(r->nmr, r->mr, &flag, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return comm_mpi_error(rc, comm_op_name(r->op), r->c);
    }
    if (flag) finish(r);
    return flag;
}

static void check_deadline(lmf_comm_req *r, double now) {
    if (!r->done && now > r->deadline) comm_timeout_abort(r, now - r->posted);
}

int lmf_comm_wait(lmf_comm_req **req) {
    lmf_comm_req *r = *req;
    if (!r) return 0;
    comm_world *w = r->c->w;
    if (w) comm_diag_set(w, DIAG_WAITING, r);
    double start = comm_now();
    long pause = POLL_MIN_NS;
    int rc;
    while ((rc = poll_once(r)) == 0) {
        double now = comm_now();
        check_deadline(r, now);
        if (w) comm_diag_service(w);
        if ((now - start) * 1e9 < SPIN_NS) continue;
        struct timespec ts = {0, pause};
        nanosleep(&ts, NULL);
        pause = pause * 2 > POLL_MAX_NS ? POLL_MAX_NS : pause * 2;
    }
    if (w) comm_diag_set(w, DIAG_IDLE, NULL);
    comm_req_release(r);
    *req = NULL;
    return rc < 0 ? rc : 0;
}

int lmf_comm_test(lmf_comm_req **req, int *done) {
    *done = 1;
    lmf_comm_req *r = *req;
    if (!r) return 0;
    int rc = poll_once(r);
    if (r->c->w) comm_diag_service(r->c->w);
    if (rc == 0) {
        *done = 0;
        check_deadline(r, comm_now());
        return 0;
    }
    comm_req_release(r);
    *req = NULL;
    return rc < 0 ? rc : 0;
}

int lmf_comm_waitall(lmf_comm_req **reqs, size_t n) {
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = lmf_comm_wait(&reqs[i]);
        if (rc && !first) first = rc;
    }
    return first;
}

int lmf_comm_progress(lmf_comm *c) {
    int pending = 0;
    double now = comm_now();
    for (lmf_comm_req *r = c->active; r; r = r->next) {
        int rc = poll_once(r);
        if (rc < 0) return rc;
        if (!rc) {
            pending++;
            check_deadline(r, now);
        }
    }
    if (c->w) comm_diag_service(c->w);
    return pending;
}
