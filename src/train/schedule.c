/* Learning-rate schedules as transformers 4.46's get_scheduler builds them (LambdaLR over the
 * optimizer step count), including its warmup rounding, so lr at every step matches a
 * Hugging Face / LLaMA-Factory run to the last bit of double arithmetic. */
#include "lmforge/optim.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    lmf_schedule_kind kind;
} kinds[] = {
    {"linear", LMF_SCHED_LINEAR},
    {"cosine", LMF_SCHED_COSINE},
    {"constant", LMF_SCHED_CONSTANT},
    {"constant_with_warmup", LMF_SCHED_CONSTANT_WITH_WARMUP},
    {"cosine_with_min_lr", LMF_SCHED_COSINE_WITH_MIN_LR},
};

int lmf_schedule_init(lmf_schedule *s, const char *type, double base_lr, int64_t total_steps,
                      int64_t warmup_steps, double min_lr_rate) {
    memset(s, 0, sizeof *s);
    size_t k = 0, n_kinds = sizeof kinds / sizeof kinds[0];
    while (k < n_kinds && strcmp(kinds[k].name, type) != 0) k++;
    if (k == n_kinds)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "lr_scheduler_type: \"%s\" is not supported (use linear, cosine, "
                          "constant, constant_with_warmup or cosine_with_min_lr)",
                          type);
    if (!(base_lr >= 0 && isfinite(base_lr)))
        return lmf_errorf(LMF_ERANGE, "learning_rate: %g must be finite and >= 0", base_lr);
    if (total_steps < 0)
        return lmf_errorf(LMF_ERANGE, "lr schedule: %lld total steps is negative",
                          (long long)total_steps);
    if (warmup_steps < 0)
        return lmf_errorf(LMF_ERANGE, "warmup_steps: %lld is negative", (long long)warmup_steps);
    if (!(min_lr_rate >= 0 && min_lr_rate <= 1))
        return lmf_errorf(LMF_ERANGE, "lr_scheduler_kwargs.min_lr_rate: %g is outside [0, 1]",
                          min_lr_rate);
    /* transformers passes scheduler kwargs to the schedule function, which refuses min_lr_rate
     * for every type but cosine_with_min_lr: refuse rather than ignore it. */
    if (min_lr_rate != 0 && kinds[k].kind != LMF_SCHED_COSINE_WITH_MIN_LR)
        return lmf_errorf(LMF_EINVAL,
                          "lr_scheduler_kwargs.min_lr_rate: only cosine_with_min_lr takes it, "
                          "not %s",
                          type);
    s->kind = kinds[k].kind;
    s->base_lr = base_lr;
    s->total_steps = total_steps;
    s->warmup_steps = warmup_steps;
    s->min_lr_rate = min_lr_rate;
    return 0;
}

static double max1(int64_t x) {
    return (double)(x > 1 ? x : 1);
}

/* The lr_lambda functions of transformers/optimization.py, with their float conversions. */
static double lambda(const lmf_schedule *s, int64_t step) {
    const int64_t w = s->warmup_steps, total = s->total_steps;
    if (s->kind == LMF_SCHED_CONSTANT) return 1.0;
    if (step < w) return (double)step / max1(w);
    switch (s->kind) {
    case LMF_SCHED_LINEAR: {
        double f = (double)(total - step) / max1(total - w);
        return f > 0.0 ? f : 0.0;
    }
    case LMF_SCHED_COSINE:
    case LMF_SCHED_COSINE_WITH_MIN_LR: {
        /* num_cycles = 0.5: cos(pi * 0.5 * 2.0 * progress), evaluated in that order. */
        double progress = (double)(step - w) / max1(total - w);
        double f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
        f = f * (1 - s->min_lr_rate) + s->min_lr_rate; /* exact no-op for plain cosine (rate 0) */
        return f > 0.0 ? f : 0.0;
    }
    default:
        return 1.0; /* constant_with_warmup after warmup */
    }
}

double lmf_schedule_lr(const lmf_schedule *s, int64_t step) {
    return s->base_lr * lambda(s, step);
}

int64_t lmf_warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t total) {
    if (warmup_steps > 0) return warmup_steps;
    return (int64_t)ceil((double)total * warmup_ratio);
}
