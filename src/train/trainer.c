/* The single-process training loop behind `lmforge train` (see include/lmforge/trainer.h).
 * Data: records -> template -> ids/labels -> optional packing -> rows; a seeded sampler picks
 * rows; micro-batches are right-padded (padding is never a target and, being after the real
 * tokens, is never attended to). The loss of an optimizer step is the mean over every labelled
 * token of its accumulated micro-batches. */
#include "lmforge/trainer.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/checkpoint.h"
#include "lmforge/encode.h"
#include "lmforge/model.h"
#include "lmforge/optim.h"
#include "lmforge/plot.h"
#include "lmforge/sampler.h"
#include "lmforge/tokenizer.h"

typedef struct row {
    int32_t *ids, *labels, *pos, *seg; /* pos/seg NULL: 0..n-1 and one segment */
    int n;
} row;

typedef struct trainer {
    const lmf_train_options *o;
    lmf_model *m;
    lmf_lora *lora;
    lmf_tokenizer *tok;
    row *rows;
    int64_t n_rows;
    lmf_example *ex;
    int64_t n_ex;
    lmf_packed_row *packed;
    int n_packed;
    int32_t pad_id;
    /* micro-batch buffers */
    int32_t *b_ids, *b_labels, *b_pos, *b_seg;
    FILE *log;
    char *resume_dir; /* checkpoint to continue from, or NULL */
} trainer;

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

static int setup_model(trainer *t) {
    const lmf_train_options *o = t->o;
    int rc = lmf_model_load(&t->m, o->model_dir, lmf_backend_cpu());
    if (rc) return rc;
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
        return rc;
    }
    if (!strcmp(o->finetuning_type, "full")) return lmf_model_enable_grads(t->m);
    return setup_freeze(t);
}

static int setup_data(trainer *t) {
    const lmf_train_options *o = t->o;
    int pt = !strcmp(o->stage, "pt"), rc;
    const lmf_template *tpl = NULL;
    if (!pt && !(tpl = lmf_template_find(o->template_name ? o->template_name : "")))
        return lmf_error_prefix(LMF_EINVAL, "template");
    lmf_record_set train = {0}, eval = {0};
    if ((rc = lmf_dataset_load(&o->data, &train, &eval))) return rc;
    lmf_encode_options eo = {
        t->tok, tpl, pt, o->cutoff_len, o->train_on_prompt, o->mask_history, o->enable_thinking};
    lmf_encode_stats st;
    rc = lmf_encode_records(&eo, &train, &t->ex, &t->n_ex, &st);
    lmf_record_set_free(&train);
    lmf_record_set_free(&eval);
    if (rc) return rc;
    for (int64_t i = 0; i < t->n_ex; i++)
        for (int k = 0; k < t->ex[i].n; k++)
            if (t->ex[i].ids[k] >= t->m->cfg.vocab)
                return lmf_errorf(
                    LMF_ERANGE,
                    "token id %d from the tokenizer is outside the model's vocabulary (%d)",
                    t->ex[i].ids[k], t->m->cfg.vocab);
    if (o->packing && !pt) {
        if ((rc = lmf_pack(t->ex, (int)t->n_ex, o->cutoff_len, &t->packed, &t->n_packed)))
            return rc;
        t->n_rows = t->n_packed;
    } else {
        t->n_rows = t->n_ex;
    }
    t->rows = calloc((size_t)t->n_rows, sizeof *t->rows);
    if (!t->rows) return lmf_errorf(LMF_ENOMEM, "out of memory");
    for (int64_t i = 0; i < t->n_rows; i++)
        t->rows[i] = t->packed ? (row){t->packed[i].ids, t->packed[i].labels, t->packed[i].pos,
                                       t->packed[i].seg, t->packed[i].n}
                               : (row){t->ex[i].ids, t->ex[i].labels, NULL, NULL, t->ex[i].n};
    size_t cap = (size_t)o->batch_size * (size_t)o->cutoff_len;
    t->b_ids = malloc(cap * 4), t->b_labels = malloc(cap * 4), t->b_pos = malloc(cap * 4),
    t->b_seg = malloc(cap * 4);
    if (!t->b_ids || !t->b_labels || !t->b_pos || !t->b_seg)
        return lmf_errorf(LMF_ENOMEM, "out of memory");
    lmf_info("data: %lld examples (%lld tokens, %lld cut to cutoff_len %d) in %lld rows%s",
             (long long)st.examples, (long long)st.tokens, (long long)st.truncated, o->cutoff_len,
             (long long)t->n_rows, t->packed ? " (packed)" : "");
    return 0;
}

