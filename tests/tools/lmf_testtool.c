/* lmf-testtool: test-only commands that expose model internals to the reference scripts in
 * tests/reference/ (Hugging Face transformers / peft on the same folder and batch).
 *   grads --model DIR --batch FILE --out FILE [--adapter DIR] [--backend cpu|ref]
 *         [--grad-ckpt 0|1] [--bf16 0|1]   (lmf_model_set_compute)
 *         writes loss, logits and "grad/<name>" for every trainable parameter
 *         (LMF_TEST_PERTURB_GRAD=name scales one gradient by 1.01, to prove the comparison
 *         catches a wrong gradient)
 *   randomize --model DIR --seed N      non-trivial norms and biases, saved in place
 *   make-adapter --model DIR --out DIR --r R --alpha A --targets LIST --seed N
 *         a PEFT adapter with random A and non-zero B
 *   save-sharded --model DIR --out DIR --max-bytes N   the model in shards of at most N bytes */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/io.h"
#include "lmforge/json.h"
#include "lmforge/model.h"

static int fail(int rc) {
    if (!rc) return 0;
    fprintf(stderr, "lmf-testtool: error: %s\n", lmf_last_error());
    return 1;
}

static const char *arg(int argc, char **argv, const char *name, const char *def) {
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return def;
}

/* Reads a (B, T) int matrix from key; returns 0 if absent. */
static int read_matrix(const cJSON *j, const char *key, int *B, int *T, int32_t **out) {
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, key);
    *out = NULL;
    if (!rows) return 0;
    int b = cJSON_GetArraySize(rows), t = b ? cJSON_GetArraySize(cJSON_GetArrayItem(rows, 0)) : 0;
    if (*B && (b != *B || t != *T))
        return lmf_errorf(LMF_ESHAPE, "batch: %s shape differs from input_ids", key);
    *B = b, *T = t;
    int32_t *m = calloc((size_t)b * t, sizeof *m);
    int i = 0;
    const cJSON *row, *v;
    cJSON_ArrayForEach(row, rows) {
        if (cJSON_GetArraySize(row) != t) {
            free(m);
            return lmf_errorf(LMF_ESHAPE, "batch: %s rows differ in length", key);
        }
        cJSON_ArrayForEach(v, row) m[i++] = (int32_t)v->valueint;
    }
    *out = m;
    return 1;
}

static int cmd_grads(int argc, char **argv) {
    const char *model_dir = arg(argc, argv, "--model", NULL),
               *batch = arg(argc, argv, "--batch", NULL);
    const char *out = arg(argc, argv, "--out", NULL), *adapter = arg(argc, argv, "--adapter", NULL);
    const lmf_backend *be = lmf_backend_by_name(arg(argc, argv, "--backend", "cpu"));
    const char *perturb = getenv("LMF_TEST_PERTURB_GRAD");
    if (!model_dir || !batch || !out || !be)
        return lmf_errorf(LMF_EINVAL, "grads: --model, --batch, --out needed");
    cJSON *j;
    int rc = lmf_json_load(batch, &j), B = 0, T = 0;
    if (rc) return rc;
    int32_t *ids, *labels, *pos, *seg;
    read_matrix(j, "input_ids", &B, &T, &ids);
    read_matrix(j, "labels", &B, &T, &labels);
    read_matrix(j, "position_ids", &B, &T, &pos);
    read_matrix(j, "segment_ids", &B, &T, &seg);
    cJSON_Delete(j);
    lmf_model *m = NULL;
    lmf_lora *lora = NULL;
    if ((rc = lmf_model_load(&m, model_dir, be))) return rc;
    if (adapter) {
        if ((rc = lmf_lora_load(&lora, m, adapter)) || (rc = lmf_lora_enable_grads(lora)))
            return rc;
        m->lora = lora;
    } else if ((rc = lmf_model_enable_grads(m))) {
        return rc;
    }
    lmf_compute_options co = {.bf16 = atoi(arg(argc, argv, "--bf16", "0")),
                              .grad_ckpt = atoi(arg(argc, argv, "--grad-ckpt", "0"))};
    if ((rc = lmf_model_set_compute(m, &co))) return rc;
    int V = m->cfg.vocab;
    float *logits = malloc(sizeof(float) * B * T * V);
    lmf_batch b = {B, T, ids, labels, pos, seg};
    double loss;
    if ((rc = lmf_model_forward(m, &b, 1, &loss, NULL, logits, NULL)) ||
        (rc = lmf_model_backward(m)))
        return rc;
    float loss_f = (float)loss;
    lmf_st_writer w;
    lmf_st_writer_init(&w);
    int64_t one = 1, lshape[3] = {B, T, V};
    lmf_st_writer_add(&w, "loss", LMF_F32, 1, &one, &loss_f);
    lmf_st_writer_add(&w, "logits", LMF_F32, 3, lshape, logits);
    int n = lora ? lora->n_params : m->n_params;
    char **names = calloc(n, sizeof *names);
    for (int i = 0; i < n; i++) {
        const lmf_param *p = lora ? &lora->table[i] : &m->table[i];
        float *g = (lora ? lora->grads : m->grads) + p->offset;
        if (perturb && !strcmp(perturb, p->name)) {
            for (size_t k = 0; k < p->numel; k++) g[k] *= 1.01f;
            fprintf(stderr, "lmf-testtool: perturbed gradient of %s by 1%% on purpose\n", p->name);
        }
        names[i] = malloc(strlen(p->name) + 6);
        sprintf(names[i], "grad/%s", p->name);
        if ((rc = lmf_st_writer_add(&w, names[i], LMF_F32, p->ndim, p->shape, g))) break;
    }
    if (!rc) rc = lmf_st_writer_write(&w, out);
    lmf_st_writer_free(&w);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(logits);
    free(ids);
    free(labels);
    free(pos);
    free(seg);
    lmf_model_free(m);
    lmf_lora_free(lora);
    if (!rc) printf("loss %.8f\n", loss);
    return rc;
}

