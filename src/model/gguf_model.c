/* Llama models in GGUF files: llama.* metadata <-> lmf_model_config, llama.cpp tensor names <->
 * Hugging Face names, and the q/k row permutation (llama.cpp's converter reorders each head's
 * rows from rotate-half pairs to interleaved pairs for its rope; loading undoes it). */
#include "lmforge/gguf_model.h"

#include "lmforge/tokenizer_gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *hf, *gguf;
} layer_names[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};

int lmf_gguf_name_from_hf(const char *hf, char *out, size_t n) {
    const char *g = !strcmp(hf, "model.embed_tokens.weight") ? "token_embd.weight"
                    : !strcmp(hf, "model.norm.weight")       ? "output_norm.weight"
                    : !strcmp(hf, "lm_head.weight")          ? "output.weight"
                                                             : NULL;
    if (g) {
        snprintf(out, n, "%s", g);
        return 0;
    }
    int layer, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &layer, &used) != 1 || used == 0) return LMF_ENOENT;
    for (size_t i = 0; i < sizeof layer_names / sizeof *layer_names; i++)
        if (!strcmp(hf + used, layer_names[i].hf)) {
            snprintf(out, n, "blk.%d.%s", layer, layer_names[i].gguf);
            return 0;
        }
    return LMF_ENOENT;
}

void lmf_gguf_rope_perm(int n_head, int head_dim, int32_t *perm) {
    int half = head_dim / 2;
    for (int h = 0; h < n_head; h++)
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < half; i++)
                perm[h * head_dim + s * half + i] = h * head_dim + 2 * i + s;
}

/* An integer key that must be present and positive (or optional with a default). */
static int need_int(const lmf_gguf *g, const char *key, int required, int *out) {
    int64_t v;
    int rc = lmf_gguf_get_int(g, key, &v);
    if (rc == LMF_ENOENT) {
        if (required) return lmf_errorf(LMF_EFORMAT, "%s: missing metadata \"%s\"", g->name, key);
        return 0;
    }
    if (rc) return rc;
    if (v <= 0 || v > (1 << 30))
        return lmf_errorf(LMF_ERANGE, "%s: metadata \"%s\" = %lld out of range", g->name, key,
                          (long long)v);
    *out = (int)v;
    return 0;
}

static int opt_float(const lmf_gguf *g, const char *key, float *out) {
    double v;
    int rc = lmf_gguf_get_float(g, key, &v);
    if (rc == LMF_ENOENT) return 0;
    if (rc) return rc;
    *out = (float)v;
    return 0;
}

int lmf_model_config_from_gguf(lmf_model_config *c, const lmf_gguf *g) {
    const char *arch;
    size_t alen;
    int rc = lmf_gguf_get_str(g, "general.architecture", &arch, &alen);
    if (rc == LMF_ENOENT)
        return lmf_errorf(LMF_EFORMAT, "%s: missing metadata \"general.architecture\"", g->name);
    if (rc) return rc;
    if (alen != 5 || memcmp(arch, "llama", 5))
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: general.architecture \"%.*s\": only \"llama\" is supported", g->name,
                          (int)(alen > 64 ? 64 : alen), arch);
    if ((rc = lmf_model_preset(c, LMF_ARCH_LLAMA, "tiny"))) return rc; /* defaults; all replaced */
    c->kv_heads = 0, c->head_dim = 0, c->vocab = 0, c->tied = 0;
    c->rope_theta = 10000.0f;
    c->bos_id = c->eos_id = -1;
    if ((rc = need_int(g, "llama.embedding_length", 1, &c->hidden)) ||
        (rc = need_int(g, "llama.block_count", 1, &c->layers)) ||
        (rc = need_int(g, "llama.feed_forward_length", 1, &c->ffn)) ||
        (rc = need_int(g, "llama.attention.head_count", 1, &c->heads)) ||
        (rc = need_int(g, "llama.attention.head_count_kv", 0, &c->kv_heads)) ||
        (rc = need_int(g, "llama.context_length", 1, &c->max_pos)) ||
        (rc = need_int(g, "llama.vocab_size", 0, &c->vocab)) ||
        (rc = need_int(g, "llama.attention.key_length", 0, &c->head_dim)) ||
        (rc = opt_float(g, "llama.attention.layer_norm_rms_epsilon", &c->rms_eps)) ||
        (rc = opt_float(g, "llama.rope.freq_base", &c->rope_theta)))
        return rc;
    if (!c->kv_heads) c->kv_heads = c->heads;
    if (!c->head_dim) c->head_dim = c->hidden / c->heads;
    const lmf_gguf_tensor *emb = lmf_gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return lmf_errorf(LMF_EFORMAT, "%s: missing tensor \"token_embd.weight\"", g->name);
    if (!c->vocab) c->vocab = (int)emb->ne[1];
    c->tied = lmf_gguf_find_tensor(g, "output.weight") == NULL;
    c->file_dtype = emb->type == LMF_GGML_F16    ? LMF_F16
                    : emb->type == LMF_GGML_BF16 ? LMF_BF16
                                                 : LMF_F32;
    const char *st;
    size_t sl;
    if ((rc = lmf_gguf_get_str(g, "llama.rope.scaling.type", &st, &sl)) == 0 &&
        !(sl == 4 && !memcmp(st, "none", 4))) {
        if (!(sl == 6 && !memcmp(st, "linear", 6)))
            return lmf_errorf(LMF_EUNSUPPORTED,
                              "%s: llama.rope.scaling.type \"%.*s\": only none and linear are "
                              "supported",
                              g->name, (int)(sl > 64 ? 64 : sl), st);
        c->rope_kind = LMF_ROPE_LINEAR;
        c->rope_factor = 1.0f;
        if ((rc = opt_float(g, "llama.rope.scaling.factor", &c->rope_factor))) return rc;
    } else if (rc != LMF_ENOENT && rc) {
        return rc;
    }
    if (lmf_gguf_find_tensor(g, "rope_freqs.weight"))
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: rope_freqs.weight (llama-3.1 rope scaling factors) is not supported",
                          g->name);
    int64_t id;
    if (lmf_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &id) == 0 && id >= 0 && id < c->vocab)
        c->bos_id = (int)id;
    if (lmf_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &id) == 0 && id >= 0 && id < c->vocab)
        c->eos_id = (int)id;
    return lmf_model_config_validate(c, g->name);
}

