/* ZeRO / FSDP inside the trainer (include/lmforge/zero.h for the sharding itself).
 *
 * Stage 1: gradients are all-reduced as under DDP; each rank keeps the AdamW moments of its
 * shard only, updates its shard of the parameters and all-gathers the parameters back.
 * Stage 2: no all-reduce: right after a layer's backward its gradients are reduce-scattered
 * (every micro-batch, as DeepSpeed does), each rank adding its piece into its compact gradient
 * shard; the layer's full gradient pages are then given back, so a rank holds 1/N of the
 * gradients between layers. Stage 3: the base model's parameters too live only as compact
 * shards; the model's weight hook gathers a layer (prefetching the next) right before its
 * forward and again before its backward, and gives the pages back after each. A LoRA adapter
 * is tiny: it stays whole on every rank (its gradients and moments are sharded as in stage 2).
 *
 * Gradient clipping over shards: every rank sums the squares of its pieces per tensor, the sums
 * are all-reduced in double, and the norm is formed as torch forms it from per-tensor norms. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer_internal.h"

int zero_units(param_group *g, const lmf_param *table, int n, size_t numel, int layers) {
    size_t cap = (size_t)(n > 0 ? n : 1);
    g->unit_off = malloc(cap * sizeof *g->unit_off);
    g->unit_len = malloc(cap * sizeof *g->unit_len);
    g->unit_layer = malloc(cap * sizeof *g->unit_layer);
    g->layer_unit = malloc((size_t)(layers > 0 ? layers : 1) * sizeof *g->layer_unit);
    if (!g->unit_off || !g->unit_len || !g->unit_layer || !g->layer_unit)
        return lmf_errorf(LMF_ENOMEM, "out of memory");
    int k = 0;
    for (int i = 0; i < n; i++)
        if (k == 0 || table[i].layer != g->unit_layer[k - 1]) {
            g->unit_off[k] = k ? table[i].offset : 0;
            g->unit_layer[k++] = table[i].layer;
        }
    if (k == 0) g->unit_off[0] = 0, g->unit_layer[k++] = -1;
    for (int l = 0; l < layers; l++) g->layer_unit[l] = -1;
    for (int u = 0; u < k; u++) {
        g->unit_len[u] = (u + 1 < k ? g->unit_off[u + 1] : numel) - g->unit_off[u];
        int l = g->unit_layer[u];
        if (l >= 0 && l < layers && g->layer_unit[l] < 0) g->layer_unit[l] = u;
    }
    g->n_units = k;
    return 0;
}

/* ag[u] of a stage-3 buffer doubles as the unit's state: NULL (released, its pages given
 * back), a gather in flight, or PRESENT. */
static char present_tag;
#define PRESENT ((lmf_comm_req *)(void *)&present_tag)

static shard_group *zgroup(trainer *t, int i) {
    return i < t->n_groups ? t->groups[i].z : t->frozen_base.z;
}
#define FOR_SHARDS(t, z)                                                                           \
    for (int zi_ = 0; zi_ <= (t)->n_groups; zi_++)                                                 \
        for (shard_group *z = zgroup(t, zi_); z; z = NULL)