/* Fills the micro-batch from the next rows; returns its labelled-target count. */
static int64_t next_batch(trainer *t, lmf_sampler *s, lmf_batch *b, int64_t *tokens) {
    int B = t->o->batch_size, T = 1;
    int64_t idx[1024];
    for (int i = 0; i < B; i++) {
        idx[i] = lmf_sampler_next(s, NULL);
        if (t->rows[idx[i]].n > T) T = t->rows[idx[i]].n;
    }
    int64_t targets = 0;
    *tokens = 0;
    for (int i = 0; i < B; i++) {
        const row *r = &t->rows[idx[i]];
        for (int k = 0; k < T; k++) {
            size_t at = (size_t)i * T + k;
            int real = k < r->n;
            t->b_ids[at] = real ? r->ids[k] : t->pad_id;
            t->b_labels[at] = real ? r->labels[k] : LMF_IGNORE_INDEX;
            t->b_pos[at] = real && r->pos ? r->pos[k] : k;
            t->b_seg[at] = real ? (r->seg ? r->seg[k] : 0) : -1;
        }
        for (int k = 0; k + 1 < r->n; k++) /* targets: the next token's label, same segment */
            targets +=
                r->labels[k + 1] != LMF_IGNORE_INDEX && (!r->seg || r->seg[k + 1] == r->seg[k]);
        *tokens += r->n;
    }
    *b = (lmf_batch){B, T, t->b_ids, t->b_labels, t->b_pos, t->b_seg};
    return targets;
}

/* Test hook: with LMF_TRAIN_DUMP_BATCHES=file, each micro-batch is appended to the file as one
 * JSON line (step, micro, ids, labels, pos, seg), so tests/reference can feed an independent
 * trainer exactly the batches lmforge trained on. */
static void dump_batch(int64_t step, int micro, const lmf_batch *b) {
    const char *path = getenv("LMF_TRAIN_DUMP_BATCHES");
    if (!path || !*path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "{\"step\": %lld, \"micro\": %d", (long long)step, micro);
    const int32_t *arr[4] = {b->ids, b->labels, b->pos, b->seg};
    const char *names[4] = {"ids", "labels", "pos", "seg"};
    for (int k = 0; k < 4; k++) {
        fprintf(f, ", \"%s\": [", names[k]);
        for (int i = 0; i < b->B; i++) {
            fputs(i ? ", [" : "[", f);
            for (int j = 0; j < b->T; j++)
                fprintf(f, j ? ", %d" : "%d", (int)arr[k][(size_t)i * b->T + j]);
            fputc(']', f);
        }
        fputc(']', f);
    }
    fputs("}\n", f);
    fclose(f);
}

static void fmt_time(char *buf, size_t n, double s) {
    long x = (long)(s + 0.5);
    snprintf(buf, n, "%ld:%02ld:%02ld", x / 3600, x / 60 % 60, x % 60);
}

static int save_outputs(trainer *t) {
    const lmf_train_options *o = t->o;
    int rc =
        t->lora ? lmf_lora_save(t->lora, t->m, o->output_dir) : lmf_model_save(t->m, o->output_dir);
    if (!rc) rc = lmf_tokenizer_copy_files(o->model_dir, o->output_dir);
    return rc;
}

/* Everything besides weights and optimizer moments that a resumed run needs to continue as
 * if uninterrupted. Fixed layout behind a magic and a version. */
typedef struct run_state {
    int64_t step, total, consumed, tokens;
    uint64_t numel, fingerprint;
    uint8_t sampler[LMF_SAMPLER_STATE_BYTES];
    uint64_t dropout_rng[4];
    double loss_acc;
} run_state;

static const char state_magic[8] = {'L', 'M', 'F', 'T', 'R', 'S', 'T', '1'};

/* Identifies what was trained: a checkpoint of another model or method is refused. */
static uint64_t fingerprint(const trainer *t) {
    char buf[256];
    const lmf_model_config *c = &t->m->cfg;
    int n =
        snprintf(buf, sizeof buf, "%s|%d|%d|%d|%d|%d|%d|%u|%d", t->o->finetuning_type, c->hidden,
                 c->layers, c->heads, c->kv_heads, c->vocab, t->lora ? t->lora->r : 0,
                 t->lora ? t->lora->targets : 0u, t->o->freeze_trainable_layers);
    return lmf_hash_bytes(buf, (size_t)n);
}