/* Rows of an (out, in) matrix, in GGUF order, put in Hugging Face order. */
static int unpermute(float *w, int n_head, int head_dim, int in) {
    int rows = n_head * head_dim;
    int32_t *perm = malloc(sizeof *perm * (size_t)rows);
    float *tmp = malloc(sizeof(float) * (size_t)rows * in);
    if (!perm || !tmp) {
        free(perm), free(tmp);
        return lmf_errorf(LMF_ENOMEM, "gguf: out of memory");
    }
    lmf_gguf_rope_perm(n_head, head_dim, perm);
    memcpy(tmp, w, sizeof(float) * (size_t)rows * in);
    for (int r = 0; r < rows; r++)
        memcpy(w + (size_t)r * in, tmp + (size_t)perm[r] * in, sizeof(float) * (size_t)in);
    free(perm), free(tmp);
    return 0;
}

int lmf_model_from_gguf(lmf_model **out, const lmf_gguf *g, const lmf_backend *be) {
    lmf_model_config cfg;
    int rc = lmf_model_config_from_gguf(&cfg, g);
    if (rc) return rc;
    lmf_model *m = NULL;
    if ((rc = lmf_model_create(&m, &cfg, be))) return rc;
    for (int i = 0; i < m->n_params && !rc; i++) {
        const lmf_param *p = &m->table[i];
        char gname[128];
        if (lmf_gguf_name_from_hf(p->name, gname, sizeof gname)) {
            rc = lmf_errorf(LMF_EUNSUPPORTED, "%s: no GGUF name for parameter \"%s\"", g->name,
                            p->name);
            break;
        }
        const lmf_gguf_tensor *t = lmf_gguf_find_tensor(g, gname);
        if (!t) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: missing tensor \"%s\" (%s)", g->name, gname, p->name);
            break;
        }
        int64_t want0 = p->ndim == 2 ? p->shape[1] : p->shape[0],
                want1 = p->ndim == 2 ? p->shape[0] : 1;
        if (t->n_dims != p->ndim || t->ne[0] != want0 || t->ne[1] != want1) {
            rc = lmf_errorf(LMF_ESHAPE,
                            "%s: tensor \"%s\" has ne [%lld, %lld] (%d dims), the metadata implies "
                            "[%lld, %lld] (%d dims)",
                            g->name, gname, (long long)t->ne[0], (long long)t->ne[1], t->n_dims,
                            (long long)want0, (long long)want1, p->ndim);
            break;
        }
        float *dst = m->params + p->offset;
        if ((rc = lmf_gguf_tensor_to_f32(g, t, dst))) break;
        if (strstr(p->name, "self_attn.q_proj.weight"))
            rc = unpermute(dst, cfg.heads, cfg.head_dim, cfg.hidden);
        else if (strstr(p->name, "self_attn.k_proj.weight"))
            rc = unpermute(dst, cfg.kv_heads, cfg.head_dim, cfg.hidden);
    }
    if (rc) {
        lmf_model_free(m);
        return rc;
    }
    lmf_model_weights_changed(m);
    *out = m;
    return 0;
}

