/* Tensor parallelism (tensor_parallel.h): the shards of a model on N ranks (run under mpirun
 * with 2 and 3 ranks; alone it checks N = 1) give rank 0 the logits of the whole model's step,
 * within 1e-4, and the same greedy tokens, over a script of batched steps: three sequences with
 * prefill chunks (with and without logits) beside single-token decodes, scattered block tables.
 * Models: GQA Llama, Qwen2 (q/k/v biases), Qwen3 (q/k norms), tied embeddings, full multi-head
 * attention, uneven MLP and vocabulary splits, and a wider one whose fused-step phases have
 * many work items (1 and 2 threads: the last item of the o/down phases does the all-reduce);
 * cpu backend (fused step) and ref backend (general path); bf16 inference weights. Also: each
 * rank's KV pool is 1/N of the whole model's, the all-reduce count per step, the error for a
 * size that does not divide the KV heads, and shards read slice by slice from saved folders
 * (lmf_tp_load) equal to the in-memory split. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmforge/comm.h"
#include "lmforge/model.h"
#include "lmforge/tensor_parallel.h"
#include "model/random_model.h"
#include "test.h"

enum { LEN = 14, BS = 4, NSEQ = 3 };

static lmf_comm *world;
static int R, P;

typedef struct variant {
    const char *name;
    lmf_arch arch;
    int heads_per_kv, kv_per_rank, head_dim, hidden, ffn, vocab, tied;
} variant;

static lmf_model *make(const variant *v, const lmf_backend *be) {
    lmf_model_config c;
    lmf_model_preset(&c, v->arch, "tiny");
    c.layers = 2, c.kv_heads = v->kv_per_rank * (P > 1 ? P : 2);
    c.heads = c.kv_heads * v->heads_per_kv, c.head_dim = v->head_dim;
    c.hidden = v->hidden, c.ffn = v->ffn, c.vocab = v->vocab, c.tied = v->tied;
    lmf_rng r;
    lmf_model *m = test_random_model(&c, be, 3, &r);
    return m;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* The step script, run on the whole model (ref) and the shard alike. Returns the rows of
 * logits of every step back to back in *out (rank 0; the shard's workers get none). */
static int script(lmf_model *m, int shard, float *out) {
    int V = lmf_model_vocab(m), rows = 0, rc = 0;
    int32_t ids[NSEQ][LEN];
    for (int i = 0; i < NSEQ; i++)
        for (int t = 0; t < LEN; t++) ids[i][t] = (t * (7 + 4 * i) + 3 * i + 1) % V;
    ids[1][2] = V - 1; /* the last vocabulary row: the last rank's */
    int32_t tables[NSEQ][4] = {{7, 2, 9, 0}, {1, 8, 3, 5}, {4, 11, 6, 10}};
    lmf_kv_pool kv;
    if ((rc = lmf_kv_pool_create(&kv, m, BS, 12))) return rc;
    float *lg = malloc(sizeof(float) * NSEQ * V);
    lmf_seq_step s[NSEQ];
    /* 1: a prefills 5, b 3 (both want logits), c a chunk of 6 without */
    s[0] = (lmf_seq_step){ids[0], 5, 0, tables[0], 4, 1, NULL};
    s[1] = (lmf_seq_step){ids[1], 3, 0, tables[1], 4, 1, NULL};
    s[2] = (lmf_seq_step){ids[2], 6, 0, tables[2], 4, 0, NULL};
    rc = lmf_model_step(m, &kv, s, 3, shard && R ? NULL : lg);
    if (!rc && out) memcpy(out + (size_t)rows * V, lg, sizeof(float) * 2 * V);
    rows += 2;
    /* 2: a decodes, b a chunk of 4 without logits, c the rest of its prompt (2) with */
    s[0] = (lmf_seq_step){ids[0] + 5, 1, 5, tables[0], 4, 1, NULL};
    s[1] = (lmf_seq_step){ids[1] + 3, 4, 3, tables[1], 4, 0, NULL};
    s[2] = (lmf_seq_step){ids[2] + 6, 2, 6, tables[2], 4, 1, NULL};
    if (!rc) rc = lmf_model_step(m, &kv, s, 3, shard && R ? NULL : lg);
    if (!rc && out) memcpy(out + (size_t)rows * V, lg, sizeof(float) * 2 * V);
    rows += 2;
    /* then one token a step each, to the end */
    for (int p = 6; p + 2 < LEN && !rc; p++) {
        s[0] = (lmf_seq_step){ids[0] + p, 1, p, tables[0], 4, 1, NULL};
        s[1] = (lmf_seq_step){ids[1] + p + 1, 1, p + 1, tables[1], 4, 1, NULL};
        s[2] = (lmf_seq_step){ids[2] + p + 2, 1, p + 2, tables[2], 4, 1, NULL};
        rc = lmf_model_step(m, &kv, s, 3, shard && R ? NULL : lg);
        if (!rc && out) memcpy(out + (size_t)rows * V, lg, sizeof(float) * 3 * V);
        rows += 3;
    }
    free(lg);
    lmf_kv_pool_free(&kv);
    return rc;
}