int zero_group_init(trainer *t, param_group *g, int trained, int shard_params) {
    shard_group *z = calloc(1, sizeof *z);
    if (!z) return lmf_errorf(LMF_ENOMEM, "out of memory");
    g->z = z;
    z->flat_p = g->params;
    z->flat_g = trained ? g->grads : NULL;
    z->shard_params = shard_params;
    int rc = lmf_shard_plan_init(&z->plan, g->unit_off, g->unit_len, g->n_units, t->world, t->rank);
    if (rc) return rc;
    size_t nu = (size_t)g->n_units, S = z->plan.shard_len;
    z->unit_layer = g->unit_layer, z->layer_unit = g->layer_unit;
    z->ag = calloc(nu, sizeof *z->ag);
    z->rs = calloc(nu, sizeof *z->rs);
    z->unit_trained = calloc(nu, 1);
    z->seg_of = malloc((size_t)(g->n_segs > 0 ? g->n_segs : 1) * nu * sizeof *z->seg_of);
    z->segs = malloc((size_t)(g->n_segs > 0 ? g->n_segs : 1) * nu * sizeof *z->segs);
    if (!z->ag || !z->rs || !z->unit_trained || !z->seg_of || !z->segs)
        return lmf_errorf(LMF_ENOMEM, "out of memory");
    if (trained || shard_params) {
        z->p = lmf_alloc((S + 1) * sizeof(float), "ZeRO parameter shard");
        if (!z->p) return LMF_ENOMEM;
    }
    if (!trained) return 0;
    z->g = lmf_alloc((S + 1) * sizeof(float), "ZeRO gradient shard");
    if (!z->g) return LMF_ENOMEM;
    /* Stage 2 with accumulation: later micro-batches land here and are added to g (the first
     * one lands in g itself, which is zero then). */
    if (t->zero >= 2 && t->o->grad_accum > 1) {
        z->recv = lmf_alloc((S + 1) * sizeof(float), "ZeRO reduce-scatter buffer");
        if (!z->recv) return LMF_ENOMEM;
    }
    /* The trained parts of this rank's pieces, in compact coordinates. */
    for (size_t u = 0; u < nu; u++) {
        size_t s, cnt, uo = g->unit_off[u], ue = uo + g->unit_len[u];
        lmf_shard_piece(&z->plan, (int)u, t->rank, &s, &cnt);
        for (int k = 0; k < g->n_segs; k++) {
            size_t a = g->segs[k].offset, b = a + g->segs[k].numel;
            if (a < ue && b > uo) z->unit_trained[u] = 1;
            size_t lo = a > s ? a : s, hi = b < s + cnt ? b : s + cnt;
            if (lo >= hi) continue;
            z->segs[z->n_segs] =
                (lmf_opt_segment){z->plan.shard_off[u] + (lo - s), hi - lo, g->segs[k].decay};
            z->seg_of[z->n_segs++] = k;
        }
    }
    return 0;
}

void zero_group_free(param_group *g) {
    shard_group *z = g->z;
    free(g->unit_off), free(g->unit_len), free(g->unit_layer), free(g->layer_unit);
    g->unit_off = g->unit_len = NULL, g->unit_layer = g->layer_unit = NULL;
    if (!z) return;
    for (int u = 0; u < z->plan.n_units; u++) {
        if (z->ag && z->ag[u] && z->ag[u] != PRESENT) lmf_comm_wait(&z->ag[u]);
        if (z->rs && z->rs[u]) lmf_comm_wait(&z->rs[u]);
    }
    lmf_shard_plan_free(&z->plan);
    lmf_free(z->p), lmf_free(z->g), lmf_free(z->recv);
    free(z->segs), free(z->seg_of), free(z->unit_trained), free(z->ag), free(z->rs);
    free(z);
    g->z = NULL;
}

/* ---- parameters of a stage-3 buffer: gathered per unit, given back after use ---- */

static void note(trainer *t, int rc) {
    if (rc && !t->zero_rc) t->zero_rc = rc;
}

static void unit_bytes(const shard_group *z, int u, float **p, size_t *bytes) {
    *p = z->flat_p + z->plan.off[u];
    *bytes = z->plan.len[u] * sizeof(float);
}

static void prefetch(trainer *t, shard_group *z, int u) {
    if (u < 0 || z->ag[u]) return;
    note(t, lmf_shard_igather(t->comm, &z->plan, u, z->p, z->flat_p, &z->ag[u]));
}

static void ensure(trainer *t, shard_group *z, int u) {
    if (u < 0 || z->ag[u] == PRESENT) return;
    prefetch(t, z, u);
    if (z->ag[u] && z->ag[u] != PRESENT) note(t, lmf_comm_wait(&z->ag[u]));
    z->ag[u] = PRESENT;
}

static void release(trainer *t, shard_group *z, int u) {
    if (u < 0 || !z->ag[u]) return;
    if (z->ag[u] != PRESENT) note(t, lmf_comm_wait(&z->ag[u])); /* MPI may still write it */
    z->ag[u] = NULL;
    float *p;
    size_t bytes;
    unit_bytes(z, u, &p, &bytes);
    lmf_discard(p, bytes);
}

static void rest_units(trainer *t, shard_group *z, int gather) {
    for (int u = 0; u < z->plan.n_units; u++)
        if (z->unit_layer[u] < 0) gather ? ensure(t, z, u) : release(t, z, u);
}

int trainer_saves_base(const trainer *t) {
    return t->zero >= 3 && (!t->lora || t->lora->modules_to_save[0]);
}