static int save_state(const char *path, const run_state *st) {
    uint8_t buf[16 + sizeof *st];
    uint32_t version = 1, reserved = 0;
    memcpy(buf, state_magic, 8);
    memcpy(buf + 8, &version, 4);
    memcpy(buf + 12, &reserved, 4);
    memcpy(buf + 16, st, sizeof *st);
    return lmf_file_write_atomic(path, buf, sizeof buf);
}

static int load_state(const char *path, run_state *st) {
    char *data;
    size_t len;
    int rc = lmf_file_read_all(path, &data, &len);
    if (rc) return rc;
    uint32_t version = 0;
    if (len >= 12) memcpy(&version, data + 8, 4);
    if (len != 16 + sizeof *st || memcmp(data, state_magic, 8) || version != 1)
        rc = lmf_errorf(LMF_EFORMAT, "%s: not a trainer state of this lmforge version (size %zu)",
                        path, len);
    else
        memcpy(st, data + 16, sizeof *st);
    free(data);
    if (!rc && (st->step < 0 || st->step > st->total || st->consumed < 0))
        rc = lmf_errorf(LMF_EFORMAT, "%s: corrupt trainer state", path);
    return rc;
}

/* Writes checkpoint-N: weights, optimizer, run state; atomically as a folder. */
static int save_checkpoint(trainer *t, const lmf_adamw *opt, const lmf_sampler *smp,
                           const run_state *st) {
    const lmf_train_options *o = t->o;
    char *tmp = NULL, *p = NULL;
    int rc = lmf_ckpt_begin(o->output_dir, st->step, &tmp);
    if (!rc) rc = t->lora ? lmf_lora_save(t->lora, t->m, tmp) : lmf_model_save(t->m, tmp);
    if (!rc && !o->save_only_model) {
        p = lmf_path_join(tmp, "optimizer.bin");
        rc = lmf_adamw_save(opt, p);
        free(p);
    }
    if (!rc) {
        run_state s = *st;
        lmf_sampler_save(smp, s.sampler);
        if (t->lora) memcpy(s.dropout_rng, t->lora->dropout_rng.s, sizeof s.dropout_rng);
        p = lmf_path_join(tmp, "trainer_state.bin");
        rc = save_state(p, &s);
        free(p);
    }
    if (!rc) {
        char json[256];
        int n = snprintf(
            json, sizeof json,
            "{\n  \"global_step\": %lld,\n  \"max_steps\": %lld,\n  \"epoch\": %.4f\n}\n",
            (long long)st->step, (long long)st->total, (double)st->consumed / (double)t->n_rows);
        p = lmf_path_join(tmp, "trainer_state.json");
        rc = lmf_file_write_atomic(p, json, (size_t)n);
        free(p);
    }
    if (!rc) rc = lmf_ckpt_commit(o->output_dir, st->step, tmp);
    if (rc) {
        lmf_error_prefix(rc, "saving checkpoint-%lld (the previous checkpoint is kept)",
                         (long long)st->step);
        if (tmp) lmf_remove_tree(tmp);
    } else {
        rc = lmf_ckpt_prune(o->output_dir, o->save_total_limit);
    }
    free(tmp);
    return rc;
}