static int script_rows(void) {
    return 4 + 3 * (LEN - 2 - 6);
}

static void compare(const variant *v, const lmf_backend *be, int threads, int bf16) {
    lmf_compute_set_threads(threads);
    lmf_model *full = make(v, be), *shard = NULL;
    lmf_tp_comm hooks;
    lmf_tp_comm_over(&hooks, world);
    CHECK(lmf_tp_shard(&shard, full, R, P, &hooks) == 0);
    if (!shard) {
        lmf_model_free(full);
        return;
    }
    /* the shard's KV heads, MLP rows and vocabulary rows */
    CHECK(shard->cfg.kv_heads * P == full->cfg.kv_heads && shard->cfg.heads * P == full->cfg.heads);
    CHECK(lmf_kv_bytes_per_block(&shard->cfg, BS, LMF_KV_F32) * P ==
          lmf_kv_bytes_per_block(&full->cfg, BS, LMF_KV_F32));
    CHECK(lmf_model_vocab(shard) == full->cfg.vocab);
    if (bf16) {
        CHECK(lmf_model_set_infer_dtype(full, LMF_BF16) == 0);
        CHECK(lmf_model_set_infer_dtype(shard, LMF_BF16) == 0);
    }
    int V = full->cfg.vocab, rows = script_rows();
    float *want = malloc(sizeof(float) * rows * V), *got = malloc(sizeof(float) * rows * V);
    CHECK(script(full, 0, want) == 0);
    lmf_tp_stats_reset(shard);
    CHECK(script(shard, 1, R == 0 ? got : NULL) == 0);
    const lmf_tp_stats *st = &shard->tp->stats;
    int steps = 2 + (LEN - 2 - 6);
    CHECK_MSG(st->steps == steps && st->allreduces == (P > 1 ? steps * (1 + 2 * 2) : 0) &&
                  st->gathers == (P > 1 ? steps : 0),
              "%s: %lld steps, %lld all-reduces, %lld gathers", v->name, (long long)st->steps,
              (long long)st->allreduces, (long long)st->gathers);
    if (R == 0) {
        double worst = 0, rel = test_max_rel(got, want, (size_t)rows * V);
        int same = 0;
        for (size_t i = 0; i < (size_t)rows * V; i++)
            worst = fmax(worst, fabs((double)got[i] - want[i]));
        for (int r = 0; r < rows; r++)
            same += argmax(got + (size_t)r * V, V) == argmax(want + (size_t)r * V, V);
        /* bf16: an activation rounded to bf16 one way or the other moves logits by ~1e-3 */
        double tol = bf16 ? 1e-2 : 1e-4;
        CHECK_MSG(worst <= tol && same == rows,
                  "%s, %s backend, %d thread(s)%s, %d ranks: logits max |diff| %.3g (rel %.3g), "
                  "greedy tokens equal %d of %d",
                  v->name, be->name, threads, bf16 ? ", bf16" : "", P, worst, rel, same, rows);
        if (!bf16 && threads == 1)
            printf("%-8s %-3s: %d ranks vs whole model: logits max |diff| %.2e, %d/%d greedy "
                   "tokens equal\n",
                   v->name, be->name, P, worst, same, rows);
    }
    free(want), free(got);
    lmf_model_free(shard);
    lmf_model_free(full);
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            remove(path);
        }
    if (d) closedir(d);
    rmdir(dir);
}

/* lmf_tp_load reads only the rank's slices from a saved folder (bf16 or f32 files, one file or
 * sharded with an index): the same shard, bit for bit, as loading the whole model and splitting
 * it in memory. */
