/* The tensor-parallel parts of a decode step (tp_internal.h): the vocabulary-split embedding,
 * the all-reduces of the o and down products' partial sums, and the gather of the logits'
 * vocabulary blocks to rank 0, each timed into m->tp->stats. */
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "tp_internal.h"

static int no_hooks(void) {
    return lmf_errorf(LMF_EINVAL, "tensor parallel: the shard has no communication hooks");
}

int lmf_tp_allreduce(lmf_model *m, float *buf, size_t count) {
    lmf_tp *tp = m->tp;
    if (tp->size == 1) return 0;
    if (!tp->comm.allreduce_sum) return no_hooks();
    double t0 = lmf_time_sec();
    int rc = tp->comm.allreduce_sum(tp->comm.user, buf, count);
    tp->stats.allreduce_s += lmf_time_sec() - t0;
    tp->stats.allreduces++;
    tp->stats.allreduce_bytes += (double)count * sizeof(float);
    return rc;
}

void lmf_tp_reduce_residual(lmf_model *m, float *partial, float *x, size_t count) {
    int rc = lmf_tp_allreduce(m, partial, count);
    if (rc && !m->tp->err) m->tp->err = rc;
    for (size_t i = 0; i < count; i++) x[i] += partial[i];
}

int lmf_tp_embed(lmf_model *m, float *x, const int32_t *ids, int n) {
    const lmf_tp *tp = m->tp;
    int C = m->cfg.hidden;
    for (int i = 0; i < n; i++) {
        int r = ids[i] - tp->vocab_lo;
        float *row = x + (size_t)i * C;
        if (r >= 0 && r < m->cfg.vocab)
            lmf_model_embed_row(m, r, row);
        else
            memset(row, 0, sizeof(float) * C);
    }
    return lmf_tp_allreduce(m, x, (size_t)n * C);
}

/* Grows *buf to at least n floats. */
static int reserve(float **buf, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    float *p = realloc(*buf, sizeof(float) * n);
    if (!p) return lmf_errorf(LMF_ENOMEM, "tensor parallel: out of memory for %zu logits", n);
    *buf = p, *cap = n;
    return 0;
}

int lmf_tp_step_begin(lmf_model *m, const lmf_seq_step *seqs, int n_seqs, float **head_out) {
    lmf_tp *tp = m->tp;
    int n_out = 0, rc;
    for (int i = 0; i < n_seqs; i++) {
        n_out += seqs[i].want_logits != 0;
        if (seqs[i].lora)
            return lmf_errorf(LMF_EUNSUPPORTED,
                              "step: sequence %d has a LoRA adapter, which a tensor-parallel "
                              "shard does not split",
                              i);
    }
    tp->n_out = n_out, tp->err = 0;
    tp->stats.steps++;
    for (int i = 0; i < n_seqs; i++) tp->stats.rows += seqs[i].n_new;
    *head_out = NULL;
    if (!n_out) return 0;
    if ((rc = reserve(&tp->part, &tp->part_cap, (size_t)n_out * m->cfg.vocab))) return rc;
    if (tp->rank == 0 &&
        (rc = reserve(&tp->gathered, &tp->gathered_cap, (size_t)n_out * tp->full.vocab)))
        return rc;
    *head_out = tp->part;
    return 0;
}

int lmf_tp_step_end(lmf_model *m, float *logits) {
    lmf_tp *tp = m->tp;
    int rc = tp->err, n_out = tp->n_out, V = tp->full.vocab;
    if (rc || !n_out) return rc;
    if (tp->size == 1) {
        if (logits) memcpy(logits, tp->part, sizeof(float) * (size_t)n_out * V);
        return 0;
    }
    if (!tp->comm.gather) return no_hooks();
    for (int r = 0; r < tp->size; r++) tp->counts[r] = (size_t)n_out * tp->vocab_n[r];
    double t0 = lmf_time_sec();
    rc = tp->comm.gather(tp->comm.user, tp->part, tp->counts, tp->gathered);
    tp->stats.gather_s += lmf_time_sec() - t0;
    tp->stats.gathers++;
    if (rc || tp->rank != 0 || !logits) return rc;
    /* rank-major blocks (n_out, vocab_n[r]) -> rows (n_out, V) */
    const float *src = tp->gathered;
    for (int r = 0, lo = 0; r < tp->size; lo += tp->vocab_n[r], r++)
        for (int i = 0; i < n_out; i++, src += tp->vocab_n[r])
            memcpy(logits + (size_t)i * V + lo, src, sizeof(float) * tp->vocab_n[r]);
    return 0;
}
