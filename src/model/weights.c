/* Model weights: the parameter table (Hugging Face names, shapes, offsets into one flat
 * buffer), creation, random initialisation, loading from and saving to HF folders. */
#include "lmforge/gguf_model.h"
#include "lmforge/io.h"
#include "lmforge/json.h"
#include "lmforge/model.h"
#include "lmforge/tensor_parallel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

static const char *linear_names[LMF_N_LINEAR] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
static const char *linear_prefixes[LMF_N_LINEAR] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

const char *lmf_linear_name(lmf_linear_id id) {
    return linear_names[id];
}

const char *lmf_linear_hf_prefix(lmf_linear_id id) {
    return linear_prefixes[id];
}

void lmf_linear_shape(const lmf_model_config *c, lmf_linear_id id, int *out, int *in) {
    int q = c->heads * c->head_dim, kv = c->kv_heads * c->head_dim;
    switch (id) {
    case LMF_Q:
        *out = q, *in = c->hidden;
        break;
    case LMF_K:
    case LMF_V:
        *out = kv, *in = c->hidden;
        break;
    case LMF_O:
        *out = c->hidden, *in = q;
        break;
    case LMF_GATE:
    case LMF_UP:
        *out = c->ffn, *in = c->hidden;
        break;
    default:
        *out = c->hidden, *in = c->ffn;
        break;
    }
}

/* Walks the parameters in file order. With table != NULL it appends entries; either way it
 * points each field of w at base + offset. Returns the number of floats. */
typedef struct walker {
    lmf_param *table;
    int n;
    size_t offset;
    float *base;
} walker;

static void add(walker *wk, float **field, int layer, int norm_or_bias, int64_t d0, int64_t d1,
                const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static void add(walker *wk, float **field, int layer, int norm_or_bias, int64_t d0, int64_t d1,
                const char *fmt, ...) {
    size_t numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    if (wk->table) {
        lmf_param *p = &wk->table[wk->n];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->name, sizeof p->name, fmt, ap);
        va_end(ap);
        p->ndim = d1 > 0 ? 2 : 1;
        p->shape[0] = d0;
        p->shape[1] = d1 > 0 ? d1 : 0;
        p->offset = wk->offset;
        p->numel = numel;
        p->layer = layer;
        p->is_norm_or_bias = norm_or_bias;
    }
    if (field) *field = wk->base ? wk->base + wk->offset : NULL;
    wk->n++;
    wk->offset += (numel + 15) & ~(size_t)15; /* 64-byte aligned slices */
}

static size_t walk(const lmf_model_config *c, walker *wk, lmf_weights *w) {
    int C = c->hidden, D = c->head_dim;
    add(wk, &w->embed, -1, 0, c->vocab, C, "model.embed_tokens.weight");
    for (int l = 0; l < c->layers; l++) {
        lmf_layer_weights *lw = &w->layers[l];
        add(wk, &lw->attn_norm, l, 1, C, 0, "model.layers.%d.input_layernorm.weight", l);
        for (int id = 0; id < LMF_N_LINEAR; id++) {
            int out, in;
            lmf_linear_shape(c, id, &out, &in);
            add(wk, &lw->w[id], l, 0, out, in, "model.layers.%d.%s.weight", l, linear_prefixes[id]);
            if (c->attn_bias && id <= LMF_V) {
                float **b = id == LMF_Q ? &lw->bq : id == LMF_K ? &lw->bk : &lw->bv;
                add(wk, b, l, 1, out, 0, "model.layers.%d.%s.bias", l, linear_prefixes[id]);
            }
            if (c->qk_norm && id == LMF_O) {
                add(wk, &lw->q_norm, l, 1, D, 0, "model.layers.%d.self_attn.q_norm.weight", l);
                add(wk, &lw->k_norm, l, 1, D, 0, "model.layers.%d.self_attn.k_norm.weight", l);
            }
            if (id == LMF_O)
                add(wk, &lw->mlp_norm, l, 1, C, 0,
                    "model.layers.%d.post_attention_layernorm.weight", l);
        }
    }
    add(wk, &w->final_norm, -1, 1, C, 0, "model.norm.weight");
    if (c->tied)
        w->lm_head = w->embed;
    else
        add(wk, &w->lm_head, -1, 0, c->vocab, C, "lm_head.weight");
    return wk->offset;
}

static int bind(lmf_model *m, float *base, lmf_weights *w) {
    w->layers = calloc(m->cfg.layers, sizeof *w->layers);
    if (!w->layers) return lmf_errorf(LMF_ENOMEM, "model: out of memory");
    walker wk = {.base = base};
    walk(&m->cfg, &wk, w);
    return 0;
}