int zero_gather_all(trainer *t) {
    FOR_SHARDS(t, z) {
        if (!z->shard_params) continue;
        for (int u = 0; u < z->plan.n_units; u++) prefetch(t, z, u);
        for (int u = 0; u < z->plan.n_units; u++) ensure(t, z, u);
    }
    int rc = t->zero_rc;
    t->zero_rc = 0;
    return rc;
}

void zero_release_all(trainer *t) {
    FOR_SHARDS(t, z) {
        if (!z->shard_params) continue;
        for (int u = 0; u < z->plan.n_units; u++) release(t, z, u);
    }
}

/* ---- gradients (stage >= 2): reduce-scattered per unit as backward finishes it ---- */

static void post_reduce(trainer *t, shard_group *z, int u) {
    if (u < 0 || !z->unit_trained[u] || z->rs[u]) return;
    float *land = t->micro == 0 ? z->g : z->recv;
    note(t, lmf_shard_ireduce(t->comm, &z->plan, u, z->flat_g, land + z->plan.shard_off[u],
                              &z->rs[u]));
}

/* Completed reduce-scatters: the piece is added to the gradient shard, the unit's full
 * gradients are given back (and read as zero for the next micro-batch). */
static void drain(trainer *t, shard_group *z, int wait) {
    for (int u = 0; u < z->plan.n_units; u++) {
        if (!z->rs[u]) continue;
        int done = 1;
        note(t, wait ? lmf_comm_wait(&z->rs[u]) : lmf_comm_test(&z->rs[u], &done));
        if (!done) continue;
        z->rs[u] = NULL;
        size_t o = z->plan.shard_off[u],
               n = z->plan.counts[(size_t)u * (size_t)z->plan.P + (size_t)z->plan.rank];
        for (size_t i = 0; i < n && t->micro > 0; i++) z->g[o + i] += z->recv[o + i];
        lmf_discard(z->flat_g + z->plan.off[u], z->plan.len[u] * sizeof(float));
    }
}

static void grad_hook(void *user, int layer) {
    trainer *t = user;
    FOR_SHARDS(t, z) {
        if (z->flat_g) post_reduce(t, z, z->layer_unit[layer]);
        if (z->shard_params) release(t, z, z->layer_unit[layer]);
    }
    FOR_SHARDS(t, z) if (z->flat_g) drain(t, z, 0);
}

static void weight_hook(void *user, int l, int ev) {
    trainer *t = user;
    int L = t->m->cfg.layers;
    FOR_SHARDS(t, z) {
        if (!z->shard_params) continue;
        switch (ev) {
        case LMF_WEIGHTS_FWD_BEGIN:
            rest_units(t, z, 1);
            prefetch(t, z, z->layer_unit[0]);
            break;
        case LMF_WEIGHTS_LAYER_FWD:
            ensure(t, z, z->layer_unit[l]);
            if (l + 1 < L) prefetch(t, z, z->layer_unit[l + 1]);
            break;
        case LMF_WEIGHTS_LAYER_FWD_DONE:
            if (!t->zero_training || l + 1 < L) release(t, z, z->layer_unit[l]);
            break;
        case LMF_WEIGHTS_FWD_END:
            if (!t->zero_training) rest_units(t, z, 0);
            break;
        case LMF_WEIGHTS_LAYER_BWD:
            ensure(t, z, z->layer_unit[l]);
            if (l > 0) prefetch(t, z, z->layer_unit[l - 1]);
            break;
        case LMF_WEIGHTS_BWD_END:
            rest_units(t, z, 0);
            break;
        }
    }
    if (ev != LMF_WEIGHTS_BWD_END) return;
    FOR_SHARDS(t, z) {
        if (!z->flat_g) continue;
        for (int u = 0; u < z->plan.n_units; u++)
            if (z->unit_layer[u] < 0) post_reduce(t, z, u);
    }
    FOR_SHARDS(t, z) if (z->flat_g) drain(t, z, 1);
}

/* Stage 2 needs the weight hook too: the end of backward is where the last reduce-scatters
 * are posted and every one is waited for. */
void zero_install_hooks(trainer *t) {
    if (t->zero < 2) return;
    t->m->weight_hook = weight_hook, t->m->weight_hook_user = t;
    t->m->grad_hook = grad_hook, t->m->grad_hook_user = t;
}

