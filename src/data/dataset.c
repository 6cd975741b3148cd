/* Dataset loading (LLaMA-Factory's data/loader.py): look names up in dataset_info.json,
 * refuse what we cannot read yet, convert records, concatenate, then split train/eval. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dataset_internal.h"
#include "lmforge/core.h"

void lmf_record_set_free(lmf_record_set *s) {
    for (int64_t i = 0; i < s->n; i++) dataset_record_free(&s->items[i]);
    free(s->items);
    memset(s, 0, sizeof *s);
}

static int set_push(lmf_record_set *s, lmf_record *r) {
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 64;
        lmf_record *p = realloc(s->items, (size_t)cap * sizeof *p);
        if (!p)
            return lmf_errorf(LMF_ENOMEM, "dataset: out of memory for %lld records",
                              (long long)cap);
        s->items = p;
        s->cap = cap;
    }
    s->items[s->n++] = *r;
    return 0;
}

void lmf_record_set_shuffle(lmf_record_set *s, uint64_t seed) {
    lmf_rng rng;
    lmf_rng_seed(&rng, seed);
    for (int64_t i = s->n - 1; i > 0; i--) {
        int64_t j = (int64_t)(lmf_rng_u64(&rng) % (uint64_t)(i + 1));
        lmf_record t = s->items[i];
        s->items[i] = s->items[j];
        s->items[j] = t;
    }
}

int lmf_record_set_split(lmf_record_set *all, double val_size, uint64_t seed, lmf_record_set *train,
                         lmf_record_set *eval) {
    memset(train, 0, sizeof *train);
    memset(eval, 0, sizeof *eval);
    int64_t n = all->n, n_eval;
    if (val_size > 0 && val_size < 1) {
        n_eval = (int64_t)ceil(val_size * (double)n); /* datasets.train_test_split rounds up */
    } else if (val_size >= 1 && val_size == floor(val_size) && val_size < 9e15) {
        n_eval = (int64_t)val_size;
    } else {
        return lmf_errorf(LMF_EINVAL,
                          "val_size: %g must be a fraction in (0, 1) or a whole count >= 1",
                          val_size);
    }
    if (n_eval >= n)
        return lmf_errorf(LMF_EINVAL,
                          "val_size: %g leaves no training records (%lld records, %lld for eval)",
                          val_size, (long long)n, (long long)n_eval);
    lmf_record_set_shuffle(all, seed);
    eval->items = malloc((size_t)n_eval * sizeof *eval->items);
    train->items = malloc((size_t)(n - n_eval) * sizeof *train->items);
    if (!eval->items || !train->items) {
        free(eval->items);
        free(train->items);
        memset(train, 0, sizeof *train);
        memset(eval, 0, sizeof *eval);
        return lmf_errorf(LMF_ENOMEM, "val_size: out of memory splitting %lld records",
                          (long long)n);
    }
    memcpy(eval->items, all->items, (size_t)n_eval * sizeof *eval->items);
    memcpy(train->items, all->items + n_eval, (size_t)(n - n_eval) * sizeof *train->items);
    eval->n = eval->cap = n_eval;
    train->n = train->cap = n - n_eval;
    free(all->items);
    memset(all, 0, sizeof *all);
    return 0;
}

/* Entries we cannot load are refused by name before any file is read. */
static int check_attr(const lmf_dataset_attr *a) {
    if (a->ranking || a->chosen || a->rejected)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "dataset \"%s\": ranking datasets are not supported yet", a->name);
    if (a->kto_tag)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "dataset \"%s\": KTO datasets (kto_tag column) are not supported yet",
                          a->name);
    const char *media = a->images ? "images" : a->videos ? "videos" : a->audios ? "audios" : NULL;
    if (media)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "dataset \"%s\": the \"%s\" column is not supported yet", a->name, media);
    if (a->remote || !a->file_name)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "dataset \"%s\": only local file_name datasets are supported (this "
                          "entry uses %s)",
                          a->name, a->remote ? a->remote : "no file_name");
    if (a->has_num_samples)
        return lmf_errorf(LMF_EUNSUPPORTED, "dataset \"%s\": num_samples is not supported yet",
                          a->name);
    if (a->formatting == LMF_FORMAT_ALPACA && !a->prompt)
        return lmf_errorf(LMF_EFORMAT, "dataset \"%s\": no prompt column", a->name);
    return 0;
}