static void load_from_files(const variant *v, lmf_dtype file_dtype, size_t shard_bytes) {
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/lmf-test-tp-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    lmf_model *full = make(v, lmf_backend_cpu()), *whole = NULL, *a = NULL, *b = NULL;
    full->cfg.file_dtype = file_dtype;
    CHECK(lmf_model_save_sharded(full, dir, shard_bytes) == 0);
    CHECK(lmf_model_load(&whole, dir, NULL) == 0);
    CHECK(whole && lmf_tp_shard(&a, whole, R, P, NULL) == 0);
    CHECK(lmf_tp_load(&b, dir, NULL, R, P, NULL) == 0);
    CHECK_MSG(a && b && a->numel == b->numel &&
                  !memcmp(a->params, b->params, sizeof(float) * a->numel),
              "%s (%s files): lmf_tp_load differs from lmf_tp_shard", v->name,
              lmf_dtype_name(file_dtype));
    CHECK(b && b->tp && b->tp->rank == R && lmf_model_vocab(b) == full->cfg.vocab);
    lmf_model_free(a), lmf_model_free(b), lmf_model_free(whole);
    /* a split the model does not allow, named with its config.json */
    CHECK(lmf_tp_load(&b, dir, NULL, 0, 5, NULL) == LMF_EINVAL && !b);
    CHECK_MSG(strstr(lmf_last_error(), "config.json") &&
                  strstr(lmf_last_error(), "tensor_parallel_size 5"),
              "message: %s", lmf_last_error());
    lmf_model_free(full);
    remove_dir(dir);
}

static void bad_sizes(void) {
    lmf_model_config c;
    lmf_model_preset(&c, LMF_ARCH_LLAMA, "tiny"); /* 4 heads, 2 KV heads */
    CHECK(lmf_tp_check(&c, 2) == 0);
    CHECK(lmf_tp_check(&c, 3) == LMF_EINVAL);
    const char *msg = lmf_last_error();
    CHECK_MSG(strstr(msg, "tensor_parallel_size 3") && strstr(msg, "num_key_value_heads (2") &&
                  strstr(msg, "num_attention_heads 4"),
              "message: %s", msg);
    CHECK(lmf_tp_check(&c, 4) == LMF_EINVAL);
    lmf_model *m = NULL, *s = NULL;
    CHECK(lmf_model_create(&m, &c, NULL) == 0);
    CHECK(lmf_tp_shard(&s, m, 0, 3, NULL) == LMF_EINVAL && !s);
    CHECK(lmf_tp_shard(&s, m, 2, 2, NULL) == LMF_EINVAL && !s);
    lmf_model_free(m);
}

int main(void) {
    lmf_comm_options o = {.timeout_s = 60};
    if (lmf_comm_init(&world, &o)) {
        fprintf(stderr, "init: %s\n", lmf_last_error());
        return 1;
    }
    R = lmf_comm_rank(world), P = lmf_comm_size(world);
    static const variant vs[] = {
        {"llama", LMF_ARCH_LLAMA, 2, 1, 8, 32, 48, 61, 0},
        {"qwen2", LMF_ARCH_QWEN2, 2, 1, 8, 32, 50, 60, 0},
        {"qwen3", LMF_ARCH_QWEN3, 2, 1, 12, 32, 48, 60, 0},
        {"tied", LMF_ARCH_LLAMA, 1, 1, 8, 32, 47, 59, 1},
        {"mha", LMF_ARCH_MISTRAL, 1, 2, 8, 40, 64, 64, 0},
        {"wide", LMF_ARCH_QWEN2, 2, 2, 32, 256, 704, 1001, 0},
    };
    for (size_t i = 0; i < sizeof vs / sizeof *vs; i++) {
        compare(&vs[i], lmf_backend_cpu(), 1, 0);
        compare(&vs[i], lmf_backend_ref(), 1, 0);
    }
    compare(&vs[5], lmf_backend_cpu(), 2, 0);
    compare(&vs[5], lmf_backend_cpu(), 2, 1);
    compare(&vs[1], lmf_backend_cpu(), 1, 1);
    load_from_files(&vs[0], LMF_BF16, 0);
    load_from_files(&vs[2], LMF_F32, 4096);
    load_from_files(&vs[3], LMF_F32, 0);
    load_from_files(&vs[5], LMF_BF16, 1 << 17);
    bad_sizes();
    char name[64];
    snprintf(name, sizeof name, "test_tensor_parallel (rank %d/%d)", R, P);
    int rc = test_summary(name);
    float any = (float)rc;
    if (lmf_comm_allreduce(world, &any, 1, LMF_F32, LMF_REDUCE_SUM) || any != 0) rc = 1;
    lmf_comm_free(world);
    return rc;
}
