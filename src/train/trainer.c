/* The single-process training loop behind `lmforge train` (see include/lmforge/trainer.h):
 * setup, then optimizer steps with periodic logging, evaluation and checkpoints. The loss of
 * an optimizer step is the mean over every labelled token of its accumulated micro-batches.
 * Data, evaluation, logging and checkpoints live in the other files of src/train
 * (trainer_internal.h). */
#include "lmforge/trainer.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/checkpoint.h"
#include "lmforge/json.h"
#include "lmforge/plot.h"
#include "lmforge/quant.h"
#include "trainer_internal.h"

static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 1;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

/* freeze: the last N layers (first -N when negative) train, in the named modules. */
static int setup_freeze(trainer *t) {
    lmf_model *m = t->m;
    int rc = lmf_model_enable_grads(m);
    if (rc) return rc;
    memset(m->trainable, 0, (size_t)m->n_params);
    int L = m->cfg.layers, k = t->o->freeze_trainable_layers;
    if (k == 0 || abs(k) > L)
        return lmf_errorf(LMF_EINVAL, "freeze_trainable_layers: %d, the model has %d layers", k, L);
    const char *mods = t->o->freeze_trainable_modules;
    for (int i = 0; i < m->n_params; i++) {
        int l = m->table[i].layer;
        if (l < 0 || (k > 0 ? l < L - k : l >= -k)) continue;
        int ok = !strcmp(mods, "all");
        if (!ok) {
            char *copy = lmf_strdup(mods), *save = NULL;
            for (char *tok = strtok_r(copy, ", ", &save); tok && !ok;
                 tok = strtok_r(NULL, ", ", &save)) {
                char pat[64];
                snprintf(pat, sizeof pat, ".%s.", tok);
                ok = strstr(m->table[i].name, pat) != NULL;
            }
            free(copy);
        }
        m->trainable[i] = (uint8_t)ok;
    }
    int any = 0;
    for (int i = 0; i < m->n_params; i++) any |= m->trainable[i];
    if (!any)
        return lmf_errorf(LMF_EINVAL, "freeze_trainable_modules: \"%s\" matches no parameter",
                          mods);
    return 0;
}

/* bf16 compute asked for where the bf16 weight copies cannot serve: float32, said once. */
static int compute_in_f32(trainer *t, const char *why) {
    if (!t->m->bf16) return 0;
    lmf_info("%s; computing in float32", why);
    lmf_compute_options co = {0, t->o->grad_ckpt};
    return lmf_model_set_compute(t->m, &co);
}

/* QLoRA: the frozen base quantized (bitsandbytes' formats: 8 bits, or 4 as nf4 / fp4 / int). */
static int setup_quantized_base(trainer *t) {
    const lmf_train_options *o = t->o;
    lmf_qtype type;
    int rc = lmf_qtype_from_bits(o->quant_bits, o->quant_type, &type);
    if (rc) return rc;
    rc = compute_in_f32(t, "bf16 with quantization_bit: the quantized matmuls take float32 "
                           "inputs");
    if (!rc) rc = lmf_model_quantize_base(t->m, (int)type);
    if (rc) return rc;
    size_t f32, held = lmf_model_base_bytes(t->m, &f32);
    lmf_info("quantization_bit %d (%s): base model %.2f MB (%.2f MB quantized + float32 norms) "
             "instead of %.2f MB in float32 (%.2fx)",
             o->quant_bits, lmf_qtype_name(type), (double)held / 1e6, (double)t->m->qbytes / 1e6,
             (double)f32 / 1e6, (double)held / (double)f32);
    return 0;
}

