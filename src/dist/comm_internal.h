/* Private state of the MPI communication layer (src/dist/comm*.c): the communicator, its
 * requests, and the per-process "world" record shared by a world and its sub-communicators
 * (the diagnostic channel used to name a dead or stuck rank when a collective times out). */
#ifndef LMF_COMM_INTERNAL_H
#define LMF_COMM_INTERNAL_H

#include <mpi.h>
#include <stdint.h>

#include "lmforge/comm.h"

enum comm_op {
    OP_ALLREDUCE,
    OP_REDUCE_SCATTER,
    OP_ALLGATHER,
    OP_BROADCAST,
    OP_BARRIER,
    OP_GATHER,
    OP_COUNT
};
const char *comm_op_name(int op);

#define DIAG_SLOTS 16
#define DIAG_NAME  40

/* What this process answers when a timed-out peer asks what it is doing. */
typedef struct diag_answer {
    int32_t state; /* DIAG_IDLE, DIAG_WAITING, DIAG_TIMED_OUT */
    int32_t op;
    int64_t seq;
    double since_s; /* seconds in this state */
    char comm[DIAG_NAME];
} diag_answer;
enum { DIAG_IDLE, DIAG_WAITING, DIAG_TIMED_OUT };

typedef struct comm_world {
    MPI_Comm diag; /* dup of MPI_COMM_WORLD for diagnostic questions and answers */
    int rank, size, owns_mpi;
    diag_answer now; /* this process's current state */
    double now_since;
    diag_answer slot[DIAG_SLOTS]; /* answers in flight */
    MPI_Request slot_req[DIAG_SLOTS];
    MPI_Op bf16_sum;
} comm_world;

struct lmf_comm {
    int use_mpi;
    MPI_Comm mc;      /* MPI_COMM_NULL for a world of one */
    comm_world *w;    /* owned by the world communicator; NULL for a world of one */
    lmf_comm *parent; /* NULL for the world */
    int rank, size, local_rank, local_size, nodes;
    int *world_ranks; /* world rank of each rank of this communicator */
    char name[DIAG_NAME];
    double timeout_s;
    size_t max_piece;
    int64_t seq;          /* collectives posted */
    int nsplits;          /* splits made (names the children) */
    int children;         /* live sub-communicators */
    lmf_comm_req *active; /* outstanding requests (doubly linked) */
};

struct lmf_comm_req {
    lmf_comm *c;
    int op, done;
    int64_t seq;
    size_t bytes;
    double posted, deadline;
    int nmr;
    MPI_Request *mr, inline_mr[2];
    /* finishing step for LMF_REDUCE_AVG: buf[0..count) *= scale */
    void *scale_buf;
    size_t scale_count;
    lmf_dtype scale_t;
    float scale;
    int *vcounts; /* counts then displacements of a v-collective (MPI reads them until done) */
    lmf_comm_req *prev, *next;
};

double comm_now(void);
/* A new request linked into c's list (nmr MPI requests, all MPI_REQUEST_NULL). */
lmf_comm_req *comm_req_new(lmf_comm *c, int op, size_t bytes, int nmr);
void comm_req_release(lmf_comm_req *r);
/* Answers pending diagnostic questions (no-op for a world of one). */
void comm_diag_service(comm_world *w);
void comm_diag_set(comm_world *w, int state, const lmf_comm_req *r);
/* Prints which peers answer and what they do, then MPI_Abort(LMF_COMM_EXIT_TIMEOUT). */
_Noreturn void comm_timeout_abort(lmf_comm_req *r, double waited);
int comm_mpi_error(int rc, const char *what, const lmf_comm *c);

#endif
