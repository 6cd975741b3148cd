/* AdamW and global-norm gradient clipping over flat f32 buffers, following torch 1.13's
 * _single_tensor_adamw and clip_grad_norm_ step for step so that runs track PyTorch ones to
 * f32 rounding; plus the optimizer state file used to resume training. */
#include "lmforge/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the optimizer state file is written in host order, which must be little-endian"
#endif

#define ADAM_MAGIC   "LMFADAM1"
#define ADAM_VERSION 1u
#define ADAM_HEADER  64 /* magic 8, version 4, reserved 4, n 8, step 8, 4 x f64 hyperparameters */

int lmf_opt_segments_from_params(const lmf_param *table, int n_params, const uint8_t *trainable,
                                 lmf_opt_segment **out, int *n_out) {
    *out = NULL;
    *n_out = 0;
    if (n_params <= 0) return 0;
    lmf_opt_segment *segs = malloc((size_t)n_params * sizeof *segs);
    if (!segs) return lmf_errorf(LMF_ENOMEM, "optimizer segments: out of memory");
    int k = 0;
    for (int i = 0; i < n_params; i++) {
        if (trainable && !trainable[i]) continue;
        segs[k].offset = table[i].offset;
        segs[k].numel = table[i].numel;
        segs[k].decay = !table[i].is_norm_or_bias;
        k++;
    }
    *out = segs;
    *n_out = k;
    return 0;
}

static int check_hparams(const char *what, double beta1, double beta2, double eps, double wd) {
    /* The negated comparisons also refuse NaN. */
    if (!(beta1 >= 0 && beta1 < 1))
        return lmf_errorf(LMF_ERANGE, "%s: adam_beta1 = %g is outside [0, 1)", what, beta1);
    if (!(beta2 >= 0 && beta2 < 1))
        return lmf_errorf(LMF_ERANGE, "%s: adam_beta2 = %g is outside [0, 1)", what, beta2);
    if (!(eps >= 0 && isfinite(eps)))
        return lmf_errorf(LMF_ERANGE, "%s: adam_epsilon = %g must be finite and >= 0", what, eps);
    if (!(wd >= 0 && isfinite(wd)))
        return lmf_errorf(LMF_ERANGE, "%s: weight_decay = %g must be finite and >= 0", what, wd);
    return 0;
}

int lmf_adamw_init(lmf_adamw *o, size_t n, double beta1, double beta2, double eps,
                   double weight_decay) {
    memset(o, 0, sizeof *o);
    int rc = check_hparams("adamw", beta1, beta2, eps, weight_decay);
    if (rc) return rc;
    o->n = n;
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    /* lmf_alloc zero-fills: torch starts both moments at zero. One extra float keeps n == 0
     * from being a NULL allocation. */
    o->m = lmf_alloc((n + 1) * sizeof(float), "adamw first moment");
    o->v = lmf_alloc((n + 1) * sizeof(float), "adamw second moment");
    if (!o->m || !o->v) {
        lmf_adamw_free(o);
        return lmf_errorf(LMF_ENOMEM, "adamw: cannot allocate moments for %zu parameters", n);
    }
    return 0;
}

void lmf_adamw_free(lmf_adamw *o) {
    if (!o) return;
    lmf_free(o->m);
    lmf_free(o->v);
    memset(o, 0, sizeof *o);
}

static int check_segments(const char *what, size_t n, const lmf_opt_segment *segs, int n_segs) {
    for (int s = 0; s < n_segs; s++)
        if (segs[s].offset > n || segs[s].numel > n - segs[s].offset)
            return lmf_errorf(LMF_EINVAL, "%s: segment %d [%zu, +%zu) is outside the %zu floats",
                              what, s, segs[s].offset, segs[s].numel, n);
    return 0;
}

int lmf_adamw_step(lmf_adamw *o, float *params, const float *grads, const lmf_opt_segment *segs,
                   int n_segs, double lr) {
    if (!(lr >= 0 && isfinite(lr)))
        return lmf_errorf(LMF_EINVAL, "adamw: learning rate %g must be finite and >= 0", lr);
    int rc = check_segments("adamw", o->n, segs, n_segs);
    if (rc) return rc;

    /* Scalars are formed in double as Python does, then rounded to f32 where torch passes them
     * to an f32 tensor op. */
    const double t = (double)(o->step + 1);
    const double bc1 = 1.0 - pow(o->beta1, t), bc2 = 1.0 - pow(o->beta2, t);
    const float b1 = (float)o->beta1, omb1 = (float)(1.0 - o->beta1);
    const float b2 = (float)o->beta2, omb2 = (float)(1.0 - o->beta2);
    const float bc2_sqrt = (float)sqrt(bc2), eps = (float)o->eps;
    const float neg_step = (float)(-(lr / bc1));
    const float decay_mul = (float)(1.0 - lr * o->weight_decay);
    const int any_decay = o->weight_decay != 0.0;
    float *m = o->m, *v = o->v;

#pragma omp parallel
    for (int s = 0; s < n_segs; s++) {
        const size_t off = segs[s].offset, cnt = segs[s].numel;
        float *p = params + off, *ms = m + off, *vs = v + off;
        const float *g = grads + off;
        /* torch multiplies no-decay groups by exactly 1.0, a no-op, so skipping it is exact. */
        const int decay = any_decay && segs[s].decay;
#pragma omp for schedule(static) nowait
        for (size_t i = 0; i < cnt; i++) {
            float pi = p[i], gi = g[i];
            if (decay) pi = pi * decay_mul;           /* param.mul_(1 - lr*wd) */
            float mi = ms[i] * b1 + omb1 * gi;        /* exp_avg.mul_(b1).add_(g, 1-b1) */
            float vi = vs[i] * b2 + omb2 * gi * gi;   /* .mul_(b2).addcmul_(g, g, 1-b2) */
            float denom = sqrtf(vi) / bc2_sqrt + eps; /* (v.sqrt() / bc2_sqrt).add_(eps) */
            p[i] = pi + neg_step * mi / denom;        /* addcdiv_(m, denom, -lr/bc1) */
            ms[i] = mi;
            vs[i] = vi;
        }
    }
    o->step++;
    return 0;
}

