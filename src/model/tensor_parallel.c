/* Tensor parallelism: one rank's shard of a model (tensor_parallel.h), from a whole model in
 * memory (lmf_tp_shard) or straight from a Hugging Face folder, reading only the rank's slices
 * of the mapped safetensors (lmf_tp_load). The shard is an ordinary lmf_model of the rank's
 * shape; the step-time collectives are in tp_step.c. */
#include "lmforge/tensor_parallel.h"

#include <stdlib.h>
#include <string.h>

#include "lmforge/gguf.h"
#include "lmforge/io.h"
#include "model_internal.h"

/* Rows [lo, lo + n) of rank r when `total` rows are split over `size` ranks as evenly as they
 * go (the first total mod size ranks get one more). */
static void split(int total, int size, int r, int *lo, int *n) {
    int base = total / size, extra = total % size;
    *lo = r * base + (r < extra ? r : extra);
    *n = base + (r < extra);
}

int lmf_tp_check(const lmf_model_config *c, int size) {
    if (size < 1)
        return lmf_errorf(LMF_EINVAL, "tensor_parallel_size %d: must be at least 1", size);
    if (c->kv_heads % size)
        return lmf_errorf(LMF_EINVAL,
                          "tensor_parallel_size %d must divide num_key_value_heads (%d; "
                          "num_attention_heads %d): each rank keeps whole KV heads with their "
                          "query heads",
                          size, c->kv_heads, c->heads);
    if (c->ffn < size || c->vocab < size)
        return lmf_errorf(LMF_EINVAL,
                          "tensor_parallel_size %d: intermediate_size (%d) and vocab_size (%d) "
                          "must give every rank at least one row",
                          size, c->ffn, c->vocab);
    return 0;
}

int lmf_model_vocab(const lmf_model *m) {
    return m->tp ? m->tp->full.vocab : m->cfg.vocab;
}

void lmf_tp_free(lmf_tp *tp) {
    if (!tp) return;
    free(tp->vocab_n);
    free(tp->part);
    free(tp->gathered);
    free(tp->counts);
    free(tp);
}

void lmf_tp_stats_reset(lmf_model *m) {
    if (m->tp) memset(&m->tp->stats, 0, sizeof m->tp->stats);
}

/* An empty shard (norms at one) of rank `rank` of `size` for the whole model's config c. */
static int shard_new(lmf_model **out, const lmf_model_config *c, const lmf_backend *be, int rank,
                     int size, const lmf_tp_comm *comm) {
    *out = NULL;
    int rc = lmf_tp_check(c, size);
    if (rc) return rc;
    if (rank < 0 || rank >= size)
        return lmf_errorf(LMF_EINVAL, "tensor parallel: rank %d outside 0..%d", rank, size - 1);
    lmf_tp *tp = calloc(1, sizeof *tp);
    if (!tp || !(tp->vocab_n = calloc((size_t)size, sizeof *tp->vocab_n)) ||
        !(tp->counts = calloc((size_t)size, sizeof *tp->counts))) {
        lmf_tp_free(tp);
        return lmf_errorf(LMF_ENOMEM, "tensor parallel: out of memory");
    }
    tp->rank = rank, tp->size = size, tp->full = *c;
    if (comm) tp->comm = *comm;
    int lo, ffn, vocab;
    tp->heads_lo = rank * (c->heads / size), tp->kv_heads_lo = rank * (c->kv_heads / size);
    split(c->ffn, size, rank, &tp->ffn_lo, &ffn);
    for (int r = 0; r < size; r++) split(c->vocab, size, r, &lo, &tp->vocab_n[r]);
    split(c->vocab, size, rank, &tp->vocab_lo, &vocab);
    lmf_model_config sc = *c;
    sc.heads = c->heads / size, sc.kv_heads = c->kv_heads / size, sc.ffn = ffn, sc.vocab = vocab;
    lmf_model *m = NULL;
    if ((rc = lmf_model_create(&m, &sc, be))) {
        lmf_tp_free(tp);
        return rc;
    }
    m->tp = tp;
    *out = m;
    return 0;
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && !strcmp(s + n - k, tail);
}

/* Where shard parameter p lies in the whole tensor of the same name: its rows start at *r0 and
 * its columns at *c0 of a (*rows, *cols) tensor (*cols 0 for a vector). */
static void locate(const lmf_model *m, const lmf_param *p, int64_t *r0, int64_t *c0, int64_t *rows,
                   int64_t *cols) {
    const lmf_tp *tp = m->tp;
    const lmf_model_config *f = &tp->full;
    int D = f->head_dim;
    *r0 = *c0 = 0, *rows = p->shape[0], *cols = p->shape[1];
    const char *n = p->name;
    if (!strcmp(n, "model.embed_tokens.weight") || !strcmp(n, "lm_head.weight"))
        *r0 = tp->vocab_lo, *rows = f->vocab;
    else if (strstr(n, ".self_attn.q_proj."))
        *r0 = (int64_t)tp->heads_lo * D, *rows = (int64_t)f->heads * D;
    else if (strstr(n, ".self_attn.k_proj.") || strstr(n, ".self_attn.v_proj."))
        *r0 = (int64_t)tp->kv_heads_lo * D, *rows = (int64_t)f->kv_heads * D;
    else if (ends_with(n, ".self_attn.o_proj.weight"))
        *c0 = (int64_t)tp->heads_lo * D, *cols = (int64_t)f->heads * D;
    else if (ends_with(n, ".mlp.gate_proj.weight") || ends_with(n, ".mlp.up_proj.weight"))
        *r0 = tp->ffn_lo, *rows = f->ffn;
    else if (ends_with(n, ".mlp.down_proj.weight"))
        *c0 = tp->ffn_lo, *cols = f->ffn;
}