void zero_after_load(trainer *t) {
    FOR_SHARDS(t, z) {
        if (z->p) lmf_shard_extract(&z->plan, z->flat_p, z->p);
        if (!z->shard_params) continue;
        for (int u = 0; u < z->plan.n_units; u++) {
            z->ag[u] = PRESENT;
            release(t, z, u);
        }
    }
}

/* ---- the optimizer step over shards ---- */

void zero_step_begin(trainer *t) {
    FOR_SHARDS(t, z) if (z->g) memset(z->g, 0, z->plan.shard_len * sizeof(float));
}

void zero_take_reduced(trainer *t) {
    FOR_SHARDS(t, z) if (z->g) lmf_shard_extract(&z->plan, z->flat_g, z->g);
}

int zero_clip_and_step(trainer *t, double scale, double max_norm, double lr, float *gnorm) {
    int n = 0;
    for (int i = 0; i < t->n_groups; i++) n += t->groups[i].n_segs;
    double *sq = calloc((size_t)(n > 0 ? n : 1), sizeof *sq);
    if (!sq) return lmf_errorf(LMF_ENOMEM, "out of memory");
    for (int i = 0, base = 0; i < t->n_groups; base += t->groups[i].n_segs, i++) {
        shard_group *z = t->groups[i].z;
        lmf_scale_segments(z->g, z->segs, z->n_segs, (float)scale);
        for (int k = 0; k < z->n_segs; k++)
            sq[base + z->seg_of[k]] += lmf_sum_squares(z->g + z->segs[k].offset, z->segs[k].numel);
    }
    int rc = lmf_comm_allreduce_f64(t->comm, sq, (size_t)n);
    float coef = 1.0f;
    if (!rc) *gnorm = lmf_clip_coef(sq, n, max_norm, &coef);
    free(sq);
    for (int i = 0; i < t->n_groups && !rc; i++) {
        param_group *g = &t->groups[i];
        shard_group *z = g->z;
        if (coef != 1.0f) lmf_scale_segments(z->g, z->segs, z->n_segs, coef);
        rc = lmf_adamw_step(&g->opt, z->p, z->g, z->segs, z->n_segs, lr);
        if (rc || z->shard_params) continue;
        /* stages 1-2: every rank's updated shard back into the whole parameters */
        for (int u = 0; u < z->plan.n_units && !rc; u++)
            if (z->unit_trained[u])
                rc = lmf_shard_igather(t->comm, &z->plan, u, z->p, z->flat_p, &z->ag[u]);
        for (int u = 0; u < z->plan.n_units; u++) {
            int w = lmf_comm_wait(&z->ag[u]);
            if (!rc) rc = w;
        }
        if (g->params == t->m->params) lmf_model_weights_changed(t->m);
    }
    return rc;
}

/* ---- memory held per rank ---- */

int zero_memory_report(trainer *t) {
    double mine[3] = {0, 0, 0}; /* parameters, gradients, optimizer state: bytes */
    lmf_model *m = t->m;
    mine[0] = (double)lmf_resident_bytes(m->params, m->numel * sizeof(float));
    if (t->lora) mine[0] += (double)lmf_resident_bytes(t->lora->params, t->lora->numel * 4);
    for (int i = 0; i < t->n_groups; i++) {
        param_group *g = &t->groups[i];
        mine[1] += (double)lmf_resident_bytes(g->grads, g->numel * sizeof(float));
        mine[2] += 2.0 * (double)g->opt.n * sizeof(float);
    }
    FOR_SHARDS(t, z) {
        if (z->p) mine[0] += (double)z->plan.shard_len * sizeof(float);
        if (z->g) mine[1] += (double)z->plan.shard_len * sizeof(float);
        if (z->recv) mine[1] += (double)z->plan.shard_len * sizeof(float);
    }
    double *all = calloc((size_t)t->world * 3, sizeof *all);
    if (!all) return lmf_errorf(LMF_ENOMEM, "out of memory");
    memcpy(all + 3 * t->rank, mine, sizeof mine);
    int rc = t->world > 1 ? lmf_comm_allreduce_f64(t->comm, all, (size_t)t->world * 3) : 0;
    for (int r = 0; r < t->world && !rc && t->rank == 0; r++)
        lmf_info("memory held by rank %d (%s): parameters %.3f MB, gradients %.3f MB, optimizer "
                 "state %.3f MB",
                 r, t->o->zero_label ? t->o->zero_label : "DDP", all[3 * r] / 1e6,
                 all[3 * r + 1] / 1e6, all[3 * r + 2] / 1e6);
    free(all);
    return rc;
}

