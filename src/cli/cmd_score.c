/* lmforge score: log-probability of each next token of a sequence and the mean negative
 * log-likelihood, a user's quick check of a model (and the test suite's). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lmforge/model.h"
#include "lmforge/quant.h"

static int parse_ids(const char *s, int32_t **out, int *n) {
    int cap = 16, k = 0;
    int32_t *ids = malloc(sizeof *ids * cap);
    const char *p = s;
    while (ids && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 0x7fffffff) {
            free(ids);
            return lmf_errorf(
                LMF_EINVAL, "--ids: expected comma-separated non-negative integers near \"%.20s\"",
                p);
        }
        if (k == cap) {
            int32_t *bigger = realloc(ids, sizeof *ids * (cap *= 2));
            if (!bigger) break;
            ids = bigger;
        }
        ids[k++] = (int32_t)v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p) {
            free(ids);
            return lmf_errorf(LMF_EINVAL, "--ids: unexpected character '%c'", *p);
        }
    }
    if (!ids) return lmf_errorf(LMF_ENOMEM, "out of memory");
    if (k < 2) {
        free(ids);
        return lmf_errorf(LMF_EINVAL, "--ids: need at least two ids to score a next token");
    }
    *out = ids;
    *n = k;
    return 0;
}

static int usage(int code) {
    fprintf(code ? stderr : stdout, "usage: lmforge score --model DIR --ids 1,2,3,... [--adapter "
                                    "DIR] [--quantize FORMAT] [--json] [--threads N]\n"
                                    "  --quantize: score with the base quantized as FORMAT (q8_0, "
                                    "q4_0, q4_1, q4_k, nf4, fp4)\n");
    return code;
}

int lmf_cmd_score(int argc, char **argv) {
    const char *model_dir = NULL, *ids_s = NULL, *adapter = NULL, *quant = NULL;
    int json = 0;
    long long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help")) return usage(0);
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (strcmp(a, "--model") && strcmp(a, "--ids") && strcmp(a, "--adapter") &&
            strcmp(a, "--threads") && strcmp(a, "--quantize")) {
            fprintf(stderr, "lmforge score: error: unknown option \"%s\"\n", a);
            return usage(2);
        }
        if (!(v = lmf_cli_value(argc, argv, &i, "score"))) return 2;
        if (!strcmp(a, "--model")) model_dir = v;
        if (!strcmp(a, "--ids")) ids_s = v;
        if (!strcmp(a, "--adapter")) adapter = v;
        if (!strcmp(a, "--quantize")) quant = v;
        if (!strcmp(a, "--threads") && lmf_cli_int(v, "--threads", 1, 1024, &threads))
            return lmf_cli_fail("score", LMF_EINVAL);
    }
    if (!model_dir || !ids_s) {
        fprintf(stderr, "lmforge score: error: --model and --ids are required\n");
        return usage(2);
    }
    lmf_cli_threads(threads);
    int32_t *ids = NULL;
    int n = 0;
    lmf_model *m = NULL;
    lmf_lora *lora = NULL;
    float *lp = NULL;
    int rc = parse_ids(ids_s, &ids, &n);
    if (!rc) rc = lmf_model_load(&m, model_dir, lmf_backend_cpu());
    if (!rc && adapter) {
        rc = lmf_lora_load(&lora, m, adapter);
        m->lora = lora;
    }
    if (!rc && quant) {
        lmf_qtype t;
        rc = lmf_qtype_parse(quant, &t);
        if (!rc) rc = lmf_model_quantize_base(m, (int)t);
        if (rc) rc = lmf_error_prefix(rc, "--quantize %s", quant);
    }
    double nll = 0;
    if (!rc && !(lp = calloc(n, sizeof *lp))) rc = lmf_errorf(LMF_ENOMEM, "out of memory");
    if (!rc) {
        lmf_batch b = {.B = 1, .T = n, .ids = ids, .labels = ids};
        rc = lmf_model_forward(m, &b, 0, &nll, NULL, NULL, lp);
    }
    if (!rc) {
        if (json) {
            printf("{\"mean_nll\": %.9g, \"logprobs\": [", nll);
            for (int i = 0; i + 1 < n; i++) printf(i ? ", %.9g" : "%.9g", lp[i]);
            printf("]}\n");
        } else {
            for (int i = 0; i + 1 < n; i++)
                printf("%6d -> %6d  logprob %10.5f\n", ids[i], ids[i + 1], lp[i]);
            printf("mean NLL %.6f over %d predictions (perplexity %.3f)\n", nll, n - 1, exp(nll));
        }
    }
    free(ids);
    free(lp);
    lmf_model_free(m);
    lmf_lora_free(lora);
    return lmf_cli_fail("score", rc);
}
