/* What a training run tells: a live progress bar on a terminal (plain lines otherwise), one
 * trainer_log.jsonl line per logging_steps as LLaMA-Factory writes them, and the log_history
 * of transformers' trainer_state.json, which also feeds the loss plot. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmforge/json.h"
#include "trainer_internal.h"

static void fmt_time(char *buf, size_t n, double s) {
    long x = s > 0 ? (long)(s + 0.5) : 0;
    snprintf(buf, n, "%ld:%02ld:%02ld", x / 3600, x / 60 % 60, x % 60);
}

/* Keeps the lines of trainer_log.jsonl up to step `upto` (a resumed run rewrites what the
 * interrupted one logged after its checkpoint). */
static int truncate_jsonl(const char *path, int64_t upto) {
    char *text = NULL;
    size_t len = 0;
    if (!lmf_path_exists(path)) return 0;
    int rc = lmf_file_read_all(path, &text, &len);
    if (rc) return rc;
    char *out = malloc(len + 1);
    size_t o = 0;
    if (!out) {
        free(text);
        return lmf_errorf(LMF_ENOMEM, "out of memory");
    }
    for (char *line = text; *line;) {
        char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        cJSON *j = cJSON_ParseWithLength(line, n);
        const cJSON *s = j ? cJSON_GetObjectItemCaseSensitive(j, "current_steps") : NULL;
        if (j && (!cJSON_IsNumber(s) || s->valuedouble <= (double)upto)) {
            memcpy(out + o, line, n);
            o += n;
            out[o++] = '\n';
        }
        cJSON_Delete(j);
        line += n + (end != NULL);
    }
    rc = lmf_file_write_atomic(path, out, o);
    free(out), free(text);
    return rc;
}

int train_log_open(train_log *l, const char *output_dir, const char *resume_dir,
                   int64_t resume_step) {
    memset(l, 0, sizeof *l);
    l->tty = isatty(STDOUT_FILENO);
    l->t0 = lmf_time_sec();
    l->first = resume_dir ? resume_step : 0;
    char *path = lmf_path_join(output_dir, "trainer_log.jsonl");
    int rc = resume_dir ? truncate_jsonl(path, resume_step) : 0;
    if (!rc) {
        l->jsonl = fopen(path, resume_dir ? "a" : "w");
        if (!l->jsonl) rc = lmf_errorf(LMF_EIO, "%s: cannot write", path);
    }
    free(path);
    if (!rc && resume_dir) {
        char *sp = lmf_path_join(resume_dir, "trainer_state.json");
        cJSON *state = NULL;
        if (lmf_path_exists(sp) && lmf_json_load(sp, &state) == 0) {
            cJSON *h = cJSON_DetachItemFromObjectCaseSensitive(state, "log_history");
            if (cJSON_IsArray(h))
                l->history = h;
            else
                cJSON_Delete(h);
        }
        cJSON_Delete(state);
        free(sp);
    }
    if (!rc && !l->history && !(l->history = cJSON_CreateArray()))
        rc = lmf_errorf(LMF_ENOMEM, "out of memory");
    return rc;
}

void train_log_close(train_log *l) {
    train_log_clear_bar(l);
    if (l->jsonl) fclose(l->jsonl);
    cJSON_Delete(l->history);
    memset(l, 0, sizeof *l);
}

void train_log_clear_bar(train_log *l) {
    if (l->bar_visible) {
        fputs("\r\033[K", stdout);
        fflush(stdout);
        l->bar_visible = 0;
    }
}

static void timing(const train_log *l, int64_t step, int64_t total, double *el, double *rem) {
    *el = lmf_time_sec() - l->t0;
    int64_t done = step - l->first;
    *rem = done > 0 ? *el / (double)done * (double)(total - step) : 0;
}

void train_log_progress(train_log *l, const step_report *s) {
    if (!l->tty) return;
    double el, rem;
    timing(l, s->step, s->total, &el, &rem);
    char e1[32], e2[32], bar[33];
    fmt_time(e1, sizeof e1, el), fmt_time(e2, sizeof e2, rem);
    int w = 24, fill = (int)((double)w * (double)s->step / (double)s->total);
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    printf("\r\033[K%lld/%lld [%s] %3.0f%%  loss %.4f  lr %.2e  %.0f tok/s  %s<%s",
           (long long)s->step, (long long)s->total, bar, 100.0 * (double)s->step / (double)s->total,
           s->loss, s->lr, s->tokens_per_s, e1, e2);
    fflush(stdout);
    l->bar_visible = 1;
}

static void history_add(train_log *l, cJSON *entry) {
    if (entry) cJSON_AddItemToArray(l->history, entry);
}

void train_log_step(train_log *l, const step_report *s) {
    double el, rem;
    timing(l, s->step, s->total, &el, &rem);
    char e1[32], e2[32];
    fmt_time(e1, sizeof e1, el), fmt_time(e2, sizeof e2, rem);
    int tty = l->bar_visible;
    train_log_clear_bar(l);
    printf(
        "step %lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  epoch %.2f  %.0f tokens/s  eta %s\n",
        (long long)s->step, (long long)s->total, s->loss, s->lr, s->grad_norm, s->epoch,
        s->tokens_per_s, e2);
    fflush(stdout);
    if (tty) train_log_progress(l, s);
    if (l->jsonl) {
        fprintf(l->jsonl,
                "{\"current_steps\": %lld, \"total_steps\": %lld, \"loss\": %.6g, \"lr\": %.6g, "
                "\"grad_norm\": %.6g, \"epoch\": %.4f, \"percentage\": %.2f, \"elapsed_time\": "
                "\"%s\", \"remaining_time\": \"%s\", \"throughput\": %.1f, \"total_tokens\": "
                "%lld}\n",
                (long long)s->step, (long long)s->total, s->loss, s->lr, s->grad_norm, s->epoch,
                100.0 * (double)s->step / (double)s->total, e1, e2, s->tokens_per_s,
                (long long)s->total_tokens);
        fflush(l->jsonl);
    }
    cJSON *e = cJSON_CreateObject();
    if (e) {
        cJSON_AddNumberToObject(e, "epoch", s->epoch);
        cJSON_AddNumberToObject(e, "grad_norm", s->grad_norm);
        cJSON_AddNumberToObject(e, "learning_rate", s->lr);
        cJSON_AddNumberToObject(e, "loss", s->loss);
        cJSON_AddNumberToObject(e, "num_input_tokens_seen", (double)s->total_tokens);
        cJSON_AddNumberToObject(e, "step", (double)s->step);
    }
    history_add(l, e);
}

