/* The eval loop: the eval set in order, per_device_eval_batch_size rows a batch, forward only
 * (no dropout). The loss is the mean over every labelled token of the set (a token-weighted
 * mean, so the perplexity exp(loss) is the set's true per-token perplexity; transformers'
 * Trainer averages batch means instead, which differs when batches hold unequal token
 * counts). */
#include <math.h>

#include "trainer_internal.h"

int trainer_evaluate(trainer *t, eval_result *r) {
    *r = (eval_result){0};
    const row_set *s = &t->eval;
    if (s->n == 0) return lmf_errorf(LMF_EINVAL, "evaluation: the eval set is empty");
    double t0 = lmf_time_sec(), sum = 0;
    int B = t->o->eval_batch_size;
    double saved_denom = t->m->loss_denom;
    t->m->loss_denom = 0;
    int rc = 0;
    for (int64_t first = 0; first < s->n && !rc; first += B) {
        int64_t idx[1024];
        int nb = (int)(s->n - first < B ? s->n - first : B);
        for (int i = 0; i < nb; i++) idx[i] = first + i;
        lmf_batch b;
        int64_t tokens, nt = 0;
        trainer_fill_batch(t, s, idx, nb, &b, &tokens);
        trainer_dump_batch("LMF_EVAL_DUMP_BATCHES", t->step, (int)r->batches, &b);
        double mean = 0;
        rc = lmf_model_forward(t->m, &b, 0, &mean, &nt, NULL, NULL);
        sum += mean * (double)nt;
        r->targets += nt;
        r->samples += nb;
        r->batches++;
    }
    t->m->loss_denom = saved_denom;
    if (rc) return lmf_error_prefix(rc, "evaluation");
    r->loss = r->targets ? sum / (double)r->targets : 0.0;
    r->perplexity = exp(r->loss);
    r->runtime = lmf_time_sec() - t0;
    return 0;
}