int lmf_model_load_gguf(lmf_model **out, const char *path, const lmf_backend *be) {
    lmf_gguf g;
    int rc = lmf_gguf_open(&g, path);
    if (rc) return rc;
    rc = lmf_model_from_gguf(out, &g, be);
    lmf_gguf_close(&g);
    return rc;
}

/* ---- writing ---- */

/* The type a weight with rows of `row` values gets: the one asked for when its block fits,
 * else Q4_0 for a 4-bit request (32-value blocks), else F32. */
static int weight_type_for(uint32_t want, int64_t row) {
    lmf_qtype q;
    if (lmf_ggml_to_qtype(want, &q) || row % lmf_qtype_block(q) == 0) return (int)want;
    return want != LMF_GGML_Q8_0 && row % 32 == 0 ? LMF_GGML_Q4_0 : LMF_GGML_F32;
}

/* Encodes one parameter (rows x cols f32, HF row order) as type; *out is malloc'd. */
static int encode(const lmf_model *m, const lmf_param *p, uint32_t type, void **out) {
    int64_t rows = p->ndim == 2 ? p->shape[0] : 1, cols = p->ndim == 2 ? p->shape[1] : p->shape[0];
    const float *src = m->params + p->offset;
    float *perm_rows = NULL;
    int heads = strstr(p->name, "self_attn.q_proj.weight")   ? m->cfg.heads
                : strstr(p->name, "self_attn.k_proj.weight") ? m->cfg.kv_heads
                                                             : 0;
    if (heads) { /* GGUF row perm[r] holds HF row r */
        int32_t *perm = malloc(sizeof *perm * (size_t)rows);
        perm_rows = malloc(sizeof(float) * (size_t)(rows * cols));
        if (!perm || !perm_rows) {
            free(perm), free(perm_rows);
            return lmf_errorf(LMF_ENOMEM, "gguf: out of memory");
        }
        lmf_gguf_rope_perm(heads, m->cfg.head_dim, perm);
        for (int64_t r = 0; r < rows; r++)
            memcpy(perm_rows + (size_t)perm[r] * cols, src + (size_t)r * cols,
                   sizeof(float) * cols);
        free(perm);
        src = perm_rows;
    }
    int rc = 0;
    lmf_qtype q;
    size_t bytes = type == LMF_GGML_F32                            ? 4 * (size_t)(rows * cols)
                   : type == LMF_GGML_F16 || type == LMF_GGML_BF16 ? 2 * (size_t)(rows * cols)
                   : lmf_ggml_to_qtype(type, &q) == 0 ? lmf_quant_row_bytes(q, cols) * rows
                                                      : 0;
    void *buf = bytes ? malloc(bytes) : NULL;
    if (!bytes)
        rc = lmf_errorf(LMF_EUNSUPPORTED, "gguf: cannot write tensor type %s",
                        lmf_ggml_type_name(type));
    else if (!buf)
        rc = lmf_errorf(LMF_ENOMEM, "gguf: out of memory");
    else if (type == LMF_GGML_F32)
        memcpy(buf, src, bytes);
    else if (type == LMF_GGML_F16 || type == LMF_GGML_BF16)
        lmf_convert_from_f32(buf, type == LMF_GGML_F16 ? LMF_F16 : LMF_BF16, src,
                             (size_t)(rows * cols));
    else
        rc = lmf_quantize(q, buf, src, rows, cols, p->name);
    free(perm_rows);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

static int put_config(lmf_gguf_writer *w, const lmf_model_config *c, const char *name) {
    int rc;
    if ((rc = lmf_gguf_set_str(w, "general.architecture", "llama")) ||
        (rc = lmf_gguf_set_str(w, "general.name", name ? name : "lmforge")) ||
        (rc = lmf_gguf_set_int(w, "llama.context_length", LMF_GGUF_UINT32, c->max_pos)) ||
        (rc = lmf_gguf_set_int(w, "llama.embedding_length", LMF_GGUF_UINT32, c->hidden)) ||
        (rc = lmf_gguf_set_int(w, "llama.block_count", LMF_GGUF_UINT32, c->layers)) ||
        (rc = lmf_gguf_set_int(w, "llama.feed_forward_length", LMF_GGUF_UINT32, c->ffn)) ||
        (rc = lmf_gguf_set_int(w, "llama.attention.head_count", LMF_GGUF_UINT32, c->heads)) ||
        (rc = lmf_gguf_set_int(w, "llama.attention.head_count_kv", LMF_GGUF_UINT32, c->kv_heads)) ||
        (rc = lmf_gguf_set_int(w, "llama.rope.dimension_count", LMF_GGUF_UINT32, c->head_dim)) ||
        (rc = lmf_gguf_set_int(w, "llama.vocab_size", LMF_GGUF_UINT32, c->vocab)) ||
        (rc = lmf_gguf_set_float(w, "llama.attention.layer_norm_rms_epsilon", LMF_GGUF_FLOAT32,
                                 c->rms_eps)) ||
        (rc = lmf_gguf_set_float(w, "llama.rope.freq_base", LMF_GGUF_FLOAT32, c->rope_theta)))
        return rc;
    if (c->head_dim != c->hidden / c->heads &&
        ((rc = lmf_gguf_set_int(w, "llama.attention.key_length", LMF_GGUF_UINT32, c->head_dim)) ||
         (rc = lmf_gguf_set_int(w, "llama.attention.value_length", LMF_GGUF_UINT32, c->head_dim))))
        return rc;
    if (c->rope_kind == LMF_ROPE_LINEAR &&
        ((rc = lmf_gguf_set_str(w, "llama.rope.scaling.type", "linear")) ||
         (rc = lmf_gguf_set_float(w, "llama.rope.scaling.factor", LMF_GGUF_FLOAT32,
                                  c->rope_factor))))
        return rc;
    if (c->bos_id >= 0 &&
        (rc = lmf_gguf_set_int(w, "tokenizer.ggml.bos_token_id", LMF_GGUF_UINT32, c->bos_id)))
        return rc;
    if (c->eos_id >= 0 &&
        (rc = lmf_gguf_set_int(w, "tokenizer.ggml.eos_token_id", LMF_GGUF_UINT32, c->eos_id)))
        return rc;
    return 0;
}

int lmf_model_save_gguf(const lmf_model *m, const char *path, const lmf_gguf_save_opts *o) {
    const lmf_model_config *c = &m->cfg;
    if (c->arch != LMF_ARCH_LLAMA && c->arch != LMF_ARCH_MISTRAL)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: GGUF export supports llama-architecture models only", path);
    if (c->rope_kind == LMF_ROPE_LLAMA3)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: GGUF export of llama3 rope scaling is not supported", path);
    lmf_gguf_writer w;
    lmf_gguf_writer_init(&w);
    void **bufs = calloc((size_t)m->n_params, sizeof *bufs);
    int rc = bufs ? put_config(&w, c, o->name) : lmf_errorf(LMF_ENOMEM, "gguf: out of memory");
    if (!rc && o->tokenizer_dir) rc = lmf_tokenizer_gguf_metadata(&w, o->tokenizer_dir);
    int fallbacks = 0;
    for (int i = 0; !rc && i < m->n_params; i++) {
        const lmf_param *p = &m->table[i];
        char gname[128];
        if ((rc = lmf_gguf_name_from_hf(p->name, gname, sizeof gname))) {
            rc = lmf_errorf(LMF_EUNSUPPORTED, "%s: no GGUF name for parameter \"%s\"", path,
                            p->name);
            break;
        }
        int64_t ne[2] = {p->ndim == 2 ? p->shape[1] : p->shape[0], p->ndim == 2 ? p->shape[0] : 1};
        uint32_t type = LMF_GGML_F32;
        if (p->ndim == 2) {
            type = (uint32_t)weight_type_for(o->weight_type, ne[0]);
            fallbacks += type != o->weight_type;
        }
        if ((rc = encode(m, p, type, &bufs[i]))) break;
        rc = lmf_gguf_add_tensor(&w, gname, type, p->ndim, ne, bufs[i]);
    }
    if (fallbacks)
        lmf_info("%s: %d weights with rows not a multiple of the %s block written as Q4_0 (or F32)",
                 path, fallbacks, lmf_ggml_type_name(o->weight_type));
    if (!rc) rc = lmf_gguf_writer_write(&w, path);
    for (int i = 0; bufs && i < m->n_params; i++) free(bufs[i]);
    free(bufs);
    lmf_gguf_writer_free(&w);
    return rc;
}