/* The whole tensors the shard's slices come from: a model in memory or mapped files. */
typedef struct source {
    const lmf_model *full;
    const lmf_safetensors *st;
    const char *dir;
} source;

/* Fills every parameter of shard m with its slice of the source's tensor of the same name. */
static int fill(lmf_model *m, const source *s) {
    for (int i = 0; i < m->n_params; i++) {
        const lmf_param *p = &m->table[i];
        int64_t r0, c0, rows, cols;
        locate(m, p, &r0, &c0, &rows, &cols);
        const void *data;
        lmf_dtype dt = LMF_F32;
        if (s->full) {
            const lmf_param *f = lmf_model_find_param(s->full, p->name);
            if (!f || f->shape[0] != rows || f->shape[1] != cols)
                return lmf_errorf(LMF_ESHAPE, "tensor parallel: %s does not match the model",
                                  p->name);
            data = s->full->params + f->offset;
        } else {
            const lmf_st_tensor *t = lmf_safetensors_find(s->st, p->name);
            if (!t) return lmf_errorf(LMF_EFORMAT, "%s: missing tensor \"%s\"", s->dir, p->name);
            if (t->ndim != p->ndim || t->shape[0] != rows || (cols && t->shape[1] != cols))
                return lmf_errorf(LMF_ESHAPE,
                                  "%s: tensor \"%s\" has shape [%lld, %lld], config.json implies "
                                  "[%lld, %lld]",
                                  s->dir, p->name, (long long)t->shape[0],
                                  (long long)(t->ndim > 1 ? t->shape[1] : 0), (long long)rows,
                                  (long long)cols);
            data = t->data, dt = t->dtype;
        }
        size_t es = lmf_dtype_size(dt), w = cols ? (size_t)cols : 1, n = cols ? p->shape[1] : 1;
        float *dst = m->params + p->offset;
        if (n == w) /* whole rows: one block */
            lmf_convert_to_f32(dst, (const uint8_t *)data + (size_t)r0 * w * es, dt, p->numel);
        else /* each row's block of columns */
            for (int64_t r = 0; r < p->shape[0]; r++)
                lmf_convert_to_f32(dst + r * n,
                                   (const uint8_t *)data + ((size_t)(r0 + r) * w + c0) * es, dt, n);
    }
    return 0;
}

int lmf_tp_shard(lmf_model **out, const lmf_model *full, int rank, int size,
                 const lmf_tp_comm *comm) {
    *out = NULL;
    if (full->tp) return lmf_errorf(LMF_EINVAL, "tensor parallel: the model is a shard already");
    if (full->quantized)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "tensor parallel: a base quantized for QLoRA cannot be split");
    if (full->lora)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "tensor parallel: LoRA adapters are not split across ranks; merge the "
                          "adapter into the model first (lmforge export)");
    lmf_model *m;
    int rc = shard_new(&m, &full->cfg, full->be, rank, size, comm);
    if (rc) return rc;
    source s = {.full = full};
    if ((rc = fill(m, &s))) {
        lmf_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int lmf_tp_load(lmf_model **out, const char *dir, const lmf_backend *be, int rank, int size,
                const lmf_tp_comm *comm) {
    *out = NULL;
    int rc;
    if (lmf_path_is_gguf(dir)) { /* llama.cpp's files: the whole model, then the shard */
        lmf_model *full = NULL;
        if (!(rc = lmf_model_load(&full, dir, be))) rc = lmf_tp_shard(out, full, rank, size, comm);
        lmf_model_free(full);
        return rc;
    }
    lmf_model_config cfg;
    char *cfg_path = lmf_path_join(dir, "config.json");
    if (!cfg_path) return lmf_errorf(LMF_ENOMEM, "out of memory");
    if (!(rc = lmf_model_config_load(&cfg, cfg_path)) && (rc = lmf_tp_check(&cfg, size)))
        lmf_error_prefix(rc, "%s", cfg_path);
    free(cfg_path);
    if (rc) return rc;
    lmf_safetensors st;
    if ((rc = lmf_safetensors_open_dir(&st, dir))) return rc;
    lmf_model *m = NULL;
    source s = {.st = &st, .dir = dir};
    if (!(rc = shard_new(&m, &cfg, be, rank, size, comm)) && (rc = fill(m, &s))) {
        lmf_model_free(m);
        m = NULL;
    }
    lmf_safetensors_close(&st);
    *out = m;
    return rc;
}