static int setup_model(trainer *t) {
    const lmf_train_options *o = t->o;
    int rc = lmf_model_load(&t->m, o->model_dir, lmf_backend_cpu());
    if (rc) return rc;
    lmf_compute_options co = {o->bf16, o->grad_ckpt};
    if ((rc = lmf_model_set_compute(t->m, &co))) return rc;
    if (!strcmp(o->finetuning_type, "lora")) {
        if (o->adapter_dir) {
            rc = lmf_lora_load(&t->lora, t->m, o->adapter_dir);
        } else {
            unsigned targets;
            rc = lmf_lora_parse_targets(o->lora_target, &targets);
            if (!rc)
                rc = lmf_lora_create(&t->lora, t->m, o->lora_rank, o->lora_alpha, o->lora_dropout,
                                     targets);
            if (!rc) lmf_lora_init(t->lora, t->m, o->seed);
        }
        if (!rc) rc = lmf_lora_enable_grads(t->lora);
        t->m->lora = t->lora;
        /* additional_target (PEFT's modules_to_save): whole base modules train beside the
         * adapter; an adapter continued without it keeps its own list. */
        const char *mods = o->additional_target ? o->additional_target
                           : t->lora            ? t->lora->modules_to_save
                                                : "";
        if (!rc && *mods) {
            if (strlen(mods) >= sizeof t->lora->modules_to_save)
                return lmf_errorf(LMF_EINVAL, "additional_target: too long");
            memmove(t->lora->modules_to_save, mods, strlen(mods) + 1);
            rc = lmf_model_enable_grads(t->m);
            if (!rc) rc = lmf_lora_match_modules(t->m, mods, t->m->trainable);
        }
        lmf_model_weights_changed(t->m); /* an adapter's modules_to_save replaced base weights */
        if (!rc && o->quant_bits) rc = setup_quantized_base(t);
        return rc;
    }
    if (o->quant_bits)
        return lmf_errorf(LMF_EINVAL,
                          "quantization_bit: a quantized base trains only LoRA "
                          "adapters (finetuning_type: lora), not %s",
                          o->finetuning_type);
    if (!strcmp(o->finetuning_type, "full")) return lmf_model_enable_grads(t->m);
    return setup_freeze(t);
}

static int64_t steps_per_epoch(const trainer *t) {
    const lmf_train_options *o = t->o;
    int64_t rows = (t->train.n + t->world - 1) / t->world; /* this rank's share */
    int64_t batches = (rows + o->batch_size - 1) / o->batch_size;
    return batches / o->grad_accum > 0 ? batches / o->grad_accum : 1;
}

static double epoch_of(const trainer *t) {
    return (double)t->consumed / (double)t->train.n;
}

/* Backward hook on the synchronised micro-batch: the buckets of finished layers start their
 * all-reduce while earlier layers are still being differentiated. */
static void ddp_layer_done(void *user, int layer) {
    trainer *t = user;
    for (int g = 0; g < t->n_groups; g++) {
        const param_group *pg = &t->groups[g];
        if (pg->layer_unit[layer] >= 0)
            lmf_ddp_ready_from(pg->ddp, pg->unit_off[pg->layer_unit[layer]]);
    }
}

/* ZeRO: the trained groups' optimizer state (stage 1) and gradients (2) sharded, and at stage
 * 3 the base model's parameters, trained or frozen. */
static int setup_zero(trainer *t) {
    t->zero = t->world > 1 ? t->o->zero_stage : 0;
    if (!t->zero) return 0;
    if (t->zero >= 3 && t->m->quantized)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s with quantization_bit: a quantized base is not "
                          "sharded; use ZeRO-2 or below",
                          t->o->zero_label ? t->o->zero_label : "ZeRO-3");
    int base_trained = 0;
    int rc = t->zero >= 3 ? compute_in_f32(t, "bf16 under ZeRO-3: the bf16 weight copies would be "
                                              "whole on every rank")
                          : 0;
    for (int i = 0; i < t->n_groups && !rc; i++) {
        param_group *g = &t->groups[i];
        int base = g->params == t->m->params;
        base_trained |= base;
        rc = zero_group_init(t, g, 1, t->zero >= 3 && base);
    }
    if (!rc && t->zero >= 3 && !base_trained) { /* LoRA: the frozen base is sharded too */
        param_group *b = &t->frozen_base;
        b->params = t->m->params, b->numel = t->m->numel;
        rc = zero_units(b, t->m->table, t->m->n_params, b->numel, t->m->cfg.layers);
        if (!rc) rc = zero_group_init(t, b, 0, 1);
    }
    if (!rc) zero_install_hooks(t);
    return rc;
}

/* The trained buffers and their optimizers: the adapter (LoRA A and B are weights: decayed,
 * as in HF) plus the base modules_to_save, or the trainable part of the base model. */