/* ---- gradient clipping ---- */

#define NORM_MAX_CHUNKS 256
#define NORM_MIN_CHUNK  8192

/* Sum of squares of one tensor in double. Chunk boundaries depend only on cnt, and chunk
 * partials are added in order, so the result is the same for any number of threads. */
static double sum_squares(const float *g, size_t cnt) {
    size_t chunk = (cnt + NORM_MAX_CHUNKS - 1) / NORM_MAX_CHUNKS;
    if (chunk < NORM_MIN_CHUNK) chunk = NORM_MIN_CHUNK;
    const int n_chunks = (int)((cnt + chunk - 1) / chunk);
    double part[NORM_MAX_CHUNKS];
#pragma omp parallel for schedule(static) if (n_chunks > 1)
    for (int c = 0; c < n_chunks; c++) {
        const size_t lo = (size_t)c * chunk, hi = lo + chunk < cnt ? lo + chunk : cnt;
        double acc = 0;
#pragma omp simd reduction(+ : acc)
        for (size_t i = lo; i < hi; i++) acc += (double)g[i] * (double)g[i];
        part[c] = acc;
    }
    double total = 0;
    for (int c = 0; c < n_chunks; c++) total += part[c];
    return total;
}

void lmf_scale_segments(float *grads, const lmf_opt_segment *segs, int n_segs, float s) {
#pragma omp parallel
    for (int k = 0; k < n_segs; k++) {
        float *g = grads + segs[k].offset;
        const size_t cnt = segs[k].numel;
#pragma omp for schedule(static) nowait
        for (size_t i = 0; i < cnt; i++) g[i] *= s;
    }
}

double lmf_sum_squares(const float *g, size_t n) {
    return sum_squares(g, n);
}

float lmf_clip_coef(const double *sumsq, int n, double max_norm, float *coef) {
    /* torch: norm(stack([norm(g_i) for g_i])); each norm is an f32 tensor. */
    double sq = 0;
    for (int k = 0; k < n; k++) {
        const float tn = (float)sqrt(sumsq[k]);
        sq += (double)tn * (double)tn;
    }
    const float total = (float)sqrt(sq);
    *coef = 1.0f;
    /* max_norm / (total + 1e-6) in torch is (total + 1e-6).reciprocal() * max_norm in f32,
     * clamped to 1; scaling by exactly 1.0 is a no-op, so we only scale below 1 (or NaN). */
    if (max_norm > 0) {
        const float c = (1.0f / (total + 1e-6f)) * (float)max_norm;
        if (!(c >= 1.0f)) *coef = c;
    }
    return total;
}

float lmf_clip_grad_norm_groups(const lmf_grad_group *groups, int n_groups, double max_norm) {
    int n = 0;
    for (int k = 0; k < n_groups; k++) n += groups[k].n_segs;
    double one, *sumsq = n > 1 ? malloc(sizeof *sumsq * (size_t)n) : &one;
    if (!sumsq) abort(); /* a few bytes per tensor */
    for (int k = 0, i = 0; k < n_groups; k++)
        for (int s = 0; s < groups[k].n_segs; s++, i++)
            sumsq[i] =
                sum_squares(groups[k].grads + groups[k].segs[s].offset, groups[k].segs[s].numel);
    float coef;
    const float total = lmf_clip_coef(sumsq, n, max_norm, &coef);
    if (sumsq != &one) free(sumsq);
    if (coef == 1.0f) return total;
    for (int k = 0; k < n_groups; k++)
        lmf_scale_segments(groups[k].grads, groups[k].segs, groups[k].n_segs, coef);
    return total;
}

float lmf_clip_grad_norm(float *grads, const lmf_opt_segment *segs, int n_segs, double max_norm) {
    lmf_grad_group g = {grads, segs, n_segs};
    return lmf_clip_grad_norm_groups(&g, 1, max_norm);
}