int lmf_model_create(lmf_model **out, const lmf_model_config *cfg, const lmf_backend *be) {
    int rc = lmf_model_config_validate(cfg, "model config");
    if (rc) return rc;
    lmf_model *m = calloc(1, sizeof *m);
    if (!m) return lmf_errorf(LMF_ENOMEM, "model: out of memory");
    m->cfg = *cfg;
    m->be = be ? be : lmf_backend_cpu();
    lmf_weights tmp = {.layers = calloc(cfg->layers, sizeof(lmf_layer_weights))};
    walker count = {0};
    if (!tmp.layers) goto oom;
    walk(cfg, &count, &tmp);
    free(tmp.layers);
    m->n_params = count.n;
    m->table = calloc(count.n, sizeof *m->table);
    m->trainable = calloc(count.n, 1);
    if (!m->table || !m->trainable) goto oom;
    tmp.layers = calloc(cfg->layers, sizeof(lmf_layer_weights));
    if (!tmp.layers) goto oom;
    walker fill = {.table = m->table};
    m->numel = walk(cfg, &fill, &tmp);
    free(tmp.layers);
    m->params = m->be->alloc(m->numel * sizeof(float));
    if (!m->params) {
        lmf_model_free(m);
        return lmf_errorf(LMF_ENOMEM, "model: cannot allocate %zu bytes of parameters",
                          m->numel * sizeof(float));
    }
    if ((rc = bind(m, m->params, &m->w))) goto fail;
    m->inv_freq = calloc(cfg->head_dim / 2, sizeof(float));
    if (!m->inv_freq) goto oom;
    lmf_rope_inv_freq(cfg, m->inv_freq);
    /* Norm weights start at one, everything else at zero, until init or load. */
    for (int i = 0; i < m->n_params; i++)
        if (strstr(m->table[i].name, "norm"))
            for (size_t k = 0; k < m->table[i].numel; k++) m->params[m->table[i].offset + k] = 1.0f;
    *out = m;
    return 0;
oom:
    rc = lmf_errorf(LMF_ENOMEM, "model: out of memory");
fail:
    lmf_model_free(m);
    return rc;
}

void lmf_model_init_random(lmf_model *m, uint64_t seed) {
    lmf_rng rng;
    lmf_rng_seed(&rng, seed);
    for (int i = 0; i < m->n_params; i++) {
        const lmf_param *p = &m->table[i];
        float *x = m->params + p->offset;
        int is_norm = strstr(p->name, "norm") != NULL, is_bias = strstr(p->name, ".bias") != NULL;
        for (size_t k = 0; k < p->numel; k++)
            x[k] = is_norm ? 1.0f : is_bias ? 0.0f : m->cfg.init_range * lmf_rng_normal(&rng);
    }
}

void lmf_model_free(lmf_model *m) {
    if (!m) return;
    lmf_model_free_acts(m);
    lmf_model_free_compute(m);
    if (m->step_block) m->be->free(m->step_block);
    if (m->infer_bf16) m->be->free(m->infer_bf16);
    if (m->params) m->be->free(m->params);
    if (m->grads) m->be->free(m->grads);
    lmf_free(m->qblock);
    free(m->qlin);
    free(m->qtmp);
    free(m->w.layers);
    free(m->g.layers);
    free(m->table);
    free(m->trainable);
    free(m->inv_freq);
    lmf_tp_free(m->tp);
    free(m);
}

const lmf_param *lmf_model_find_param(const lmf_model *m, const char *name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->table[i].name, name)) return &m->table[i];
    return NULL;
}

int lmf_model_enable_grads(lmf_model *m) {
    if (!m->grads) {
        m->grads = m->be->alloc(m->numel * sizeof(float));
        if (!m->grads)
            return lmf_errorf(LMF_ENOMEM, "model: cannot allocate %zu bytes of gradients",
                              m->numel * sizeof(float));
        int rc = bind(m, m->grads, &m->g);
        if (rc) return rc;
    }
    memset(m->trainable, 1, m->n_params);
    return 0;
}

void lmf_model_zero_grads(lmf_model *m) {
    if (m->grads) m->be->zero(m->grads, m->numel * sizeof(float));
}

static int shape_matches(const lmf_param *p, const lmf_st_tensor *t) {
    if (t->ndim != p->ndim) return 0;
    for (int d = 0; d < p->ndim; d++)
        if (t->shape[d] != p->shape[d]) return 0;
    return 1;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    int k = snprintf(buf, n, "[");
    for (int d = 0; d < ndim && k < (int)n; d++)
        k += snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (k < (int)n) snprintf(buf + k, n - k, "]");
}

