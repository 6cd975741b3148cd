/* The trainer's data: records -> template -> ids/labels (or the tokenized_path cache of them)
 * -> optional packing -> rows; and right-padded micro-batches of rows. Padding is never a
 * target and, being after the real tokens of its row, is never attended to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/encode.h"
#include "lmforge/token_cache.h"
#include "trainer_internal.h"

/* What the tokenised examples depend on, as key=value lines: a cache made from other settings
 * is refused, naming the key. */
static char *cache_description(const trainer *t) {
    const lmf_train_options *o = t->o;
    uint64_t tok_hash = 0;
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char *p = lmf_path_join(o->model_dir, files[i]), *text = NULL;
        size_t len = 0;
        if (p && lmf_file_read_all(p, &text, &len) == 0)
            tok_hash = lmf_hash_u64(tok_hash ^ lmf_hash_bytes(text, len));
        free(text), free(p);
    }
    char *buf = malloc(4096);
    if (!buf) return NULL;
    const lmf_dataset_options *d = &o->data;
    snprintf(buf, 4096,
             "stage=%s\ntemplate=%s\ncutoff_len=%d\ntrain_on_prompt=%d\nmask_history=%d\n"
             "enable_thinking=%d\ndataset=%s\ndataset_dir=%s\neval_dataset=%s\nmax_samples=%lld\n"
             "mix_strategy=%s\nval_size=%g\nsplit_seed=%llu\ntokenizer=%016llx\n",
             o->stage, o->template_name ? o->template_name : "", o->cutoff_len, o->train_on_prompt,
             o->mask_history, o->enable_thinking, d->dataset ? d->dataset : "",
             d->dataset_dir ? d->dataset_dir : "data", o->eval_dataset ? o->eval_dataset : "",
             (long long)d->max_samples, d->mix_strategy ? d->mix_strategy : "concat", d->val_size,
             (unsigned long long)(d->val_size > 0 ? d->seed : 0), (unsigned long long)tok_hash);
    return buf;
}

/* Records -> examples for the training set and the eval set (val_size split or
 * eval_dataset). */
static int encode_datasets(trainer *t, lmf_example **train, int64_t *n_train, lmf_example **eval,
                           int64_t *n_eval) {
    const lmf_train_options *o = t->o;
    int pt = !strcmp(o->stage, "pt"), rc;
    const lmf_template *tpl = NULL;
    if (!pt && !(tpl = lmf_template_find(o->template_name ? o->template_name : "")))
        return lmf_error_prefix(LMF_EINVAL, "template");
    lmf_record_set tr = {0}, ev = {0};
    /* An eval-only run (do_train false) may name just eval_dataset. */
    if ((o->do_train || !o->eval_dataset) && (rc = lmf_dataset_load(&o->data, &tr, &ev))) return rc;
    if (o->eval_dataset) {
        if (ev.n > 0) {
            lmf_record_set_free(&tr), lmf_record_set_free(&ev);
            return lmf_errorf(LMF_EINVAL, "eval_dataset and val_size: set one of them, not both");
        }
        lmf_dataset_options eo = o->data;
        eo.dataset = o->eval_dataset, eo.val_size = 0;
        if ((rc = lmf_dataset_load(&eo, &ev, NULL))) {
            lmf_record_set_free(&tr);
            return lmf_error_prefix(rc, "eval_dataset");
        }
    }
    lmf_encode_options enc = {
        t->tok, tpl, pt, o->cutoff_len, o->train_on_prompt, o->mask_history, o->enable_thinking};
    lmf_encode_stats st = {0}, est = {0};
    if (tr.n > 0) rc = lmf_encode_records(&enc, &tr, train, n_train, &st);
    if (!rc && ev.n > 0) rc = lmf_encode_records(&enc, &ev, eval, n_eval, &est);
    lmf_record_set_free(&tr);
    lmf_record_set_free(&ev);
    if (rc) return rc;
    if (*n_train)
        lmf_info("data: %lld examples (%lld tokens, %lld cut to cutoff_len %d)",
                 (long long)st.examples, (long long)st.tokens, (long long)st.truncated,
                 o->cutoff_len);
    if (*n_eval)
        lmf_info("eval data: %lld examples (%lld tokens)", (long long)*n_eval,
                 (long long)est.tokens);
    return 0;
}

static int check_vocab(const lmf_example *ex, int64_t n, int vocab, const char *what) {
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < ex[i].n; k++)
            if (ex[i].ids[k] < 0 || ex[i].ids[k] >= vocab)
                return lmf_errorf(LMF_ERANGE,
                                  "%s example %lld: token id %d is outside the model's "
                                  "vocabulary (%d)",
                                  what, (long long)i, ex[i].ids[k], vocab);
    return 0;
}