static int cmd_randomize(int argc, char **argv) {
    const char *dir = arg(argc, argv, "--model", NULL);
    long seed = atol(arg(argc, argv, "--seed", "1"));
    lmf_model *m;
    if (!dir) return lmf_errorf(LMF_EINVAL, "randomize: --model needed");
    int rc = lmf_model_load(&m, dir, lmf_backend_cpu());
    if (rc) return rc;
    lmf_rng rng;
    lmf_rng_seed(&rng, (uint64_t)seed);
    for (int i = 0; i < m->n_params; i++) {
        const lmf_param *p = &m->table[i];
        if (!p->is_norm_or_bias) continue;
        float *x = m->params + p->offset;
        int norm = strstr(p->name, "norm") != NULL;
        for (size_t k = 0; k < p->numel; k++)
            x[k] = norm ? 1.0f + 0.2f * lmf_rng_normal(&rng) : 0.05f * lmf_rng_normal(&rng);
    }
    rc = lmf_model_save(m, dir);
    lmf_model_free(m);
    return rc;
}

static int cmd_make_adapter(int argc, char **argv) {
    const char *dir = arg(argc, argv, "--model", NULL), *out = arg(argc, argv, "--out", NULL);
    int r = atoi(arg(argc, argv, "--r", "4"));
    float alpha = (float)atof(arg(argc, argv, "--alpha", "8"));
    long seed = atol(arg(argc, argv, "--seed", "1"));
    unsigned targets;
    lmf_model *m;
    lmf_lora *l;
    if (!dir || !out) return lmf_errorf(LMF_EINVAL, "make-adapter: --model and --out needed");
    int rc = lmf_lora_parse_targets(arg(argc, argv, "--targets", "all"), &targets);
    if (rc || (rc = lmf_model_load(&m, dir, lmf_backend_cpu()))) return rc;
    if (!(rc = lmf_lora_create(&l, m, r, alpha, 0.0f, targets))) {
        lmf_lora_init(l, m, (uint64_t)seed);
        lmf_rng rng;
        lmf_rng_seed(&rng, (uint64_t)seed + 99);
        for (int i = 0; i < l->n_params; i++)
            if (strstr(l->table[i].name, "lora_B"))
                for (size_t k = 0; k < l->table[i].numel; k++)
                    l->params[l->table[i].offset + k] = 0.05f * lmf_rng_normal(&rng);
        rc = lmf_lora_save(l, m, out);
        lmf_lora_free(l);
    }
    lmf_model_free(m);
    return rc;
}

static int cmd_save_sharded(int argc, char **argv) {
    const char *dir = arg(argc, argv, "--model", NULL), *out = arg(argc, argv, "--out", NULL);
    long max = atol(arg(argc, argv, "--max-bytes", "100000"));
    lmf_model *m;
    if (!dir || !out) return lmf_errorf(LMF_EINVAL, "save-sharded: --model and --out needed");
    int rc = lmf_model_load(&m, dir, lmf_backend_cpu());
    if (rc) return rc;
    rc = lmf_model_save_sharded(m, out, (size_t)max);
    lmf_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: lmf-testtool grads|randomize|make-adapter ...\n");
        return 2;
    }
    lmf_compute_set_threads(0);
    if (!strcmp(argv[1], "grads")) return fail(cmd_grads(argc, argv));
    if (!strcmp(argv[1], "randomize")) return fail(cmd_randomize(argc, argv));
    if (!strcmp(argv[1], "make-adapter")) return fail(cmd_make_adapter(argc, argv));
    if (!strcmp(argv[1], "save-sharded")) return fail(cmd_save_sharded(argc, argv));
    fprintf(stderr, "lmf-testtool: unknown command %s\n", argv[1]);
    return 2;
}