void train_log_eval(train_log *l, int64_t step, int64_t total, double epoch, const eval_result *r) {
    train_log_clear_bar(l);
    printf("eval at step %lld: loss %.4f  perplexity %.3f  (%lld examples, %lld tokens, %.1f s)\n",
           (long long)step, r->loss, r->perplexity, (long long)r->samples, (long long)r->targets,
           r->runtime);
    fflush(stdout);
    if (l->jsonl) {
        fprintf(l->jsonl,
                "{\"current_steps\": %lld, \"total_steps\": %lld, \"eval_loss\": %.6g, "
                "\"eval_perplexity\": %.6g, \"epoch\": %.4f, \"percentage\": %.2f}\n",
                (long long)step, (long long)total, r->loss, r->perplexity, epoch,
                total ? 100.0 * (double)step / (double)total : 100.0);
        fflush(l->jsonl);
    }
    cJSON *e = cJSON_CreateObject();
    if (e) {
        double rt = r->runtime > 1e-9 ? r->runtime : 1e-9;
        cJSON_AddNumberToObject(e, "epoch", epoch);
        cJSON_AddNumberToObject(e, "eval_loss", r->loss);
        cJSON_AddNumberToObject(e, "eval_perplexity", r->perplexity);
        cJSON_AddNumberToObject(e, "eval_runtime", r->runtime);
        cJSON_AddNumberToObject(e, "eval_samples_per_second", (double)r->samples / rt);
        cJSON_AddNumberToObject(e, "eval_steps_per_second", (double)r->batches / rt);
        cJSON_AddNumberToObject(e, "step", (double)step);
    }
    history_add(l, e);
}

void train_log_final(train_log *l, cJSON *metrics, int64_t step, double epoch) {
    cJSON *e = cJSON_Duplicate(metrics, 1);
    if (!e) return;
    cJSON_DeleteItemFromObjectCaseSensitive(e, "epoch");
    cJSON_AddNumberToObject(e, "epoch", epoch);
    cJSON_AddNumberToObject(e, "step", (double)step);
    history_add(l, e);
}

int train_log_write_state(const train_log *l, const trainer *t, const char *dir, double epoch) {
    const lmf_train_options *o = t->o;
    cJSON *s = cJSON_CreateObject();
    if (!s) return lmf_errorf(LMF_ENOMEM, "out of memory");
    cJSON_AddNullToObject(s, "best_metric");
    cJSON_AddNullToObject(s, "best_model_checkpoint");
    cJSON_AddNumberToObject(s, "epoch", epoch);
    cJSON_AddNumberToObject(s, "eval_steps", o->eval_steps);
    cJSON_AddNumberToObject(s, "global_step", (double)t->step);
    cJSON_AddBoolToObject(s, "is_hyper_param_search", 0);
    cJSON_AddBoolToObject(s, "is_local_process_zero", 1);
    cJSON_AddBoolToObject(s, "is_world_process_zero", 1);
    cJSON_AddItemToObject(s, "log_history", cJSON_Duplicate(l->history, 1));
    cJSON_AddNumberToObject(s, "logging_steps", o->logging_steps);
    cJSON_AddNumberToObject(s, "max_steps", (double)t->total);
    cJSON_AddNumberToObject(s, "num_input_tokens_seen", (double)t->tokens);
    cJSON_AddNumberToObject(s, "num_train_epochs", o->epochs);
    cJSON_AddNumberToObject(s, "save_steps", o->save_steps);
    cJSON_AddItemToObject(s, "stateful_callbacks", cJSON_CreateObject());
    cJSON_AddNumberToObject(s, "total_flos", 0);
    cJSON_AddNumberToObject(s, "train_batch_size", o->batch_size);
    cJSON_AddNullToObject(s, "trial_name");
    cJSON_AddNullToObject(s, "trial_params");
    int rc = lmf_json_save(dir, "trainer_state.json", s);
    cJSON_Delete(s);
    return rc;
}

int train_log_curve(const train_log *l, const char *key, double **x, double **y, int *n) {
    int cap = cJSON_GetArraySize(l->history), k = 0;
    *x = calloc((size_t)cap + 1, sizeof **x), *y = calloc((size_t)cap + 1, sizeof **y);
    if (!*x || !*y) {
        free(*x), free(*y);
        *x = *y = NULL;
        return lmf_errorf(LMF_ENOMEM, "out of memory");
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, l->history) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key),
                    *s = cJSON_GetObjectItemCaseSensitive(e, "step");
        if (cJSON_IsNumber(v) && cJSON_IsNumber(s))
            (*x)[k] = s->valuedouble, (*y)[k++] = v->valuedouble;
    }
    *n = k;
    return 0;
}