static int build_rows(row_set *s, int pack, int cutoff) {
    if (pack) {
        int rc = lmf_pack(s->ex, (int)s->n_ex, cutoff, &s->packed, &s->n_packed);
        if (rc) return rc;
        s->n = s->n_packed;
    } else {
        s->n = s->n_ex;
    }
    s->rows = calloc((size_t)s->n + 1, sizeof *s->rows);
    if (!s->rows) return lmf_errorf(LMF_ENOMEM, "out of memory");
    for (int64_t i = 0; i < s->n; i++)
        s->rows[i] = s->packed ? (row){s->packed[i].ids, s->packed[i].labels, s->packed[i].pos,
                                       s->packed[i].seg, s->packed[i].n}
                               : (row){s->ex[i].ids, s->ex[i].labels, NULL, NULL, s->ex[i].n};
    return 0;
}

static int max_row_len(const row_set *s) {
    int m = 1;
    for (int64_t i = 0; i < s->n; i++)
        if (s->rows[i].n > m) m = s->rows[i].n;
    return m;
}

int trainer_setup_data(trainer *t) {
    const lmf_train_options *o = t->o;
    int rc = 0, loaded = 0;
    char *cache = NULL, *desc = NULL;
    if (o->tokenized_path) {
        if ((rc = lmf_mkdir_p(o->tokenized_path)))
            return lmf_error_prefix(rc, "tokenized_path %s", o->tokenized_path);
        cache = lmf_path_join(o->tokenized_path, LMF_TOKEN_CACHE_FILE);
        if (!(desc = cache_description(t))) rc = lmf_errorf(LMF_ENOMEM, "out of memory");
        if (!rc && !o->overwrite_cache) {
            rc = lmf_token_cache_load(cache, desc, &t->train.ex, &t->train.n_ex, &t->eval.ex,
                                      &t->eval.n_ex);
            if (rc == 0) {
                loaded = 1;
                lmf_info("data: %lld examples (+%lld eval) from tokenized_path %s",
                         (long long)t->train.n_ex, (long long)t->eval.n_ex, cache);
            } else if (rc == LMF_ENOENT) {
                rc = 0;
            }
        }
    }
    if (!rc && !loaded) {
        rc = encode_datasets(t, &t->train.ex, &t->train.n_ex, &t->eval.ex, &t->eval.n_ex);
        if (!rc && cache) {
            rc = lmf_token_cache_save(cache, desc, t->train.ex, t->train.n_ex, t->eval.ex,
                                      t->eval.n_ex);
            if (!rc) lmf_info("tokenized dataset saved to %s: later runs reuse it", cache);
        }
    }
    free(cache), free(desc);
    if (rc) return rc;
    if (o->do_train && t->train.n_ex == 0)
        return lmf_errorf(LMF_EINVAL, "dataset: no training example has a token to learn");
    if ((rc = check_vocab(t->train.ex, t->train.n_ex, t->m->cfg.vocab, "training")) ||
        (rc = check_vocab(t->eval.ex, t->eval.n_ex, t->m->cfg.vocab, "eval")))
        return rc;
    int pt = !strcmp(o->stage, "pt");
    if ((rc = build_rows(&t->train, o->packing && !pt, o->cutoff_len)) ||
        (rc = build_rows(&t->eval, 0, o->cutoff_len)))
        return rc;
    if (t->train.packed)
        lmf_info("packing: %lld examples in %lld rows of up to %d tokens", (long long)t->train.n_ex,
                 (long long)t->train.n, o->cutoff_len);
    int len = max_row_len(&t->train), elen = max_row_len(&t->eval);
    size_t cap = (size_t)o->batch_size * (size_t)len,
           ecap = (size_t)o->eval_batch_size * (size_t)elen;
    t->b_cap = cap > ecap ? cap : ecap;
    t->b_ids = malloc(t->b_cap * 4), t->b_labels = malloc(t->b_cap * 4),
    t->b_pos = malloc(t->b_cap * 4), t->b_seg = malloc(t->b_cap * 4);
    if (!t->b_ids || !t->b_labels || !t->b_pos || !t->b_seg)
        return lmf_errorf(LMF_ENOMEM, "out of memory");
    return 0;
}

static void row_set_free(row_set *s) {
    free(s->rows);
    lmf_examples_free(s->ex, s->n_ex);
    lmf_packed_rows_free(s->packed, s->n_packed);
    memset(s, 0, sizeof *s);
}

void trainer_free_data(trainer *t) {
    row_set_free(&t->train);
    row_set_free(&t->eval);
    free(t->b_ids), free(t->b_labels), free(t->b_pos), free(t->b_seg);
    t->b_ids = t->b_labels = t->b_pos = t->b_seg = NULL;
}

int64_t trainer_fill_batch(trainer *t, const row_set *s, const int64_t *idx, int B, lmf_batch *b,
                           int64_t *tokens) {
    int T = 1;
    for (int i = 0; i < B; i++)
        if (s->rows[idx[i]].n > T) T = s->rows[idx[i]].n;
    int64_t targets = 0;
    *tokens = 0;
    for (int i = 0; i < B; i++) {
        const row *r = &s->rows[idx[i]];
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

void trainer_dump_batch(const char *env, int64_t step, int micro, const lmf_batch *b) {
    const char *path = getenv(env);
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