static int setup_groups(trainer *t) {
    const lmf_train_options *o = t->o;
    int rc = 0;
    if (t->lora) {
        param_group *g = &t->groups[t->n_groups++];
        *g = (param_group){.params = t->lora->params,
                           .grads = t->lora->grads,
                           .numel = t->lora->numel,
                           .segs = malloc(sizeof *g->segs),
                           .n_segs = 1,
                           .opt_file = "optimizer.bin"};
        if (!g->segs) return lmf_errorf(LMF_ENOMEM, "out of memory");
        g->segs[0] = (lmf_opt_segment){0, t->lora->numel, 1};
    }
    if (t->m->grads) {
        param_group *g = &t->groups[t->n_groups++];
        *g = (param_group){.params = t->m->params,
                           .grads = t->m->grads,
                           .numel = t->m->numel,
                           .opt_file = t->lora ? "optimizer_modules.bin" : "optimizer.bin"};
        rc = lmf_opt_segments_from_params(t->m->table, t->m->n_params, t->m->trainable, &g->segs,
                                          &g->n_segs);
    }
    for (int i = 0; i < t->n_groups && !rc; i++) {
        param_group *g = &t->groups[i];
        int base = g->params == t->m->params;
        int L = t->m->cfg.layers;
        rc = base ? zero_units(g, t->m->table, t->m->n_params, g->numel, L)
                  : zero_units(g, t->lora->table, t->lora->n_params, g->numel, L);
    }
    if (!rc) rc = setup_zero(t);
    for (int i = 0; i < t->n_groups && !rc; i++) {
        param_group *g = &t->groups[i];
        rc = lmf_adamw_init(&g->opt, g->z ? g->z->plan.shard_len : g->numel, o->beta1, o->beta2,
                            o->eps, o->weight_decay);
    }
    for (int i = 0; i < t->n_groups && !rc && t->world > 1 && t->zero <= 1; i++) {
        param_group *g = &t->groups[i];
        lmf_ddp_range *r = malloc(sizeof *r * (size_t)(g->n_segs + 1));
        if (!r) return lmf_errorf(LMF_ENOMEM, "out of memory");
        for (int k = 0; k < g->n_segs; k++)
            r[k] = (lmf_ddp_range){g->segs[k].offset, g->segs[k].numel};
        rc = lmf_ddp_create(&g->ddp, t->comm, g->grads, r, g->n_segs, o->ddp_bucket_bytes);
        free(r);
    }
    return rc;
}

static void free_groups(trainer *t) {
    for (int i = 0; i < t->n_groups; i++) {
        free(t->groups[i].segs);
        lmf_ddp_free(t->groups[i].ddp);
        lmf_adamw_free(&t->groups[i].opt);
        zero_group_free(&t->groups[i]);
    }
    zero_group_free(&t->frozen_base);
    t->m->grad_hook = NULL, t->m->weight_hook = NULL;
    t->n_groups = 0;
}

static size_t trained_floats(const trainer *t) {
    size_t n = 0;
    for (int i = 0; i < t->n_groups; i++)
        for (int s = 0; s < t->groups[i].n_segs; s++) n += t->groups[i].segs[s].numel;
    return n;
}

/* One optimizer step: grad_accum micro-batches, gradients averaged over all their targets,
 * clipped over every group together, then AdamW. *loss gets the step's mean token loss. */
