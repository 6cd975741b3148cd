/* Internal to the inference step (decode.c, decode_fused.c): what a tensor-parallel shard
 * (m->tp != NULL) does beside the ordinary step, in tp_step.c. */
#ifndef LMF_TP_INTERNAL_H
#define LMF_TP_INTERNAL_H

#include "lmforge/tensor_parallel.h"

/* Before the step: counts the rows that want logits and points *head_out at this rank's block
 * of them (n_out, cfg.vocab), which the lm_head product fills; NULL when no row wants logits.
 * Every rank computes its block, whether or not it receives logits. */
int lmf_tp_step_begin(lmf_model *m, const lmf_seq_step *seqs, int n_seqs, float **head_out);
/* x (n, C) := the embeddings of ids: rows of this rank's vocabulary block, zeros for the other
 * ids, all-reduced over the ranks. */
int lmf_tp_embed(lmf_model *m, float *x, const int32_t *ids, int n);
/* buf (count floats) := the sum over the ranks (the partial o and down products). */
int lmf_tp_allreduce(lmf_model *m, float *buf, size_t count);
/* Inside the fused step's region (one thread, the others waiting): partial := its sum over the
 * ranks, then x += partial. A failure is kept in m->tp->err for lmf_tp_step_end. */
void lmf_tp_reduce_residual(lmf_model *m, float *partial, float *x, size_t count);
/* After the step: rank 0's logits (n_out, lmf_model_vocab(m)) from every rank's block. Returns
 * the step's first collective failure, if any. */
int lmf_tp_step_end(lmf_model *m, float *logits);

#endif