/* Restores weights, optimizer and run state from a checkpoint folder. */
static int load_checkpoint(trainer *t, const char *dir, lmf_adamw *opt, lmf_sampler *smp,
                           run_state *st) {
    char *p = lmf_path_join(dir, "trainer_state.bin");
    int rc = load_state(p, st);
    free(p);
    if (rc) return rc;
    size_t numel = t->lora ? t->lora->numel : t->m->numel;
    if (st->fingerprint != fingerprint(t) || st->numel != numel)
        return lmf_errorf(
            LMF_EINVAL,
            "%s: a checkpoint of another model, method or LoRA setting; refusing to resume", dir);
    if (t->lora) {
        lmf_lora *l = NULL;
        if ((rc = lmf_lora_load(&l, t->m, dir))) return rc;
        if (l->numel != numel)
            rc = lmf_errorf(LMF_EINVAL, "%s: adapter does not match this run", dir);
        else
            memcpy(t->lora->params, l->params, numel * sizeof(float));
        lmf_lora_free(l);
        memcpy(t->lora->dropout_rng.s, st->dropout_rng, sizeof st->dropout_rng);
    } else {
        lmf_model *m = NULL;
        if ((rc = lmf_model_load(&m, dir, lmf_backend_cpu()))) return rc;
        if (m->numel != numel)
            rc = lmf_errorf(LMF_EINVAL, "%s: model does not match this run", dir);
        else
            memcpy(t->m->params, m->params, numel * sizeof(float));
        lmf_model_free(m);
    }
    if (rc) return rc;
    p = lmf_path_join(dir, "optimizer.bin");
    if (lmf_path_exists(p))
        rc = lmf_adamw_load(opt, p);
    else
        lmf_warn("%s: no optimizer state (save_only_model): moments restart from zero", dir);
    free(p);
    if (!rc) rc = lmf_sampler_restore(smp, st->sampler, dir);
    return rc;
}