static int train_step(trainer *t, lmf_sampler *smp, const lmf_schedule *sched, double *loss,
                      float *gnorm, double *lr) {
    const lmf_train_options *o = t->o;
    /* only trained tensors get gradients; from stage 2 on, each layer's were given back (and
     * read as zero) once reduce-scattered */
    for (int g = 0; g < t->n_groups && t->zero < 2; g++)
        for (int k = 0; k < t->groups[g].n_segs; k++)
            memset(t->groups[g].grads + t->groups[g].segs[k].offset, 0,
                   t->groups[g].segs[k].numel * sizeof(float));
    if (t->zero) zero_step_begin(t);
    int64_t step_targets = 0;
    double loss_sum = 0;
    int64_t tok_step = 0;
    for (int a = 0; a < o->grad_accum; a++) {
        int64_t idx[1024], tokens, nt = 0;
        /* DDP (and stage 1): no communication before the last micro-batch */
        int sync = t->world > 1 && t->zero <= 1 && a == o->grad_accum - 1;
        for (int g = 0; g < t->n_groups && sync; g++) lmf_ddp_begin(t->groups[g].ddp);
        for (int i = 0; i < o->batch_size; i++) idx[i] = lmf_sampler_next(smp, NULL);
        lmf_batch b;
        step_targets += trainer_fill_batch(t, &t->train, idx, o->batch_size, &b, &tokens);
        trainer_dump_batch("LMF_TRAIN_DUMP_BATCHES", t->step, a, &b);
        /* The buffers are reused by the next micro-batch: run this one now with a provisional
         * denominator and rescale the gradients once the step's target count is known. */
        t->m->loss_denom = 1.0;
        double mean = 0;
        t->zero_training = 1, t->micro = a;
        int rc = lmf_model_forward(t->m, &b, 1, &mean, &nt, NULL, NULL);
        if (t->zero < 2) t->m->grad_hook = sync ? ddp_layer_done : NULL, t->m->grad_hook_user = t;
        if (!rc) rc = lmf_model_backward(t->m);
        if (t->zero < 2) t->m->grad_hook = NULL;
        t->zero_training = 0;
        if (!rc && t->zero_rc) rc = t->zero_rc;
        for (int g = 0; g < t->n_groups && sync && !rc; g++) rc = lmf_ddp_finish(t->groups[g].ddp);
        if (rc) return rc;
        loss_sum += mean * (double)nt;
        tok_step += tokens;
        t->consumed += (int64_t)o->batch_size * t->world;
    }
    if (t->world > 1) { /* the step's loss, targets and tokens over all ranks */
        float v[5] = {(float)loss_sum, (float)(step_targets >> 16), (float)(step_targets & 0xffff),
                      (float)(tok_step >> 16), (float)(tok_step & 0xffff)};
        int rc = lmf_comm_allreduce(t->comm, v, 5, LMF_F32, LMF_REDUCE_SUM);
        if (rc) return rc;
        loss_sum = v[0];
        step_targets = ((int64_t)v[1] << 16) + (int64_t)v[2];
        tok_step = ((int64_t)v[3] << 16) + (int64_t)v[4];
    }
    t->tokens += tok_step;
    float inv = step_targets ? (float)(1.0 / (double)step_targets) : 0.0f;
    *loss = step_targets ? loss_sum / (double)step_targets : 0.0;
    *lr = lmf_schedule_lr(sched, t->step);
    if (t->zero) {
        if (t->zero == 1) zero_take_reduced(t);
        return zero_clip_and_step(t, inv, o->max_grad_norm, *lr, gnorm);
    }
    lmf_grad_group gg[2];
    for (int g = 0; g < t->n_groups; g++) {
        param_group *pg = &t->groups[g];
        lmf_scale_segments(pg->grads, pg->segs, pg->n_segs, inv);
        gg[g] = (lmf_grad_group){pg->grads, pg->segs, pg->n_segs};
    }
    *gnorm = lmf_clip_grad_norm_groups(gg, t->n_groups, o->max_grad_norm);
    int rc = 0;
    for (int g = 0; g < t->n_groups && !rc; g++) {
        param_group *pg = &t->groups[g];
        rc = lmf_adamw_step(&pg->opt, pg->params, pg->grads, pg->segs, pg->n_segs, *lr);
        if (pg->params == t->m->params) lmf_model_weights_changed(t->m); /* bf16 copies */
    }
    return rc;
}

/* Rank 0 evaluates while the others go on, except under ZeRO-3, where the layers are
 * gathered from every rank: all evaluate, rank 0 logs. */
static int run_eval(trainer *t, eval_result *r) {
    int rc = trainer_evaluate(t, r);
    if (!rc && t->rank == 0) train_log_eval(&t->log, t->step, t->total, epoch_of(t), r);
    return rc;
}

static cJSON *eval_metrics(const eval_result *r, double epoch) {
    cJSON *j = cJSON_CreateObject();
    double rt = r->runtime > 1e-9 ? r->runtime : 1e-9;
    cJSON_AddNumberToObject(j, "epoch", epoch);
    cJSON_AddNumberToObject(j, "eval_loss", r->loss);
    cJSON_AddNumberToObject(j, "eval_runtime", r->runtime);
    cJSON_AddNumberToObject(j, "eval_samples_per_second", (double)r->samples / rt);
    cJSON_AddNumberToObject(j, "eval_steps_per_second", (double)r->batches / rt);
    cJSON_AddNumberToObject(j, "perplexity", r->perplexity);
    return j;
}