/* ---- optimizer state files ---- */

static char *shard_name(const char *opt_file, int rank, int world) {
    char buf[256];
    size_t stem = strlen(opt_file) - 4; /* without ".bin" */
    snprintf(buf, sizeof buf, "%.*s.rank-%05d-of-%05d.bin", (int)stem, opt_file, rank, world);
    return lmf_strdup(buf);
}

int zero_save_optimizer(trainer *t, param_group *g, const char *dir) {
    char *name = g->z ? shard_name(g->opt_file, t->rank, t->world) : lmf_strdup(g->opt_file);
    char *p = lmf_path_join(dir, name);
    int rc = lmf_adamw_save(&g->opt, p);
    free(p), free(name);
    return rc;
}

/* How many ranks wrote dir's shard files of this group (0: none). */
static int saved_world(const char *dir, const char *opt_file) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t stem = strlen(opt_file) - 4;
    int world = 0, r, w;
    struct dirent *e;
    while ((e = readdir(d))) {
        char tail[16];
        if (strncmp(e->d_name, opt_file, stem) || e->d_name[stem] != '.') continue;
        if (sscanf(e->d_name + stem, ".rank-%5d-of-%5d%15s", &r, &w, tail) == 3 &&
            !strcmp(tail, ".bin") && w > world)
            world = w;
    }
    closedir(d);
    return world;
}

int zero_load_optimizer(param_group *g, const char *dir, int *found) {
    char *full = lmf_path_join(dir, g->opt_file);
    int P = lmf_path_exists(full) ? 1 : saved_world(dir, g->opt_file), rc = 0;
    *found = P > 0;
    lmf_shard_plan one = {0};
    const lmf_shard_plan *target = g->z ? &g->z->plan : &one;
    if (!g->z) rc = lmf_shard_plan_init(&one, g->unit_off, g->unit_len, g->n_units, 1, 0);
    for (int r = 0; r < P && !rc; r++) {
        lmf_shard_plan old;
        if ((rc = lmf_shard_plan_init(&old, g->unit_off, g->unit_len, g->n_units, P, r))) break;
        char *name = P == 1 && lmf_path_exists(full) ? lmf_strdup(g->opt_file)
                                                     : shard_name(g->opt_file, r, P);
        char *path = lmf_path_join(dir, name);
        lmf_adamw_file f;
        rc = lmf_path_exists(path) ? lmf_adamw_open(path, old.shard_len, &f)
                                   : lmf_errorf(LMF_ENOENT,
                                                "%s: missing (the checkpoint was saved by %d "
                                                "ranks: every rank's file is needed)",
                                                path, P);
        if (!rc && r > 0 && f.step != g->opt.step)
            rc = lmf_errorf(LMF_EFORMAT, "%s: step %lld, other ranks' files say %lld", path,
                            (long long)f.step, (long long)g->opt.step);
        if (!rc) {
            g->opt.step = f.step, g->opt.beta1 = f.beta1, g->opt.beta2 = f.beta2;
            g->opt.eps = f.eps, g->opt.weight_decay = f.weight_decay;
            /* the floats rank r held that this rank holds now */
            for (int u = 0; u < g->n_units; u++) {
                size_t so, sn, to, tn;
                lmf_shard_piece(&old, u, r, &so, &sn);
                lmf_shard_piece(target, u, target->rank, &to, &tn);
                size_t lo = so > to ? so : to, hi = so + sn < to + tn ? so + sn : to + tn;
                if (lo >= hi) continue;
                size_t src = old.shard_off[u] + (lo - so), dst = target->shard_off[u] + (lo - to);
                memcpy(g->opt.m + dst, f.m + src, (hi - lo) * sizeof(float));
                memcpy(g->opt.v + dst, f.v + src, (hi - lo) * sizeof(float));
            }
            lmf_adamw_close(&f);
        }
        free(path), free(name);
        lmf_shard_plan_free(&old);
    }
    if (!g->z && one.off) lmf_shard_plan_free(&one);
    free(full);
    return rc;
}