static int train_loop(trainer *t) {
    const lmf_train_options *o = t->o;
    float *params = t->lora ? t->lora->params : t->m->params,
          *grads = t->lora ? t->lora->grads : t->m->grads;
    size_t numel = t->lora ? t->lora->numel : t->m->numel;
    lmf_opt_segment *segs = NULL;
    int n_segs = 0, rc;
    if (t->lora) {
        n_segs = 1;
        segs = malloc(sizeof *segs);
        if (!segs) return lmf_errorf(LMF_ENOMEM, "out of memory");
        segs[0] = (lmf_opt_segment){0, numel, 1}; /* LoRA A and B are weights: decayed, as in HF */
    } else if ((rc = lmf_opt_segments_from_params(t->m->table, t->m->n_params, t->m->trainable,
                                                  &segs, &n_segs))) {
        return rc;
    }
    int64_t batches_per_epoch = (t->n_rows + o->batch_size - 1) / o->batch_size;
    int64_t steps_per_epoch =
        batches_per_epoch / o->grad_accum > 0 ? batches_per_epoch / o->grad_accum : 1;
    int64_t total =
        o->max_steps > 0 ? o->max_steps : (int64_t)ceil(o->epochs * (double)steps_per_epoch);
    if (total <= 0) total = 1;
    lmf_schedule sched;
    lmf_adamw opt = {0};
    lmf_sampler sampler = {0};
    double *curve_x = calloc((size_t)total, sizeof(double)),
           *curve_y = calloc((size_t)total, sizeof(double));
    int n_curve = 0;
    int64_t warm = lmf_warmup_steps(o->warmup_steps, o->warmup_ratio, total);
    if (!curve_x || !curve_y)
        rc = lmf_errorf(LMF_ENOMEM, "out of memory");
    else if (!(rc = lmf_schedule_init(&sched, o->scheduler, o->learning_rate, total, warm, 0)))
        if (!(rc = lmf_adamw_init(&opt, numel, o->beta1, o->beta2, o->eps, o->weight_decay)))
            rc = lmf_sampler_init(&sampler, t->n_rows, 1, 0, o->seed, 1);
    lmf_info("training: %lld steps (%lld per epoch), batch %d x accumulation %d, %s, %zu trainable "
             "parameters",
             (long long)total, (long long)steps_per_epoch, o->batch_size, o->grad_accum,
             o->finetuning_type, numel);
    double t0 = lmf_time_sec(), loss_acc = 0, logged_loss = 0;
    int64_t tok_acc = 0, consumed = 0, first = 0;
    if (!rc && t->resume_dir) {
        run_state st;
        rc = load_checkpoint(t, t->resume_dir, &opt, &sampler, &st);
        if (!rc && st.total != total)
            rc = lmf_errorf(LMF_EINVAL, "%s: saved for %lld total steps, this config gives %lld",
                            t->resume_dir, (long long)st.total, (long long)total);
        if (!rc) {
            first = st.step, consumed = st.consumed, tok_acc = st.tokens, loss_acc = st.loss_acc;
            lmf_info("resumed from %s: step %lld of %lld, epoch %.2f, learning rate %.6g",
                     t->resume_dir, (long long)first, (long long)total,
                     (double)consumed / (double)t->n_rows, lmf_schedule_lr(&sched, first));
        }
    }
    for (int64_t step = first; step < total && !rc; step++) {
        memset(grads, 0, numel * sizeof(float));
        lmf_batch mb[64];
        int64_t tgt[64], tok[64], step_targets = 0;
        double step_loss_sum = 0;
        /* The step's loss averages over all labelled tokens of its micro-batches. */
        for (int a = 0; a < o->grad_accum && !rc; a++) {
            tgt[a] = next_batch(t, &sampler, &mb[a], &tok[a]);
            dump_batch(step, a, &mb[a]);
            step_targets += tgt[a];
            /* next_batch reuses one buffer: run each micro-batch right away with a provisional
             * denominator, then rescale the gradients once the step's total is known. */
            t->m->loss_denom = 1.0;
            double mean;
            int64_t nt;
            rc = lmf_model_forward(t->m, &mb[a], 1, &mean, &nt, NULL, NULL);
            if (!rc) rc = lmf_model_backward(t->m);
            step_loss_sum += mean * (double)nt;
            tok_acc += tok[a];
            consumed += o->batch_size;
        }
        if (rc) break;
        double inv = step_targets ? 1.0 / (double)step_targets : 0.0;
        for (size_t i = 0; i < numel; i++) grads[i] *= (float)inv;
        float gnorm = lmf_clip_grad_norm(grads, segs, n_segs, o->max_grad_norm);
        double lr = lmf_schedule_lr(&sched, step);
        if ((rc = lmf_adamw_step(&opt, params, grads, segs, n_segs, lr))) break;
        double loss = step_targets ? step_loss_sum / (double)step_targets : 0.0;
        loss_acc += loss;
        if ((step + 1) % o->logging_steps == 0 || step + 1 == total) {
            int64_t k =
                (step + 1) % o->logging_steps ? (step + 1) % o->logging_steps : o->logging_steps;
            logged_loss = loss_acc / (double)k;
            loss_acc = 0;
            double el = lmf_time_sec() - t0,
                   rem = el / (double)(step + 1) * (double)(total - step - 1);
            char e1[32], e2[32];
            fmt_time(e1, sizeof e1, el), fmt_time(e2, sizeof e2, rem);
            double epoch = (double)consumed / (double)t->n_rows, tps = (double)tok_acc / el;
            printf("step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  epoch %.2f  %.0f tokens/s  "
                   "eta %s\n",
                   (long long)(step + 1), (long long)total, logged_loss, lr, gnorm, epoch, tps, e2);
            fflush(stdout);
            if (t->log) {
                fprintf(
                    t->log,
                    "{\"current_steps\": %lld, \"total_steps\": %lld, \"loss\": %.6g, \"lr\": "
                    "%.6g, "
                    "\"grad_norm\": %.6g, \"epoch\": %.4f, \"percentage\": %.2f, \"elapsed_time\": "
                    "\"%s\", "
                    "\"remaining_time\": \"%s\", \"throughput\": %.1f, \"total_tokens\": %lld}\n",
                    (long long)(step + 1), (long long)total, logged_loss, lr, gnorm, epoch,
                    100.0 * (double)(step + 1) / (double)total, e1, e2, tps, (long long)tok_acc);
                fflush(t->log);
            }
            curve_x[n_curve] = (double)(step + 1), curve_y[n_curve++] = logged_loss;
        }
        int64_t done = step + 1;
        int save = !strcmp(o->save_strategy, "steps")   ? done % o->save_steps == 0
                   : !strcmp(o->save_strategy, "epoch") ? done % steps_per_epoch == 0
                                                        : 0;
        if (save && done < total) {
            run_state st = {done,           total, consumed, tok_acc, numel,
                            fingerprint(t), {0},   {0},      loss_acc};
            rc = save_checkpoint(t, &opt, &sampler, &st);
        }
    }
    t->m->loss_denom = 0;
    double runtime = lmf_time_sec() - t0;
    if (!rc) rc = save_outputs(t);
    if (!rc) {
        char *p = lmf_path_join(o->output_dir, "train_results.json");
        char buf[512];
        int len = snprintf(
            buf, sizeof buf,
            "{\n  \"epoch\": %.4f,\n  \"total_flos\": 0,\n  \"train_loss\": %.6g,\n  "
            "\"train_runtime\": %.3f,\n"
            "  \"train_samples_per_second\": %.3f,\n  \"train_steps_per_second\": %.3f\n}\n",
            (double)consumed / (double)t->n_rows, logged_loss, runtime, (double)consumed / runtime,
            (double)total / runtime);
        rc = lmf_file_write_atomic(p, buf, (size_t)len);
        free(p);
        p = lmf_path_join(o->output_dir, "all_results.json");
        if (!rc) rc = lmf_file_write_atomic(p, buf, (size_t)len);
        free(p);
    }
    if (!rc && o->plot_loss && n_curve > 0) {
        char *p = lmf_path_join(o->output_dir, "training_loss.png");
        rc = lmf_plot_loss(p, curve_x, curve_y, n_curve, "training loss", "loss");
        free(p);
    }
    if (!rc) lmf_info("saved to %s (%.1f s)", o->output_dir, runtime);
    free(curve_x), free(curve_y), free(segs);
    lmf_adamw_free(&opt);
    lmf_sampler_free(&sampler);
    return rc;
}