static void merge_into(cJSON *dst, const cJSON *src) {
    const cJSON *e;
    cJSON_ArrayForEach(e, src) {
        cJSON_DeleteItemFromObjectCaseSensitive(dst, e->string);
        cJSON_AddItemToObject(dst, e->string, cJSON_Duplicate(e, 1));
    }
}

static int plot(trainer *t, const char *key, const char *file, const char *title) {
    double *x = NULL, *y = NULL;
    int n = 0, rc = train_log_curve(&t->log, key, &x, &y, &n);
    if (!rc && n > 0) {
        char *p = lmf_path_join(t->o->output_dir, file);
        rc = lmf_plot_loss(p, x, y, n, title, key);
        free(p);
    }
    free(x), free(y);
    return rc;
}

/* train_results.json / eval_results.json / all_results.json, trainer_state.json and the
 * plots, as LLaMA-Factory leaves them in output_dir. */
static int write_results(trainer *t, cJSON *train_m, cJSON *eval_m) {
    const lmf_train_options *o = t->o;
    int rc = 0;
    cJSON *all = cJSON_CreateObject();
    if (!all) return lmf_errorf(LMF_ENOMEM, "out of memory");
    if (train_m) {
        merge_into(all, train_m);
        rc = lmf_json_save(o->output_dir, "train_results.json", train_m);
    }
    if (!rc && eval_m) {
        merge_into(all, eval_m);
        rc = lmf_json_save(o->output_dir, "eval_results.json", eval_m);
    }
    if (!rc) rc = lmf_json_save(o->output_dir, "all_results.json", all);
    cJSON_Delete(all);
    if (!rc && train_m) rc = train_log_write_state(&t->log, t, o->output_dir, epoch_of(t));
    if (!rc && o->plot_loss && train_m) {
        rc = plot(t, "loss", "training_loss.png", "training loss");
        if (!rc) rc = plot(t, "eval_loss", "training_eval_loss.png", "eval loss");
    }
    return rc;
}

