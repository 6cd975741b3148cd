/* The timeout path of lmf_comm: naming the dead or stuck rank(s), then aborting the job.
 *
 * Every process answers questions on a private duplicate of MPI_COMM_WORLD whenever it is
 * inside an lmf_comm call (a wait, a test, lmf_comm_progress). A rank whose collective passes
 * its deadline sends a question to every other member of the communicator, collects answers for
 * a short grace period, and reports: peers that did not answer (dead, or stuck in computation
 * and never entering communication), and what the others are doing (waiting in the same
 * collective, or in a different one: a mismatched order). Then MPI_Abort, so mpirun ends every
 * rank and exits non-zero. Nothing is sent in the normal path: the cost is one MPI_Iprobe per
 * poll. */
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm_internal.h"
#include "lmforge/core.h"

#define TAG_QUESTION 7001
#define TAG_ANSWER   7002

void comm_diag_set(comm_world *w, int state, const lmf_comm_req *r) {
    w->now.state = state;
    w->now.op = r ? r->op : -1;
    w->now.seq = r ? r->seq : 0;
    snprintf(w->now.comm, sizeof w->now.comm, "%s", r ? r->c->name : "");
    w->now_since = comm_now();
}

void comm_diag_service(comm_world *w) {
    for (;;) {
        int flag = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, TAG_QUESTION, w->diag, &flag, &st) != MPI_SUCCESS || !flag)
            return;
        int32_t q = 0;
        MPI_Recv(&q, 1, MPI_INT32_T, st.MPI_SOURCE, TAG_QUESTION, w->diag, MPI_STATUS_IGNORE);
        int slot = -1;
        for (int i = 0; i < DIAG_SLOTS && slot < 0; i++) {
            int done = 1;
            if (w->slot_req[i] != MPI_REQUEST_NULL)
                MPI_Test(&w->slot_req[i], &done, MPI_STATUS_IGNORE);
            if (done) slot = i;
        }
        if (slot < 0) continue; /* every answer slot busy: this question goes unanswered */
        w->slot[slot] = w->now;
        w->slot[slot].since_s = comm_now() - w->now_since;
        MPI_Isend(&w->slot[slot], (int)sizeof(diag_answer), MPI_BYTE, st.MPI_SOURCE, TAG_ANSWER,
                  w->diag, &w->slot_req[slot]);
    }
}