int lmf_train_run(const lmf_train_options *o) {
    if (!o->model_dir) return lmf_errorf(LMF_EINVAL, "model_name_or_path is required");
    if (!o->output_dir) return lmf_errorf(LMF_EINVAL, "output_dir is required");
    if (o->batch_size > 1024 || o->grad_accum > 64)
        return lmf_errorf(
            LMF_EINVAL,
            "per_device_train_batch_size <= 1024 and gradient_accumulation_steps <= 64");
    trainer t = {.o = o};
    int64_t ck_step;
    char *latest = NULL;
    int has_ckpt = lmf_ckpt_latest(o->output_dir, &latest, &ck_step) == 0;
    if (o->resume_from_checkpoint && strcmp(o->resume_from_checkpoint, "false") &&
        strcmp(o->resume_from_checkpoint, "False")) {
        if (!strcmp(o->resume_from_checkpoint, "true") ||
            !strcmp(o->resume_from_checkpoint, "True")) {
            if (!has_ckpt)
                return lmf_errorf(LMF_ENOENT, "resume_from_checkpoint: no checkpoint-N in %s",
                                  o->output_dir);
            t.resume_dir = latest, latest = NULL;
        } else {
            free(latest);
            if (!lmf_path_exists(o->resume_from_checkpoint))
                return lmf_errorf(LMF_ENOENT, "resume_from_checkpoint: %s does not exist",
                                  o->resume_from_checkpoint);
            t.resume_dir = lmf_strdup(o->resume_from_checkpoint);
            latest = NULL;
        }
    } else if (has_ckpt && !o->overwrite_output_dir) {
        lmf_info("output_dir %s holds checkpoint-%lld: resuming from it (overwrite_output_dir: "
                 "true starts afresh)",
                 o->output_dir, (long long)ck_step);
        t.resume_dir = latest, latest = NULL;
    } else if (!has_ckpt && !o->overwrite_output_dir && !dir_is_empty(o->output_dir)) {
        return lmf_errorf(
            LMF_EINVAL,
            "output_dir %s is not empty and holds no checkpoint; set overwrite_output_dir: true to "
            "write into it anyway",
            o->output_dir);
    }
    free(latest);
    int rc = lmf_mkdir_p(o->output_dir);
    if (!rc) rc = lmf_tokenizer_load(&t.tok, o->model_dir);
    if (!rc) rc = setup_model(&t);
    if (!rc) {
        t.pad_id = lmf_tokenizer_pad(t.tok) >= 0 ? lmf_tokenizer_pad(t.tok) : 0;
        if (t.pad_id >= t.m->cfg.vocab) t.pad_id = 0;
        rc = setup_data(&t);
    }
    if (!rc) {
        char *p = lmf_path_join(o->output_dir, "trainer_log.jsonl");
        t.log = p ? fopen(p, t.resume_dir ? "a" : "w") : NULL;
        if (!t.log) rc = lmf_errorf(LMF_EIO, "%s: cannot write", p ? p : o->output_dir);
        free(p);
    }
    if (!rc) rc = train_loop(&t);
    if (t.log) fclose(t.log);
    free(t.rows);
    free(t.b_ids), free(t.b_labels), free(t.b_pos), free(t.b_seg);
    lmf_examples_free(t.ex, t.n_ex);
    lmf_packed_rows_free(t.packed, t.n_packed);
    lmf_lora_free(t.lora);
    lmf_model_free(t.m);
    lmf_tokenizer_free(t.tok);
    free(t.resume_dir);
    return rc;
}
