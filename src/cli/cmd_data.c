/* lmforge data preview cfg.yaml [--n 2] [key=value ...]: loads the datasets, renders the first
 * examples with the template and tokenizer exactly as training will, and prints them with the
 * trained tokens marked, so a user can check template and masks before training. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "lmforge/encode.h"
#include "lmforge/error.h"

/* Decodes ids[a..b) (keeping special tokens visible). */
static void print_run(const lmf_tokenizer *tok, const int32_t *ids, int a, int b, int trained,
                      int color) {
    char *text = NULL;
    size_t len = 0;
    if (lmf_tokenizer_decode(tok, ids + a, b - a, 0, &text, &len)) return;
    if (trained) fputs(color ? "\x1b[32m" : "[[", stdout);
    fwrite(text, 1, len, stdout);
    if (trained) fputs(color ? "\x1b[0m" : "]]", stdout);
    free(text);
}

static void preview(const lmf_tokenizer *tok, const lmf_example *e, const lmf_record *rec,
                    int color) {
    int trained = 0;
    for (int i = 0; i < e->n; i++) trained += e->labels[i] != LMF_IGNORE_INDEX;
    if (rec)
        printf("--- dataset %s, record %lld: %d tokens, %d trained ---\n", rec->dataset,
               (long long)rec->index, e->n, trained);
    else
        printf("--- block: %d tokens, %d trained ---\n", e->n, trained);
    int start = 0;
    for (int i = 1; i <= e->n; i++) {
        int t0 = e->labels[start] != LMF_IGNORE_INDEX;
        if (i == e->n || (e->labels[i] != LMF_IGNORE_INDEX) != t0) {
            print_run(tok, e->ids, start, i, t0, color);
            start = i;
        }
    }
    printf("\n");
    printf("input_ids: [");
    for (int i = 0; i < e->n; i++) printf(i ? ", %d" : "%d", e->ids[i]);
    printf("]\nlabels:    [");
    for (int i = 0; i < e->n; i++) printf(i ? ", %d" : "%d", e->labels[i]);
    printf("]\n");
}

static int run_preview(const lmf_config *c, int n_show) {
    const char *model = lmf_config_str(c, "model_name_or_path"),
               *dataset = lmf_config_str(c, "dataset");
    const char *stage = lmf_config_str(c, "stage"), *tpl_name = lmf_config_str(c, "template");
    if (!model)
        return lmf_errorf(LMF_EINVAL,
                          "%s: model_name_or_path is required (the tokenizer comes from it)",
                          c->path);
    if (!dataset) return lmf_errorf(LMF_EINVAL, "%s: dataset is required", c->path);
    int pt = !strcmp(stage, "pt");
    const lmf_template *tpl = NULL;
    if (!pt) {
        if (!tpl_name)
            return lmf_errorf(LMF_EINVAL, "%s: template is required for stage sft", c->path);
        if (!(tpl = lmf_template_find(tpl_name)))
            return lmf_error_prefix(LMF_EINVAL, "%s: template", c->path);
    }
    lmf_tokenizer *tok = NULL;
    int rc = lmf_tokenizer_load(&tok, model);
    if (rc) return rc;
    lmf_dataset_options dopt = {
        lmf_config_str(c, "dataset_dir"),
        dataset,
        stage,
        lmf_config_str(c, "mix_strategy"),
        lmf_config_is_set(c, "max_samples") ? lmf_config_int(c, "max_samples") : 0,
        0,
        (uint64_t)lmf_config_int(c, "seed")};
    lmf_record_set train = {0}, eval = {0};
    if ((rc = lmf_dataset_load(&dopt, &train, &eval))) goto done;
    if (train.n > n_show && !pt) train.n = n_show; /* only what is shown gets encoded */
    lmf_encode_options eo = {tok,
                             tpl,
                             pt,
                             (int)lmf_config_int(c, "cutoff_len"),
                             lmf_config_bool(c, "train_on_prompt"),
                             lmf_config_bool(c, "mask_history"),
                             lmf_config_bool(c, "enable_thinking")};
    lmf_example *ex = NULL;
    int64_t n = 0;
    lmf_encode_stats st;
    if ((rc = lmf_encode_records(&eo, &train, &ex, &n, &st))) goto done;
    int color = isatty(STDOUT_FILENO);
    printf("template %s, cutoff_len %d, %s; trained tokens shown %s\n", pt ? "(pt)" : tpl_name,
           eo.cutoff_len, eo.train_on_prompt ? "train_on_prompt" : "prompts masked",
           color ? "in green" : "inside [[ ]]");
    for (int64_t i = 0; i < n && i < n_show; i++)
        preview(tok, &ex[i], pt ? NULL : &train.items[i], color);
    if (st.truncated)
        printf("(%lld of these examples were cut to cutoff_len)\n", (long long)st.truncated);
    lmf_examples_free(ex, n);
done:
    lmf_record_set_free(&train);
    lmf_record_set_free(&eval);
    lmf_tokenizer_free(tok);
    return rc;
}

int lmf_cmd_data(int argc, char **argv) {
    if (argc < 3 || strcmp(argv[1], "preview")) {
        fprintf(stderr, "usage: lmforge data preview CONFIG.yaml [--n N] [key=value ...]\n");
        return 2;
    }
    long long n_show = 2;
    char **ov = calloc((size_t)argc, sizeof *ov);
    int n_ov = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--n")) {
            const char *v = lmf_cli_value(argc, argv, &i, "data preview");
            if (!v || lmf_cli_int(v, "--n", 1, 1000000, &n_show)) {
                free(ov);
                return v ? lmf_cli_fail("data preview", LMF_EINVAL) : 2;
            }
        } else {
            ov[n_ov++] = argv[i];
        }
    }
    lmf_config c;
    int rc = lmf_config_load(&c, argv[2], ov, n_ov);
    free(ov);
    if (rc) return lmf_cli_fail("data preview", rc);
    lmf_cli_threads_from_config(&c);
    rc = run_preview(&c, (int)n_show);
    lmf_config_free(&c);
    return lmf_cli_fail("data preview", rc);
}
