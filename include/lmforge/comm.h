/* lmf_comm: the collective-communication layer used by distributed training and serving.
 *
 * Backend: MPI (Debian's OpenMPI). Outside a launcher (no mpirun / srun / PMI environment)
 * lmf_comm_init gives a "world of one" that never touches MPI: every collective is a local copy.
 *
 * Every collective has a non-blocking form (lmf_comm_i*) that returns a request; the blocking
 * form is the non-blocking one followed by lmf_comm_wait. Waiting is a polling loop (MPI_Test
 * plus short sleeps, so a waiting rank leaves its core to the compute threads) with a deadline:
 * a collective not finished `timeout_s` (ddp_timeout, default 1800 s) after it was posted means
 * a peer is dead or stuck. The timed-out rank then asks every peer of the communicator what it
 * is doing (a small message answered by any peer that is inside an lmf_comm call), prints
 *   lmforge: rank 1/4: all-reduce #57 on "world" (4194304 bytes) timed out after 5.0 s
 *   (ddp_timeout): rank 2 did not answer (dead, or stuck outside communication); ...
 * and aborts the job with MPI_Abort(LMF_COMM_EXIT_TIMEOUT): mpirun then kills every rank and
 * exits non-zero. This is lmforge's one documented abort path below the CLI.
 *
 * Progress: OpenMPI only moves a non-blocking collective forward inside MPI calls. Code that
 * overlaps communication with computation (DDP buckets during backward) should call
 * lmf_comm_progress() between pieces of work (e.g. after each layer's backward); it also lets
 * this rank answer a timed-out peer's question.
 *
 * Threads: all calls on a communicator from one thread at a time (MPI_THREAD_SERIALIZED).
 * Counts are elements of `dtype`; buffers are the caller's and must stay valid and untouched
 * until the request completes. Every rank of a communicator must post the same collectives in
 * the same order with the same counts. */
#ifndef LMFORGE_COMM_H
#define LMFORGE_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "lmforge/tensor.h"

#define LMF_COMM_DEFAULT_TIMEOUT_S 1800.0
/* Exit status of every rank when a collective times out (MPI_Abort's error code). */
#define LMF_COMM_EXIT_TIMEOUT 14
/* After that abort, a launcher (mpirun) still running this many seconds later is SIGKILLed (its
 * teardown can deadlock; see docs/distributed.md). LMF_COMM_ABORT_GRACE in the environment
 * overrides it. */
#define LMF_COMM_ABORT_GRACE_S 30.0

typedef struct lmf_comm lmf_comm;
typedef struct lmf_comm_req lmf_comm_req;

typedef enum lmf_reduce_op { LMF_REDUCE_SUM, LMF_REDUCE_AVG } lmf_reduce_op;

typedef struct lmf_comm_options {
    double timeout_s; /* ddp_timeout in seconds; <= 0: LMF_COMM_DEFAULT_TIMEOUT_S */
    int force_mpi;    /* 1: initialise MPI even without a launcher (an MPI singleton) */
} lmf_comm_options;

/* Starts the world communicator. opts may be NULL (defaults). Uses MPI when a launcher is
 * detected (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK, SLURM_PROCID with SLURM_NTASKS > 1) or
 * MPI is already initialised or force_mpi is set; otherwise a world of one. MPI can be
 * initialised only once per process: after lmf_comm_free(world) no new MPI world can start. */
int lmf_comm_init(lmf_comm **world, const lmf_comm_options *opts);
/* Frees a communicator. Sub-communicators first, the world last (it finalises MPI if
 * lmf_comm_init initialised it). Outstanding requests are an error (LMF_EINVAL, nothing freed). */
int lmf_comm_free(lmf_comm *c);

int lmf_comm_rank(const lmf_comm *c);
int lmf_comm_size(const lmf_comm *c);
/* Rank and size among the ranks of c on this node (MPI_Comm_split_type SHARED). */
int lmf_comm_local_rank(const lmf_comm *c);
int lmf_comm_local_size(const lmf_comm *c);
/* Number of nodes c spans (ranks with local rank 0). */
int lmf_comm_node_count(const lmf_comm *c);
/* This rank in the world communicator (what messages name). */
int lmf_comm_world_rank(const lmf_comm *c);
const char *lmf_comm_name(const lmf_comm *c); /* "world", "world.0:1" (split 0, color 1) */
int lmf_comm_uses_mpi(const lmf_comm *c);
double lmf_comm_timeout(const lmf_comm *c);
/* Changes the timeout for collectives posted from now on (also on c's later splits). */
void lmf_comm_set_timeout(lmf_comm *c, double seconds);

/* Sub-communicator of the ranks that pass the same color (>= 0), ordered by key then by rank
 * in c; color < 0: this rank joins none and *out is NULL. Collective over c (guarded by the
 * timeout: a barrier runs first, so a dead peer is reported, not waited for). */
int lmf_comm_split(lmf_comm *c, int color, int key, lmf_comm **out);

/* ---- non-blocking collectives: each returns 0 and a request, or an error (nothing posted) --
 * Reductions take LMF_F32 or LMF_BF16. bf16 sums use a custom MPI operation that, at every
 * pairwise combination inside MPI's algorithm, converts both operands to f32, adds, and rounds
 * to nearest even: the same bytes on the wire as the input, one rounding per combination.
 * For P ranks the error is at most (P-1) * 2^-8 * sum_i |x_i| per element (first order).
 * LMF_REDUCE_AVG sums, then multiplies by 1/P in f32 (one more rounding for bf16). All ranks
 * receive bit-identical results. */