/* ---- state file ---- */

int lmf_adamw_save(const lmf_adamw *o, const char *path) {
    uint8_t h[ADAM_HEADER];
    uint32_t version = ADAM_VERSION, reserved = 0;
    uint64_t n = o->n;
    int64_t step = o->step;
    double hp[4] = {o->beta1, o->beta2, o->eps, o->weight_decay};
    memcpy(h, ADAM_MAGIC, 8);
    memcpy(h + 8, &version, 4);
    memcpy(h + 12, &reserved, 4);
    memcpy(h + 16, &n, 8);
    memcpy(h + 24, &step, 8);
    memcpy(h + 32, hp, sizeof hp);

    lmf_atomic_file f;
    int rc = lmf_atomic_open(&f, path);
    if (rc) return rc;
    if ((rc = lmf_atomic_write(&f, h, sizeof h)) ||
        (rc = lmf_atomic_write(&f, o->m, o->n * sizeof(float))) ||
        (rc = lmf_atomic_write(&f, o->v, o->n * sizeof(float))))
        goto fail;
    return lmf_atomic_commit(&f);
fail:
    lmf_atomic_abort(&f);
    return rc;
}

int lmf_adamw_open(const char *path, size_t expect_n, lmf_adamw_file *f) {
    memset(f, 0, sizeof *f);
    lmf_mapped_file *mf = &f->mf;
    int rc = lmf_file_map(mf, path);
    if (rc) return rc;
    const uint8_t *d = mf->data;
    uint32_t version, reserved;
    uint64_t n;
    int64_t step;
    double hp[4];

    if (mf->size < 8 || memcmp(d, ADAM_MAGIC, 8) != 0) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: not an lmforge AdamW state file (magic is not %s)", path,
                        ADAM_MAGIC);
        goto fail;
    }
    if (mf->size < ADAM_HEADER) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: truncated header: %zu of %d bytes", path, mf->size,
                        ADAM_HEADER);
        goto fail;
    }
    memcpy(&version, d + 8, 4);
    memcpy(&reserved, d + 12, 4);
    memcpy(&n, d + 16, 8);
    memcpy(&step, d + 24, 8);
    memcpy(hp, d + 32, sizeof hp);
    if (version != ADAM_VERSION) {
        rc = lmf_errorf(LMF_EUNSUPPORTED, "%s: version %u is not supported (expected %u)", path,
                        version, ADAM_VERSION);
        goto fail;
    }
    if (reserved != 0) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: reserved header field is %u, expected 0", path, reserved);
        goto fail;
    }
    if (n != (uint64_t)expect_n) {
        rc = lmf_errorf(LMF_ESHAPE,
                        "%s: state is for %llu trained parameters but this run trains %zu", path,
                        (unsigned long long)n, expect_n);
        goto fail;
    }
    if (step < 0) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: step = %lld is negative", path, (long long)step);
        goto fail;
    }
    if ((rc = check_hparams(path, hp[0], hp[1], hp[2], hp[3]))) {
        rc = LMF_EFORMAT;
        goto fail;
    }
    /* n == expect_n, the size of a buffer the caller holds, so this cannot overflow. */
    const size_t want = ADAM_HEADER + 2 * expect_n * sizeof(float);
    if (mf->size != want) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: %s: %zu bytes, expected %zu for %zu parameters", path,
                        mf->size < want ? "truncated" : "trailing bytes", mf->size, want, expect_n);
        goto fail;
    }
    const float *fm = (const float *)(const void *)(d + ADAM_HEADER);
    const float *fv = fm + expect_n;
    for (size_t i = 0; i < expect_n; i++) {
        float mi, vi;
        memcpy(&mi, fm + i, 4);
        memcpy(&vi, fv + i, 4);
        if (!isfinite(mi) || !(vi >= 0 && isfinite(vi))) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: moment %zu is invalid (m = %g, v = %g)", path, i,
                            (double)mi, (double)vi);
            goto fail;
        }
    }
    f->n = expect_n, f->step = step, f->m = fm, f->v = fv;
    f->beta1 = hp[0], f->beta2 = hp[1], f->eps = hp[2], f->weight_decay = hp[3];
    return 0;
fail:
    lmf_file_unmap(mf);
    return rc;
}

void lmf_adamw_close(lmf_adamw_file *f) {
    lmf_file_unmap(&f->mf);
}

int lmf_adamw_load(lmf_adamw *o, const char *path) {
    lmf_adamw_file f;
    int rc = lmf_adamw_open(path, o->n, &f);
    if (rc) return rc;
    memcpy(o->m, f.m, o->n * sizeof(float));
    memcpy(o->v, f.v, o->n * sizeof(float));
    o->step = f.step;
    o->beta1 = f.beta1, o->beta2 = f.beta2, o->eps = f.eps, o->weight_decay = f.weight_decay;
    lmf_adamw_close(&f);
    return 0;
}