static int train_loop(trainer *t) {
    const lmf_train_options *o = t->o;
    int rc = setup_groups(t);
    int64_t per_epoch = steps_per_epoch(t);
    t->total = o->max_steps > 0 ? o->max_steps : (int64_t)ceil(o->epochs * (double)per_epoch);
    if (t->total <= 0) t->total = 1;
    lmf_schedule sched;
    lmf_sampler sampler = {0};
    int64_t warm = lmf_warmup_steps(o->warmup_steps, o->warmup_ratio, t->total);
    if (!rc) rc = lmf_schedule_init(&sched, o->scheduler, o->learning_rate, t->total, warm, 0);
    if (!rc) rc = lmf_sampler_init(&sampler, t->train.n, t->world, t->rank, o->seed, 1);
    if (!rc && t->resume_dir) {
        rc = trainer_load_checkpoint(t, t->resume_dir, &sampler);
        if (!rc)
            lmf_info("resumed from %s: step %lld of %lld, epoch %.2f, learning rate %.6g",
                     t->resume_dir, (long long)t->step, (long long)t->total, epoch_of(t),
                     lmf_schedule_lr(&sched, t->step));
    }
    if (!rc && t->zero) zero_after_load(t);
    if (!rc && t->rank == 0) rc = train_log_open(&t->log, o->output_dir, t->resume_dir, t->step);
    if (!rc && t->world > 1) { /* how the ranks share the work, and what travels */
        char how[256];
        size_t n = 0, bytes = 0;
        int buckets = 0;
        for (int g = 0; g < t->n_groups; g++) {
            if (t->zero) {
                n += t->groups[g].z->plan.shard_len;
                continue;
            }
            bytes += lmf_ddp_bytes(t->groups[g].ddp);
            buckets += lmf_ddp_buckets(t->groups[g].ddp);
        }
        if (t->zero)
            snprintf(how, sizeof how, "each rank keeps %zu of %zu trained floats' %s", n,
                     trained_floats(t),
                     t->zero == 1   ? "optimizer state"
                     : t->zero == 2 ? "optimizer state and gradients"
                                    : "optimizer state, gradients and parameters");
        else
            snprintf(how, sizeof how, "gradients in %d buckets, %.2f MB all-reduced per step",
                     buckets, (double)bytes / 1e6);
        lmf_info("distributed (%s): %d ranks x %d threads, effective batch %d = %d per device x "
                 "%d accumulation x %d ranks; %s",
                 t->zero ? (o->zero_label ? o->zero_label : "ZeRO") : "DDP", t->world,
                 lmf_threads_get(), o->batch_size * o->grad_accum * t->world, o->batch_size,
                 o->grad_accum, t->world, how);
    }
    if (!rc)
        lmf_info("training: %lld steps (%lld per epoch), batch %d x accumulation %d, %s, %zu "
                 "trainable parameters",
                 (long long)t->total, (long long)per_epoch, o->batch_size, o->grad_accum,
                 o->finetuning_type, trained_floats(t));
    double t0 = lmf_time_sec();
    int64_t tokens0 = t->tokens, last_eval = -1, first_step = t->step;
    eval_result ev = {0};
    int have_eval = 0;
    while (!rc && t->step < t->total) {
        double loss, lr;
        float gnorm;
        if ((rc = train_step(t, &sampler, &sched, &loss, &gnorm, &lr))) break;
        t->step++;
        if (t->step == first_step + 1 && (t->world > 1 || o->zero_stage) &&
            (rc = zero_memory_report(t)))
            break;
        t->loss_acc += loss, t->loss_total += loss;
        double tps = (double)(t->tokens - tokens0) / (lmf_time_sec() - t0 + 1e-9);
        step_report rep = {t->step, t->total, loss, lr, gnorm, epoch_of(t), tps, t->tokens};
        if (t->step % o->logging_steps == 0 || t->step == t->total) {
            int64_t k = t->step % o->logging_steps ? t->step % o->logging_steps : o->logging_steps;
            rep.loss = t->loss_acc / (double)k;
            t->loss_acc = 0;
            if (t->rank == 0) train_log_step(&t->log, &rep);
        } else if (t->rank == 0) {
            train_log_progress(&t->log, &rep);
        }
        int epoch_end = t->step % per_epoch == 0;
        int eval_now = !strcmp(o->eval_strategy, "steps")   ? t->step % o->eval_steps == 0
                       : !strcmp(o->eval_strategy, "epoch") ? epoch_end
                                                            : 0;
        if (eval_now && (t->rank == 0 || t->zero >= 3)) { /* the others go on */
            if ((rc = run_eval(t, &ev))) break;
            last_eval = t->step, have_eval = 1;
        }
        int save = !strcmp(o->save_strategy, "steps")   ? t->step % o->save_steps == 0
                   : !strcmp(o->save_strategy, "epoch") ? epoch_end
                                                        : 0;
        if (save && t->step < t->total && (t->rank == 0 || t->zero)) /* ZeRO: shards per rank */
            rc = trainer_save_checkpoint(t, &sampler);
    }
    t->m->loss_denom = 0;
    double runtime = lmf_time_sec() - t0;
    int final_eval = o->do_eval && last_eval != t->step;
    if (t->rank != 0) { /* rank 0 alone writes; the others wait for it */
        if (!rc && final_eval && t->zero >= 3) rc = run_eval(t, &ev);
        if (!rc && trainer_saves_base(t)) rc = zero_gather_all(t);
        if (!rc && t->world > 1) rc = lmf_comm_barrier(t->comm);
        free_groups(t);
        lmf_sampler_free(&sampler);
        return rc;
    }
    if (!rc && final_eval) {
        rc = run_eval(t, &ev);
        have_eval = !rc;
    }
    if (!rc && trainer_saves_base(t)) rc = zero_gather_all(t);
    if (!rc) {
        train_log_clear_bar(&t->log);
        rc = t->lora ? lmf_lora_save(t->lora, t->m, o->output_dir)
                     : lmf_model_save(t->m, o->output_dir);
        if (!rc) rc = lmf_tokenizer_copy_files(o->model_dir, o->output_dir);
    }
    if (!rc) {
        int64_t steps_run = t->step - t->log.first;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddNumberToObject(m, "epoch", epoch_of(t));
        cJSON_AddNumberToObject(m, "num_input_tokens_seen", (double)t->tokens);
        cJSON_AddNumberToObject(m, "total_flos", 0);
        cJSON_AddNumberToObject(m, "train_loss", t->loss_total / (double)t->step);
        cJSON_AddNumberToObject(m, "train_runtime", runtime);
        cJSON_AddNumberToObject(m, "train_samples_per_second",
                                (double)(steps_run * o->batch_size * o->grad_accum * t->world) /
                                    runtime);
        cJSON_AddNumberToObject(m, "train_steps_per_second", (double)steps_run / runtime);
        cJSON_AddNumberToObject(m, "train_tokens_per_second",
                                (double)(t->tokens - tokens0) / runtime);
        train_log_final(&t->log, m, t->step, epoch_of(t));
        cJSON *e = have_eval && o->do_eval ? eval_metrics(&ev, epoch_of(t)) : NULL;
        rc = write_results(t, m, e);
        cJSON_Delete(m), cJSON_Delete(e);
    }
    if (!rc) lmf_info("saved to %s (%.1f s)", o->output_dir, runtime);
    if (!rc && t->world > 1 && !t->zero) {
        double steps = 0, span = 0, exposed = 0, s, a, e;
        size_t bytes = 0;
        for (int g = 0; g < t->n_groups; g++) {
            lmf_ddp_stats(t->groups[g].ddp, &s, &a, &e);
            steps = s, span += a, exposed += e, bytes += lmf_ddp_bytes(t->groups[g].ddp);
        }
        if (steps > 0)
            lmf_info("DDP: %.3f MB all-reduced per step; all-reduce %.2f ms per step from the "
                     "first bucket to the last, %.2f ms of it after backward ended (%.0f%% hidden "
                     "behind backward)",
                     (double)bytes / 1e6, 1e3 * span / steps, 1e3 * exposed / steps,
                     span > 0 ? 100.0 * (1.0 - exposed / span) : 100.0);
    }
    if (!rc && t->world > 1) rc = lmf_comm_barrier(t->comm);
    train_log_close(&t->log);
    free_groups(t);
    lmf_sampler_free(&sampler);
    return rc;
}