/* buf (count elements) := op over ranks of buf. */
int lmf_comm_iallreduce(lmf_comm *c, void *buf, size_t count, lmf_dtype t, lmf_reduce_op op,
                        lmf_comm_req **req);
/* Reduce-scatter in equal chunks. send holds P * chunk elements laid out rank-major: elements
 * [r * chunk, (r + 1) * chunk) are the part destined for rank r. recv (chunk elements) :=
 * op over ranks of their part for this rank. recv == send works in place: the result is
 * written to the first chunk of the buffer. chunk <= INT_MAX. */
int lmf_comm_ireduce_scatter(lmf_comm *c, const void *send, void *recv, size_t chunk, lmf_dtype t,
                             lmf_reduce_op op, lmf_comm_req **req);
/* All-gather in equal chunks: recv (P * chunk elements) := the ranks' send buffers, rank r's at
 * [r * chunk, (r + 1) * chunk). send == recv + rank * chunk works in place. chunk <= INT_MAX.
 * Any dtype. */
int lmf_comm_iallgather(lmf_comm *c, const void *send, void *recv, size_t chunk, lmf_dtype t,
                        lmf_comm_req **req);
/* Variable-size forms (ZeRO's shards of a unit that does not split evenly). counts[r] is rank
 * r's part; the parts lie back to back in rank order. All-gather: recv (sum of counts
 * elements) := the parts, rank r's from its send (send == recv + this rank's displacement works
 * in place). Reduce-scatter: send holds every rank's part back to back; recv (counts[rank]
 * elements, not overlapping send) := op over ranks of this rank's part. Each count <= INT_MAX
 * and the total too. */
int lmf_comm_iallgatherv(lmf_comm *c, const void *send, void *recv, const size_t *counts,
                         lmf_dtype t, lmf_comm_req **req);
int lmf_comm_ireduce_scatterv(lmf_comm *c, const void *send, void *recv, const size_t *counts,
                              lmf_dtype t, lmf_reduce_op op, lmf_comm_req **req);
/* Gather to one rank: on root, recv (sum of counts elements) := the ranks' parts back to back in
 * rank order, rank r's counts[r] elements from its send; recv is not read on the other ranks
 * (may be NULL there). send must not overlap recv. Any dtype. Counts as for the v-forms. */
int lmf_comm_igatherv(lmf_comm *c, const void *send, void *recv, const size_t *counts, lmf_dtype t,
                      int root, lmf_comm_req **req);
int lmf_comm_gatherv(lmf_comm *c, const void *send, void *recv, const size_t *counts, lmf_dtype t,
                     int root);
/* Sum of doubles over ranks, in place (norms and other statistics that f32 would round). */
int lmf_comm_iallreduce_f64(lmf_comm *c, double *buf, size_t count, lmf_comm_req **req);
int lmf_comm_allreduce_f64(lmf_comm *c, double *buf, size_t count);
/* buf (bytes) on every rank := root's buf. */
int lmf_comm_ibroadcast(lmf_comm *c, void *buf, size_t bytes, int root, lmf_comm_req **req);
int lmf_comm_ibarrier(lmf_comm *c, lmf_comm_req **req);

/* Waits for a request (until its deadline; past it, the timeout path above) and frees it;
 * *req becomes NULL. A NULL *req returns 0 at once. */
int lmf_comm_wait(lmf_comm_req **req);
/* *done := 1 and the request freed (*req = NULL) if it has completed, else *done := 0. */
int lmf_comm_test(lmf_comm_req **req, int *done);
/* Waits for n requests in any order of completion. */
int lmf_comm_waitall(lmf_comm_req **reqs, size_t n);
/* Moves c's outstanding requests forward without blocking, answers peers' diagnostic
 * questions, and enforces deadlines. Returns the number of requests still in flight. Cheap
 * (a few microseconds): call it between layers while overlapping. */
int lmf_comm_progress(lmf_comm *c);

/* ---- blocking forms: post + wait ---- */
int lmf_comm_allreduce(lmf_comm *c, void *buf, size_t count, lmf_dtype t, lmf_reduce_op op);
int lmf_comm_reduce_scatter(lmf_comm *c, const void *send, void *recv, size_t chunk, lmf_dtype t,
                            lmf_reduce_op op);
int lmf_comm_allgather(lmf_comm *c, const void *send, void *recv, size_t chunk, lmf_dtype t);
int lmf_comm_broadcast(lmf_comm *c, void *buf, size_t bytes, int root);
int lmf_comm_barrier(lmf_comm *c);

/* Tuning and tests: the most elements (bytes for broadcast) one MPI call carries; all-reduce
 * and broadcast larger than this are split into several MPI calls under one request.
 * Default and maximum 1 << 30; 0 means 1. */
void lmf_comm_set_max_piece(lmf_comm *c, size_t elements);

/* Tensor parallelism (tensor_parallel.h): fills a shard model's collective hooks with c's
 * all-reduce (f32 sum) and gather to rank 0 (tp_comm.c). c must outlive the shard. */
struct lmf_tp_comm;
void lmf_tp_comm_over(struct lmf_tp_comm *hooks, lmf_comm *c);

/* The MPI library's version line ("Open MPI v4.1.4, ..."), without initialising MPI. */
void lmf_comm_library_version(char *out, size_t n);

#endif