/* Appends printf-style text to buf (bounded). */
static void add(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add(char *buf, size_t n, const char *fmt, ...) {
    size_t k = strlen(buf);
    if (k + 1 >= n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + k, n - k, fmt, ap);
    va_end(ap);
}

/* OpenMPI 4.1.4's mpirun sometimes deadlocks in its own teardown after MPI_Abort (in
 * PMIx_server_finalize, every rank already exited; seen once in ~40 aborts here, and always when
 * a node is unreachable). A forked watchdog that holds no MPI state and none of mpirun's pipes
 * SIGKILLs the rank's parent (mpirun, or orted on another node, whose loss ends mpirun) if it is
 * still alive `grace` seconds later, and quits as soon as the parent is gone. Only under
 * OpenMPI's launcher: under srun the parent is slurmstepd, which is never ours to kill. */
/* The watchdog must leave the rank's process group before the rank aborts: OpenMPI signals a
 * rank's whole process group when it kills the job, and a watchdog still in it dies with the
 * rank (a race lost under load: mpirun then hung ~28 s after a cut cable instead of being
 * killed after the grace). So the rank waits (at most 2 s) for the watchdog's setsid. */
static void arm_launcher_watchdog(double grace) {
    if (!getenv("OMPI_COMM_WORLD_SIZE")) return;
    pid_t parent = getppid();
    int ready[2];
    if (parent <= 1 || pipe(ready)) return;
    pid_t pid = fork();
    if (pid != 0) {
        close(ready[1]);
        struct pollfd pf = {ready[0], POLLIN, 0};
        if (pid > 0) poll(&pf, 1, 2000);
        close(ready[0]);
        return;
    }
    setsid();
    close(ready[0]);
    close(ready[1]); /* the rank's poll sees the end of the pipe: we are out of its group */
    int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; fd++) dup2(null, fd); /* mpirun must not wait for our pipes */
    for (long i = 0; i < (long)(grace * 10); i++) {
        if (kill(parent, 0) != 0) _exit(0); /* gone: nothing to do */
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    kill(parent, SIGKILL);
    _exit(0);
}

_Noreturn void comm_timeout_abort(lmf_comm_req *r, double waited) {
    lmf_comm *c = r->c;
    comm_world *w = c->w;
    comm_diag_set(w, DIAG_TIMED_OUT, r);
    int n = c->size;
    /* Grace period for answers: peers poll every <= 0.2 ms while waiting. */
    double grace = c->timeout_s / 10;
    grace = grace < 0.5 ? 0.5 : grace > 10 ? 10 : grace;
    diag_answer ans[n];
    MPI_Request rq[n], sq[n];
    int got[n];
    int32_t question = w->rank;
    for (int i = 0; i < n; i++) {
        got[i] = i == c->rank;
        rq[i] = sq[i] = MPI_REQUEST_NULL;
        if (got[i]) continue;
        MPI_Irecv(&ans[i], (int)sizeof(diag_answer), MPI_BYTE, c->world_ranks[i], TAG_ANSWER,
                  w->diag, &rq[i]);
        MPI_Isend(&question, 1, MPI_INT32_T, c->world_ranks[i], TAG_QUESTION, w->diag, &sq[i]);
    }
    double end = comm_now() + grace;
    int missing = n - 1;
    while (missing > 0 && comm_now() < end) {
        for (int i = 0; i < n; i++) {
            if (got[i]) continue;
            int flag = 0;
            if (MPI_Test(&rq[i], &flag, MPI_STATUS_IGNORE) == MPI_SUCCESS && flag) {
                got[i] = 1;
                missing--;
            }
        }
        comm_diag_service(w); /* a peer timing out too is asking us */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    char msg[4096] = "";
    add(msg, sizeof msg, "lmforge: rank %d/%d: %s #%lld on \"%s\"", w->rank, w->size,
        comm_op_name(r->op), (long long)r->seq, c->name);
    if (c->parent) add(msg, sizeof msg, " (rank %d/%d there)", c->rank, c->size);
    add(msg, sizeof msg, " (%zu bytes) timed out after %.1f s (ddp_timeout): ", r->bytes, waited);
    if (missing) {
        add(msg, sizeof msg, "rank%s", missing > 1 ? "s" : "");
        int k = 0;
        for (int i = 0; i < n; i++)
            if (!got[i]) add(msg, sizeof msg, "%s%d", k++ ? "," : " ", c->world_ranks[i]);
        add(msg, sizeof msg, " did not answer within %.1f s (dead, or stuck outside communication)",
            grace);
    } else {
        add(msg, sizeof msg, "every peer answered");
    }
    for (int i = 0; i < n; i++) {
        if (i == c->rank || !got[i]) continue;
        diag_answer *a = &ans[i];
        a->comm[DIAG_NAME - 1] = 0;
        int same = a->op == r->op && a->seq == r->seq && !strcmp(a->comm, c->name);
        if (a->state == DIAG_IDLE)
            add(msg, sizeof msg, "; rank %d is not in a collective (between calls)",
                c->world_ranks[i]);
        else if (a->state == DIAG_TIMED_OUT)
            add(msg, sizeof msg, "; rank %d also timed out in %s #%lld on \"%s\"%s",
                c->world_ranks[i], comm_op_name(a->op), (long long)a->seq, a->comm,
                same ? "" : " (a different collective: mismatched order across ranks)");
        else
            add(msg, sizeof msg, "; rank %d waits in %s #%lld on \"%s\" for %.1f s%s",
                c->world_ranks[i], comm_op_name(a->op), (long long)a->seq, a->comm, a->since_s,
                same ? "" : " (a different collective: mismatched order across ranks)");
    }
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
    const char *g = getenv("LMF_COMM_ABORT_GRACE"); /* seconds; tests shorten it */
    arm_launcher_watchdog(g && atof(g) > 0 ? atof(g) : LMF_COMM_ABORT_GRACE_S);
    MPI_Abort(MPI_COMM_WORLD, LMF_COMM_EXIT_TIMEOUT);
    for (;;) { /* MPI_Abort does not return; never fall through if it did */
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
}
