/* A tensor-parallel serving group: rank 0 runs the engine (HTTP front, scheduler, sampling) on
 * its shard, and before each model step sends the step (every sequence's tokens, start
 * position, block table and whether it wants logits) to the other ranks, which run the same
 * step on their shards and KV pools until rank 0 says stop. The model step itself
 * communicates through the shard's hooks (tensor_parallel.h); this is the channel that keeps
 * the ranks' steps the same.
 *
 * ctrl carries the steps. A rank > 0 waits on it for as long as the server idles, so give it
 * a timeout longer than any idle time (lmf_comm_set_timeout); the collectives inside a step
 * keep the shard's own communicator and its timeout. */
#ifndef LMFORGE_TP_GROUP_H
#define LMFORGE_TP_GROUP_H

#include "lmforge/comm.h"
#include "lmforge/model.h"

typedef struct lmf_tp_group lmf_tp_group;

/* m: this rank's shard (borrowed). */
int lmf_tp_group_create(lmf_tp_group **out, lmf_comm *ctrl, lmf_model *m);
void lmf_tp_group_free(lmf_tp_group *g);

/* Rank 0: the engine's step (lmf_engine_config.step with step_user = the group): sends the step
 * to the other ranks, then runs it on this rank. A step that fails here after it was sent
 * leaves the other ranks inside it: the group is then broken and every later step fails at
 * once (the other ranks' collectives time out and end the job). */
int lmf_tp_group_step(void *group, lmf_model *m, lmf_kv_pool *kv, const lmf_seq_step *seqs,
                      int n_seqs, float *logits);
/* Rank 0: tells the other ranks to stop (their lmf_tp_group_serve returns 0). */
int lmf_tp_group_stop(lmf_tp_group *g);
/* Ranks > 0: runs the steps rank 0 sends on a KV pool of n_blocks blocks of block_size tokens
 * (the same geometry as rank 0's) until rank 0 stops the group; 0, or the first error. */
int lmf_tp_group_serve(lmf_tp_group *g, int block_size, int n_blocks, lmf_kv_dtype kv_dtype);

#endif