int lmf_model_load(lmf_model **out, const char *dir, const lmf_backend *be) {
    if (lmf_path_is_gguf(dir)) return lmf_model_load_gguf(out, dir, be); /* llama.cpp's files */
    lmf_model_config cfg;
    char *cfg_path = lmf_path_join(dir, "config.json");
    if (!cfg_path) return lmf_errorf(LMF_ENOMEM, "out of memory");
    int rc = lmf_model_config_load(&cfg, cfg_path);
    free(cfg_path);
    if (rc) return rc;
    lmf_safetensors st;
    if ((rc = lmf_safetensors_open_dir(&st, dir))) return rc;
    lmf_model *m = NULL;
    if ((rc = lmf_model_create(&m, &cfg, be))) goto done;
    for (int i = 0; i < m->n_params; i++) {
        const lmf_param *p = &m->table[i];
        const lmf_st_tensor *t = lmf_safetensors_find(&st, p->name);
        if (!t) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: missing tensor \"%s\"", dir, p->name);
            goto done;
        }
        if (!shape_matches(p, t)) {
            char want[64], got[64];
            shape_str(want, sizeof want, p->ndim, p->shape);
            shape_str(got, sizeof got, t->ndim, t->shape);
            rc = lmf_errorf(LMF_ESHAPE, "%s: tensor \"%s\" has shape %s, config.json implies %s",
                            dir, p->name, got, want);
            goto done;
        }
        lmf_convert_to_f32(m->params + p->offset, t->data, t->dtype, p->numel);
    }
    int unknown = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const char *name = st.tensors[i].name;
        if (strstr(name, "rotary_emb.inv_freq") || (cfg.tied && !strcmp(name, "lm_head.weight")))
            continue;
        if (!lmf_model_find_param(m, name) && unknown++ < 3)
            lmf_warn("%s: ignoring unexpected tensor \"%s\"", dir, name);
    }
    if (unknown > 3) lmf_warn("%s: %d unexpected tensors ignored in all", dir, unknown);
done:
    lmf_safetensors_close(&st);
    if (rc) {
        lmf_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* Writes one shard: the table entries [from, to) into path. */
static int write_shard(const lmf_model *m, int from, int to, const void *conv, const char *path) {
    lmf_dtype dt = m->cfg.file_dtype;
    lmf_st_writer w;
    lmf_st_writer_init(&w);
    int rc = 0;
    for (int i = from; i < to && !rc; i++) {
        const lmf_param *p = &m->table[i];
        const void *data = conv ? (const uint8_t *)conv + p->offset * lmf_dtype_size(dt)
                                : (const void *)(m->params + p->offset);
        rc = lmf_st_writer_add(&w, p->name, dt, p->ndim, p->shape, data);
    }
    if (!rc) rc = lmf_st_writer_write(&w, path);
    lmf_st_writer_free(&w);
    return rc;
}

int lmf_model_save_sharded(const lmf_model *m, const char *dir, size_t max_shard_bytes) {
    int rc = lmf_mkdir_p(dir);
    if (rc) return rc;
    lmf_dtype dt = m->cfg.file_dtype;
    size_t esize = lmf_dtype_size(dt);
    void *conv = NULL;
    if (dt != LMF_F32) {
        conv = malloc(m->numel * esize);
        if (!conv) return lmf_errorf(LMF_ENOMEM, "%s: out of memory converting weights", dir);
        for (int i = 0; i < m->n_params; i++)
            lmf_convert_from_f32((uint8_t *)conv + m->table[i].offset * esize, dt,
                                 m->params + m->table[i].offset, m->table[i].numel);
    }
    /* Shards in table order, each as full as max_shard_bytes allows (at least one tensor). */
    int *start = malloc(sizeof *start * (size_t)(m->n_params + 1)), n_shards = 0;
    size_t in_shard = 0, total = 0;
    if (!start) rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", dir);
    for (int i = 0; !rc && i < m->n_params; i++) {
        size_t b = m->table[i].numel * esize;
        if (i == 0 || (max_shard_bytes && in_shard + b > max_shard_bytes && in_shard > 0))
            start[n_shards++] = i, in_shard = 0;
        in_shard += b, total += b;
    }
    if (!rc) start[n_shards] = m->n_params;
    cJSON *index = n_shards > 1 ? cJSON_CreateObject() : NULL, *map = NULL;
    if (index) {
        cJSON *meta = cJSON_AddObjectToObject(index, "metadata");
        cJSON_AddNumberToObject(meta, "total_size", (double)total);
        map = cJSON_AddObjectToObject(index, "weight_map");
    }
    for (int s = 0; !rc && s < n_shards; s++) {
        char name[64];
        if (n_shards == 1)
            snprintf(name, sizeof name, "model.safetensors");
        else
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        char *path = lmf_path_join(dir, name);
        rc = path ? write_shard(m, start[s], start[s + 1], conv, path) : LMF_ENOMEM;
        for (int i = start[s]; !rc && map && i < start[s + 1]; i++)
            cJSON_AddStringToObject(map, m->table[i].name, name);
        free(path);
    }
    if (!rc && index) {
        rc = lmf_json_save(dir, "model.safetensors.index.json", index);
    }
    cJSON_Delete(index);
    if (!rc) {
        char *cfg_path = lmf_path_join(dir, "config.json"),
             *json = lmf_model_config_to_json(&m->cfg);
        rc = cfg_path && json ? lmf_file_write_atomic(cfg_path, json, strlen(json))
                              : lmf_errorf(LMF_ENOMEM, "%s: out of memory", dir);
        free(cfg_path), free(json);
    }
    free(start);
    free(conv);
    return rc;
}

int lmf_model_save(const lmf_model *m, const char *dir) {
    return lmf_model_save_sharded(m, dir, 0);
}