/* do_train false, do_eval true: evaluate the model (and adapter) as it is. */
static int eval_only(trainer *t) {
    eval_result r;
    int rc = lmf_mkdir_p(t->o->output_dir);
    if (!rc) rc = trainer_evaluate(t, &r);
    if (rc) return rc;
    printf("eval: loss %.4f  perplexity %.3f  (%lld examples, %lld tokens, %.1f s)\n", r.loss,
           r.perplexity, (long long)r.samples, (long long)r.targets, r.runtime);
    cJSON *m = eval_metrics(&r, 0);
    rc = m ? write_results(t, NULL, m) : lmf_errorf(LMF_ENOMEM, "out of memory");
    cJSON_Delete(m);
    return rc;
}

static int check_options(const lmf_train_options *o) {
    if (!o->model_dir) return lmf_errorf(LMF_EINVAL, "model_name_or_path is required");
    if (!o->output_dir) return lmf_errorf(LMF_EINVAL, "output_dir is required");
    if (o->batch_size < 1 || o->batch_size > 1024)
        return lmf_errorf(LMF_EINVAL, "per_device_train_batch_size: %d, expected 1..1024",
                          o->batch_size);
    if (o->eval_batch_size < 1 || o->eval_batch_size > 1024)
        return lmf_errorf(LMF_EINVAL, "per_device_eval_batch_size: %d, expected 1..1024",
                          o->eval_batch_size);
    if (o->grad_accum < 1 || o->grad_accum > 1 << 20)
        return lmf_errorf(LMF_EINVAL, "gradient_accumulation_steps: %d, expected >= 1",
                          o->grad_accum);
    if (o->logging_steps < 1) return lmf_errorf(LMF_EINVAL, "logging_steps must be >= 1");
    if (!strcmp(o->eval_strategy, "steps") && o->eval_steps < 1)
        return lmf_errorf(LMF_EINVAL, "eval_steps must be >= 1 with eval_strategy: steps");
    if (!strcmp(o->save_strategy, "steps") && o->save_steps < 1)
        return lmf_errorf(LMF_EINVAL, "save_steps must be >= 1 with save_strategy: steps");
    int wants_eval = o->do_eval || strcmp(o->eval_strategy, "no");
    if (wants_eval && !(o->data.val_size > 0) && !o->eval_dataset)
        return lmf_errorf(LMF_EINVAL, "%s needs an eval set: set val_size or eval_dataset",
                          o->do_eval ? "do_eval" : "eval_strategy");
    if (!o->do_train && !o->do_eval)
        return lmf_errorf(LMF_EINVAL, "do_train and do_eval are both false: nothing to do");
    return 0;
}

