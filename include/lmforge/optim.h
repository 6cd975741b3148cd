/* Optimizer side of training: AdamW (torch.optim.AdamW semantics), global-norm gradient
 * clipping (torch.nn.utils.clip_grad_norm_) and the learning-rate schedules of transformers'
 * get_scheduler, so a run here follows the same trajectory as a LLaMA-Factory run.
 *
 * Parameters, gradients and both moments are flat f32 buffers of the same layout. What is
 * trained, and with or without weight decay, is described by a segment list (one segment per
 * parameter tensor) built from the model's or the LoRA adapter's lmf_param table. */
#ifndef LMFORGE_OPTIM_H
#define LMFORGE_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "lmforge/core.h"
#include "lmforge/model.h"

/* One trained parameter tensor: floats [offset, offset + numel) of the flat buffers. */
typedef struct lmf_opt_segment {
    size_t offset, numel;
    int decay; /* 1: weight decay applies; 0: bias / norm weight, as Hugging Face's Trainer */
} lmf_opt_segment;

/* Builds one segment per table entry (decay = !is_norm_or_bias), skipping entries whose
 * trainable[i] is 0 when trainable is non-NULL. *out (caller frees with free()) may be NULL
 * when *n_out is 0. Returns 0 or LMF_ENOMEM. */
int lmf_opt_segments_from_params(const lmf_param *table, int n_params, const uint8_t *trainable,
                                 lmf_opt_segment **out, int *n_out);

/* ---- AdamW ---- */

typedef struct lmf_adamw {
    size_t n;     /* floats in the parameter buffer */
    float *m, *v; /* (n) first and second moments, zero at init */
    int64_t step; /* optimizer steps taken; the next step uses t = step + 1 */
    double beta1, beta2, eps, weight_decay;
} lmf_adamw;

/* Allocates zeroed moments for n floats. Hyperparameters are checked as torch does
 * (0 <= beta < 1, eps >= 0, weight_decay >= 0); errors name the field. */
int lmf_adamw_init(lmf_adamw *o, size_t n, double beta1, double beta2, double eps,
                   double weight_decay);
void lmf_adamw_free(lmf_adamw *o);

/* One step at learning rate lr over the floats the segments cover (others are untouched),
 * in torch 1.13's _single_tensor_adamw operation order. Elementwise and OpenMP-parallel, so
 * the result does not depend on the thread count. LMF_EINVAL for a segment outside the
 * buffer or lr < 0. */
int lmf_adamw_step(lmf_adamw *o, float *params, const float *grads, const lmf_opt_segment *segs,
                   int n_segs, double lr);

/* State file (little-endian): "LMFADAM1", u32 version (1), u32 0, u64 n, i64 step,
 * f64 beta1, beta2, eps, weight_decay, f32 m[n], f32 v[n]. Written atomically. */
int lmf_adamw_save(const lmf_adamw *o, const char *path);
/* Loads into an initialised o: n must equal o->n; step, moments and hyperparameters come from
 * the file (as torch's load_state_dict restores them). Every field is validated; errors name
 * the file. On error o is unchanged. */
int lmf_adamw_load(lmf_adamw *o, const char *path);
/* The same file, validated for expect_n floats and mapped, for callers that take only parts
 * of it (ZeRO re-sharding a state saved by another number of ranks). */
typedef struct lmf_adamw_file {
    size_t n;
    int64_t step;
    double beta1, beta2, eps, weight_decay;
    const float *m, *v; /* (n) each, inside the mapping */
    lmf_mapped_file mf;
} lmf_adamw_file;
int lmf_adamw_open(const char *path, size_t expect_n, lmf_adamw_file *f);
void lmf_adamw_close(lmf_adamw_file *f);

/* ---- gradient clipping ---- */

/* torch.nn.utils.clip_grad_norm_(params, max_norm): total = ||(||g_1||, ..., ||g_k||)||, one
 * norm per segment, each summed in double over fixed chunks (deterministic for any thread
 * count) and rounded to f32 as torch's per-tensor norms are; when max_norm > 0 and
 * coef = max_norm / (total + 1e-6) < 1, every covered gradient is multiplied by coef (a NaN or
 * inf total propagates into the gradients as in torch). Returns the pre-clip total. */
float lmf_clip_grad_norm(float *grads, const lmf_opt_segment *segs, int n_segs, double max_norm);
/* The same over several gradient buffers at once (e.g. a LoRA adapter and the base modules
 * trained beside it): one total norm over all their segments, one coefficient for all. */
typedef struct lmf_grad_group {
    float *grads;
    const lmf_opt_segment *segs;
    int n_segs;
} lmf_grad_group;
float lmf_clip_grad_norm_groups(const lmf_grad_group *groups, int n_groups, double max_norm);
/* The pieces of the above, for gradients spread over ranks (ZeRO): each tensor's sum of squares
 * in double (summed over ranks by the caller), then the total norm and the coefficient to
 * multiply every gradient by (1 when no clipping applies). */
double lmf_sum_squares(const float *g, size_t n);
/* Every float the segments cover multiplied by s (elementwise, OpenMP-parallel). */
void lmf_scale_segments(float *grads, const lmf_opt_segment *segs, int n_segs, float s);
float lmf_clip_coef(const double *sumsq, int n, double max_norm, float *coef);

/* ---- learning-rate schedules ---- */

typedef enum lmf_schedule_kind {
    LMF_SCHED_LINEAR,
    LMF_SCHED_COSINE,
    LMF_SCHED_CONSTANT,
    LMF_SCHED_CONSTANT_WITH_WARMUP,
    LMF_SCHED_COSINE_WITH_MIN_LR,
} lmf_schedule_kind;

typedef struct lmf_schedule {
    lmf_schedule_kind kind;
    double base_lr;
    int64_t total_steps, warmup_steps;
    double min_lr_rate; /* cosine_with_min_lr: floor as a fraction of base_lr */
} lmf_schedule;

/* type: "linear", "cosine", "constant", "constant_with_warmup" or "cosine_with_min_lr" (as
 * lr_scheduler_type names them). min_lr_rate in [0, 1], and non-zero only for
 * cosine_with_min_lr (a caller holding min_lr passes min_lr / base_lr, as transformers does).
 * "constant" ignores warmup_steps, as transformers does. */
int lmf_schedule_init(lmf_schedule *s, const char *type, double base_lr, int64_t total_steps,
                      int64_t warmup_steps, double min_lr_rate);
/* The lr for optimizer step `step` (0 for the first): base_lr * lambda(step), LambdaLR style. */
double lmf_schedule_lr(const lmf_schedule *s, int64_t step);
/* TrainingArguments.get_warmup_steps: warmup_steps if > 0 else ceil(warmup_ratio * total). */
int64_t lmf_warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t total);

#endif