int lmf_dataset_load_one(const lmf_dataset_info *info, const lmf_dataset_attr *a, const char *stage,
                         int64_t max_samples, lmf_record_set *out) {
    int pt = stage && !strcmp(stage, "pt");
    if (stage && !pt && strcmp(stage, "sft"))
        return lmf_errorf(LMF_EUNSUPPORTED, "stage: \"%s\" is not supported (pt or sft)", stage);
    int64_t start = out->n;
    int rc = check_attr(a);
    if (rc) return rc;
    /* file_name is relative to the directory holding dataset_info.json. */
    char *dir = lmf_strdup(info->path ? info->path : "data/dataset_info.json"), *path = NULL;
    cJSON *recs = NULL;
    if (!dir) return lmf_errorf(LMF_ENOMEM, "dataset \"%s\": out of memory", a->name);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
    } else {
        strcpy(dir, ".");
    }
    path = lmf_path_join(dir, a->file_name);
    if (!path) {
        rc = lmf_errorf(LMF_ENOMEM, "dataset \"%s\": out of memory", a->name);
        goto done;
    }
    if ((rc = dataset_read_file(a->name, path, &recs))) goto done;

    int64_t skipped = 0, first_skip = -1, index = 0;
    char reason[160], first_reason[160] = "";
    for (const cJSON *e = recs->child; e; e = e->next, index++) {
        if (max_samples > 0 && index >= max_samples) break; /* LLaMA-Factory truncates first */
        lmf_record r;
        rc = dataset_convert(a, e, index, pt, &r, reason, sizeof reason);
        if (rc < 0) goto done;
        if (rc == 1) {
            if (!skipped++) {
                first_skip = index;
                memcpy(first_reason, reason, sizeof reason);
            }
            continue;
        }
        if ((rc = set_push(out, &r))) {
            dataset_record_free(&r);
            goto done;
        }
    }
    rc = 0;
    if (skipped)
        lmf_warn("dataset %s: skipped %lld malformed records (first: index %lld: %s)", a->name,
                 (long long)skipped, (long long)first_skip, first_reason);
    if (out->n == start)
        rc = lmf_errorf(LMF_EINVAL, "dataset \"%s\": %s: no usable records%s", a->name, path,
                        skipped ? " (all were malformed and skipped)" : " (the file is empty)");
done:
    if (rc) {
        /* Leave out as it was on entry. */
        while (out->n > start) dataset_record_free(&out->items[--out->n]);
    }
    cJSON_Delete(recs);
    free(path);
    free(dir);
    return rc;
}

static int edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (m > 255) m = 255;
    int row[256];
    for (size_t j = 0; j <= m; j++) row[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

/* "unknown dataset" with the three nearest names, so a typo is a one-look fix. */
static int unknown_name(const lmf_dataset_info *info, const char *name) {
    int best[3] = {-1, -1, -1}, dist[3] = {1 << 30, 1 << 30, 1 << 30};
    for (int i = 0; i < info->n; i++) {
        int d = edit_distance(name, info->items[i].name);
        for (int k = 0; k < 3; k++) {
            if (d < dist[k]) {
                for (int q = 2; q > k; q--) best[q] = best[q - 1], dist[q] = dist[q - 1];
                best[k] = i;
                dist[k] = d;
                break;
            }
        }
    }
    char near[400] = "";
    size_t len = 0;
    for (int k = 0; k < 3 && best[k] >= 0 && len < sizeof near; k++)
        len += (size_t)snprintf(near + len, sizeof near - len, "%s\"%s\"", k ? ", " : "",
                                info->items[best[k]].name);
    return lmf_errorf(LMF_ENOENT, "dataset: \"%s\" is not in %s%s%s", name, info->path,
                      near[0] ? "; nearest names: " : "", near);
}

int lmf_dataset_load(const lmf_dataset_options *o, lmf_record_set *train, lmf_record_set *eval) {
    memset(train, 0, sizeof *train);
    if (eval) memset(eval, 0, sizeof *eval);
    if (!o->dataset || !o->dataset[0])
        return lmf_errorf(LMF_EINVAL, "dataset: no dataset named (dataset: name1,name2)");
    if (o->mix_strategy && strcmp(o->mix_strategy, "concat"))
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "mix_strategy: \"%s\" is not supported yet (only concat)",
                          o->mix_strategy);
    if (o->val_size < 0 || isnan(o->val_size))
        return lmf_errorf(LMF_EINVAL, "val_size: %g must not be negative", o->val_size);
    if (o->val_size > 0 && !eval)
        return lmf_errorf(LMF_EINVAL, "val_size: set but no eval set given to fill");
    lmf_dataset_info info;
    lmf_record_set all = {0};
    char *names = NULL;
    int rc = lmf_dataset_info_load(o->dataset_dir, &info);
    if (rc) return rc;
    names = lmf_strdup(o->dataset);
    if (!names) {
        rc = lmf_errorf(LMF_ENOMEM, "dataset: out of memory");
        goto done;
    }
    char *save = NULL;
    for (char *tok = strtok_r(names, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok)) tok++;
        char *end = tok + strlen(tok);
        while (end > tok && isspace((unsigned char)end[-1])) *--end = 0;
        if (!*tok) {
            rc = lmf_errorf(LMF_EINVAL, "dataset: empty name in \"%s\"", o->dataset);
            goto done;
        }
        const lmf_dataset_attr *a = lmf_dataset_info_find(&info, tok);
        if (!a) {
            rc = unknown_name(&info, tok);
            goto done;
        }
        if ((rc = lmf_dataset_load_one(&info, a, o->stage, o->max_samples, &all))) goto done;
    }
    if (o->val_size > 0) {
        rc = lmf_record_set_split(&all, o->val_size, o->seed, train, eval);
    } else {
        *train = all;
        memset(&all, 0, sizeof all);
    }
done:
    lmf_record_set_free(&all);
    free(names);
    lmf_dataset_info_free(&info);
    return rc;
}