/* LLaMA-Factory's output_dir rules: resume from the newest checkpoint-N unless
 * overwrite_output_dir; a non-empty folder without checkpoints is refused. */
static int choose_resume(trainer *t) {
    const lmf_train_options *o = t->o;
    int64_t ck_step;
    char *latest = NULL;
    int has_ckpt = lmf_ckpt_latest(o->output_dir, &latest, &ck_step) == 0;
    const char *r = o->resume_from_checkpoint;
    int rc = 0;
    if (r && strcmp(r, "false") && strcmp(r, "False")) {
        if (!strcmp(r, "true") || !strcmp(r, "True")) {
            if (!has_ckpt)
                rc = lmf_errorf(LMF_ENOENT, "resume_from_checkpoint: no checkpoint-N in %s",
                                o->output_dir);
            else
                t->resume_dir = latest, latest = NULL;
        } else if (!lmf_path_exists(r)) {
            rc = lmf_errorf(LMF_ENOENT, "resume_from_checkpoint: %s does not exist", r);
        } else {
            t->resume_dir = lmf_strdup(r);
        }
    } else if (has_ckpt && !o->overwrite_output_dir) {
        lmf_info("output_dir %s holds checkpoint-%lld: resuming from it (overwrite_output_dir: "
                 "true starts afresh)",
                 o->output_dir, (long long)ck_step);
        t->resume_dir = latest, latest = NULL;
    } else if (!has_ckpt && !o->overwrite_output_dir && !dir_is_empty(o->output_dir)) {
        rc = lmf_errorf(LMF_EINVAL,
                        "output_dir %s is not empty and holds no checkpoint; set "
                        "overwrite_output_dir: true to write into it anyway",
                        o->output_dir);
    }
    free(latest);
    return rc;
}

int lmf_train_run(const lmf_train_options *o) {
    int rc = check_options(o);
    if (rc) return rc;
    trainer t = {.o = o, .comm = o->comm, .rank = 0, .world = 1};
    if (o->comm) t.rank = lmf_comm_rank(o->comm), t.world = lmf_comm_size(o->comm);
    if (o->do_train) rc = choose_resume(&t);
    /* Every rank has looked at output_dir before rank 0 writes into it. */
    if (!rc && t.world > 1) rc = lmf_comm_barrier(t.comm);
    if (!rc && o->do_train && t.rank == 0) rc = lmf_mkdir_p(o->output_dir);
    if (!rc) rc = lmf_tokenizer_load(&t.tok, o->model_dir);
    if (!rc) rc = setup_model(&t);
    if (!rc) {
        t.pad_id = lmf_tokenizer_pad(t.tok) >= 0 ? lmf_tokenizer_pad(t.tok) : 0;
        if (t.pad_id >= t.m->cfg.vocab) t.pad_id = 0;
        /* With tokenized_path, rank 0 tokenises and writes the cache; the others read it. */
        int staged = t.world > 1 && o->tokenized_path;
        if (!staged || t.rank == 0) rc = trainer_setup_data(&t);
        if (staged) {
            int brc = lmf_comm_barrier(t.comm);
            if (!rc) rc = brc;
            if (!rc && t.rank != 0) rc = trainer_setup_data(&t);
        }
    }
    if (!rc && o->do_train) {
        rc = train_loop(&t);
    } else if (!rc && t.rank == 0) {
        rc = eval_only(&t);
    }
    trainer_free_data(&t);
    lmf_lora_free(t.lora);
    lmf_model_free(t.m);
    lmf_tokenizer_free(t.tok);
    free(t.resume_dir);
    return rc;
}
