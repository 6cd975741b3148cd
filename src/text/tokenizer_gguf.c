/* GGUF-embedded tokenizers (lmforge/tokenizer_gguf.h). Reading builds the tokenizer.json a
 * byte-level BPE tokenizer would have (vocab from tokenizer.ggml.tokens, merges, added tokens
 * from token_type CONTROL / USER_DEFINED, a ByteLevel pre-tokenizer and decoder) and hands it to
 * the same builder lmf_tokenizer_load uses, then sets what tokenizer_config.json would give
 * (bos/eos/pad, add_bos/add_eos, chat template). Writing goes the other way. */
#include "lmforge/tokenizer_gguf.h"

#include "lmforge/core.h"
#include "lmforge/json.h"
#include "text/tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama.cpp's token types */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5 };

static const struct {
    const char *name;
    int regex;
} pre_names[] = {{"default", RX_GPT2},
                 {"gpt2", RX_GPT2},
                 {"llama-bpe", RX_LLAMA3},
                 {"llama3", RX_LLAMA3},
                 {"qwen2", RX_QWEN2}};

/* A NUL-terminated copy of a GGUF string, refusing embedded NULs. */
static char *cstr(const char *s, size_t n) {
    if (memchr(s, 0, n)) return NULL;
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n), p[n] = 0;
    return p;
}

static int str_array(const lmf_gguf *g, const char *key, int required, const lmf_gguf_value **v) {
    const lmf_gguf_kv *kv = lmf_gguf_find(g, key);
    *v = NULL;
    if (!kv)
        return required ? lmf_errorf(LMF_EFORMAT, "%s: missing metadata \"%s\"", g->name, key) : 0;
    if (kv->v.type != LMF_GGUF_ARRAY || kv->v.arr_type != LMF_GGUF_STRING)
        return lmf_errorf(LMF_EFORMAT, "%s: metadata \"%s\": expected an array of strings", g->name,
                          key);
    *v = &kv->v;
    return 0;
}

static int opt_id(const lmf_gguf *g, const char *key, int vocab, int32_t *out) {
    int64_t v;
    int rc = lmf_gguf_get_int(g, key, &v);
    if (rc == LMF_ENOENT) return 0;
    if (rc) return rc;
    if (v < 0 || v >= vocab)
        return lmf_errorf(LMF_ERANGE, "%s: metadata \"%s\" = %lld is not a token id (vocab %d)",
                          g->name, key, (long long)v, vocab);
    *out = (int32_t)v;
    return 0;
}

/* The tokenizer.json object for the metadata (token_type may be NULL). */
static int build_json(const lmf_gguf *g, const lmf_gguf_value *tok, const lmf_gguf_value *merges,
                      const lmf_gguf_kv *types, cJSON **out) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON *mj = cJSON_AddArrayToObject(model, "merges");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddBoolToObject(pre, "add_prefix_space", 0);
    cJSON_AddBoolToObject(pre, "use_regex", 1);
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    if (!added || !dec || !mj || !vocab) goto oom;
    for (uint64_t i = 0; i < tok->n; i++) {
        char *s = cstr(tok->strs[i], tok->lens[i]);
        if (!s) {
            cJSON_Delete(root);
            return lmf_errorf(LMF_EFORMAT,
                              "%s: tokenizer.ggml.tokens[%llu]: empty or holds a NUL byte", g->name,
                              (unsigned long long)i);
        }
        int type = types ? (int)lmf_gguf_arr_int(&types->v, i) : TT_NORMAL;
        cJSON *num = cJSON_CreateNumber((double)i);
        if (!num) {
            free(s);
            goto oom;
        }
        cJSON_AddItemToObject(vocab, s, num);
        if (type == TT_CONTROL || type == TT_USER_DEFINED) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddItemToArray(added, a);
            cJSON_AddNumberToObject(a, "id", (double)i);
            cJSON_AddStringToObject(a, "content", s);
            cJSON_AddBoolToObject(a, "special", type == TT_CONTROL);
            cJSON_AddBoolToObject(a, "normalized", 0);
        }
        free(s);
    }
    for (uint64_t i = 0; i < merges->n; i++) {
        char *s = cstr(merges->strs[i], merges->lens[i]);
        if (!s) {
            cJSON_Delete(root);
            return lmf_errorf(LMF_EFORMAT, "%s: tokenizer.ggml.merges[%llu]: holds a NUL byte",
                              g->name, (unsigned long long)i);
        }
        cJSON_AddItemToArray(mj, cJSON_CreateString(s));
        free(s);
    }
    *out = root;
    return 0;
oom:
    cJSON_Delete(root);
    return lmf_errorf(LMF_ENOMEM, "%s: out of memory", g->name);
}

int lmf_tokenizer_from_gguf(lmf_tokenizer **out, const lmf_gguf *g) {
    *out = NULL;
    const char *model, *pre = "default";
    size_t mlen, plen = 7;
    int rc = lmf_gguf_get_str(g, "tokenizer.ggml.model", &model, &mlen);
    if (rc == LMF_ENOENT)
        return lmf_errorf(LMF_ENOENT, "%s: no embedded tokenizer (tokenizer.ggml.model)", g->name);
    if (rc) return rc;
    if (mlen != 4 || memcmp(model, "gpt2", 4))
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: tokenizer.ggml.model \"%.*s\": only \"gpt2\" (byte-level BPE) is "
                          "supported",
                          g->name, (int)(mlen > 64 ? 64 : mlen), model);
    if ((rc = lmf_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &plen)) && rc != LMF_ENOENT)
        return rc;
    int regex = 0;
    for (size_t i = 0; i < sizeof pre_names / sizeof *pre_names; i++)
        if (strlen(pre_names[i].name) == plen && !memcmp(pre, pre_names[i].name, plen))
            regex = pre_names[i].regex;
    if (!regex)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: tokenizer.ggml.pre \"%.*s\": expected default, gpt2, llama-bpe or "
                          "qwen2",
                          g->name, (int)(plen > 64 ? 64 : plen), pre);
    const lmf_gguf_value *tok, *merges;
    if ((rc = str_array(g, "tokenizer.ggml.tokens", 1, &tok)) ||
        (rc = str_array(g, "tokenizer.ggml.merges", 1, &merges)))
        return rc;
    if (tok->n == 0 || tok->n > (1u << 24))
        return lmf_errorf(LMF_ERANGE, "%s: tokenizer.ggml.tokens: %llu tokens", g->name,
                          (unsigned long long)tok->n);
    const lmf_gguf_kv *types = lmf_gguf_find(g, "tokenizer.ggml.token_type");
    if (types && (types->v.type != LMF_GGUF_ARRAY || types->v.n != tok->n ||
                  (types->v.arr_type != LMF_GGUF_INT32 && types->v.arr_type != LMF_GGUF_UINT32)))
        return lmf_errorf(
            LMF_EFORMAT, "%s: tokenizer.ggml.token_type: expected %llu int32 values, one per token",
            g->name, (unsigned long long)tok->n);
    cJSON *root = NULL;
    if ((rc = build_json(g, tok, merges, types, &root))) return rc;
    lmf_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(root);
        return lmf_errorf(LMF_ENOMEM, "%s: out of memory", g->name);
    }
    t->bos = t->eos = t->pad = -1;
    rc = lmf_tok_build(t, root, g->name);
    cJSON_Delete(root);
    if (rc) goto fail;
    for (int i = 0; i < t->n_pretok; i++)
        if (t->pretok[i].kind == PT_BYTELEVEL) t->pretok[i].regex = regex;
    if ((rc = opt_id(g, "tokenizer.ggml.bos_token_id", t->vocab_size, &t->bos)) ||
        (rc = opt_id(g, "tokenizer.ggml.eos_token_id", t->vocab_size, &t->eos)) ||
        (rc = opt_id(g, "tokenizer.ggml.padding_token_id", t->vocab_size, &t->pad)))
        goto fail;
    int add_bos = 0, add_eos = 0;
    if (((rc = lmf_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos)) &&
         rc != LMF_ENOENT) ||
        ((rc = lmf_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos)) && rc != LMF_ENOENT))
        goto fail;
    rc = 0;
    if ((add_bos && t->bos >= 0) || (add_eos && t->eos >= 0)) {
        if (!(t->post_single = malloc(3 * sizeof *t->post_single))) goto oom;
        if (add_bos && t->bos >= 0) t->post_single[t->n_post_single++] = t->bos;
        t->post_single[t->n_post_single++] = -1;
        if (add_eos && t->eos >= 0) t->post_single[t->n_post_single++] = t->eos;
    }
    const char *tmpl;
    size_t tlen;
    if ((rc = lmf_gguf_get_str(g, "tokenizer.chat_template", &tmpl, &tlen)) == 0) {
        if (!(t->chat_template = cstr(tmpl, tlen))) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: tokenizer.chat_template holds a NUL byte", g->name);
            goto fail;
        }
    } else if (rc != LMF_ENOENT) {
        goto fail;
    }
    *out = t;
    return 0;
oom:
    rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", g->name);
fail:
    lmf_tokenizer_free(t);
    return rc;
}

/* ---- writing ---- */

typedef struct merge_ent {
    uint32_t rank;
    int32_t a, b;
} merge_ent;

static int cmp_rank(const void *x, const void *y) {
    uint32_t a = ((const merge_ent *)x)->rank, b = ((const merge_ent *)y)->rank;
    return a < b ? -1 : a > b;
}

int lmf_tokenizer_gguf_metadata(lmf_gguf_writer *w, const char *dir) {
    lmf_tokenizer *t;
    int rc = lmf_tokenizer_load(&t, dir);
    if (rc) return rc;
    int regex = 0;
    for (int i = 0; i < t->n_pretok; i++)
        if (t->pretok[i].kind == PT_BYTELEVEL || t->pretok[i].kind == PT_SPLIT)
            regex = t->pretok[i].regex ? t->pretok[i].regex : regex;
    int bytelevel = 0;
    for (int i = 0; i < t->n_pretok; i++) bytelevel |= t->pretok[i].kind == PT_BYTELEVEL;
    if (!bytelevel || t->n_norm || t->bpe.byte_fallback || !regex) {
        lmf_tokenizer_free(t);
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: only byte-level BPE tokenizers (GPT-2, Llama-3, Qwen2 style) can be "
                          "embedded in GGUF",
                          dir);
    }
    int n = t->vocab_size;
    char **toks = calloc((size_t)n, sizeof *toks);
    int32_t *types = calloc((size_t)n, sizeof *types);
    merge_ent *merges = NULL;
    char **mstr = NULL;
    size_t n_merges = 0;
    if (!toks || !types) goto oom;
    for (int i = 0; i < n; i++) {
        const char *s = lmf_tokenizer_id_to_token(t, i);
        char pad[32];
        if (!s) snprintf(pad, sizeof pad, "[PAD%d]", i);
        if (!(toks[i] = lmf_strdup(s ? s : pad))) goto oom;
        types[i] = !s ? TT_UNUSED
                   : t->added_of_id[i] >= 0
                       ? (t->added[t->added_of_id[i]].special ? TT_CONTROL : TT_USER_DEFINED)
                       : TT_NORMAL;
    }
    const lmf_bpe *m = &t->bpe;
    if (m->mkeys) {
        merges = malloc(sizeof *merges * ((size_t)m->mmask + 1));
        if (!merges) goto oom;
        for (uint32_t i = 0; i <= m->mmask; i++)
            if (m->mkeys[i] != UINT64_MAX)
                merges[n_merges++] = (merge_ent){m->mrank[i], (int32_t)(m->mkeys[i] >> 32),
                                                 (int32_t)(uint32_t)m->mkeys[i]};
        qsort(merges, n_merges, sizeof *merges, cmp_rank);
    }
    mstr = calloc(n_merges + 1, sizeof *mstr);
    if (!mstr) goto oom;
    for (size_t i = 0; i < n_merges; i++) {
        size_t la = m->tlen[merges[i].a], lb = m->tlen[merges[i].b];
        if (!(mstr[i] = malloc(la + lb + 2))) goto oom;
        memcpy(mstr[i], m->tok[merges[i].a], la);
        mstr[i][la] = ' ';
        memcpy(mstr[i] + la + 1, m->tok[merges[i].b], lb);
        mstr[i][la + lb + 1] = 0;
    }
    const char *pre = regex == RX_LLAMA3 ? "llama-bpe" : regex == RX_QWEN2 ? "qwen2" : "gpt2";
    int add_bos = 0, add_eos = 0;
    for (int i = 0; i < t->n_post_single; i++) {
        if (t->post_single[i] == -1) continue;
        if (t->post_single[i] == t->bos && (i == 0))
            add_bos = 1;
        else if (t->post_single[i] == t->eos && i == t->n_post_single - 1)
            add_eos = 1;
        else {
            rc = lmf_errorf(LMF_EUNSUPPORTED,
                            "%s: post-processor adds token %d, which GGUF cannot say", dir,
                            t->post_single[i]);
            goto done;
        }
    }
    if ((rc = lmf_gguf_set_str(w, "tokenizer.ggml.model", "gpt2")) ||
        (rc = lmf_gguf_set_str(w, "tokenizer.ggml.pre", pre)) ||
        (rc = lmf_gguf_set_str_arr(w, "tokenizer.ggml.tokens", (const char *const *)toks,
                                   (uint64_t)n)) ||
        (rc = lmf_gguf_set_arr(w, "tokenizer.ggml.token_type", LMF_GGUF_INT32, types,
                               (uint64_t)n)) ||
        (rc = lmf_gguf_set_str_arr(w, "tokenizer.ggml.merges", (const char *const *)mstr,
                                   n_merges)) ||
        (rc = lmf_gguf_set_int(w, "tokenizer.ggml.add_bos_token", LMF_GGUF_BOOL, add_bos)) ||
        (rc = lmf_gguf_set_int(w, "tokenizer.ggml.add_eos_token", LMF_GGUF_BOOL, add_eos)))
        goto done;
    if (t->bos >= 0 &&
        (rc = lmf_gguf_set_int(w, "tokenizer.ggml.bos_token_id", LMF_GGUF_UINT32, t->bos)))
        goto done;
    if (t->eos >= 0 &&
        (rc = lmf_gguf_set_int(w, "tokenizer.ggml.eos_token_id", LMF_GGUF_UINT32, t->eos)))
        goto done;
    if (t->pad >= 0 &&
        (rc = lmf_gguf_set_int(w, "tokenizer.ggml.padding_token_id", LMF_GGUF_UINT32, t->pad)))
        goto done;
    if (t->chat_template && (rc = lmf_gguf_set_str(w, "tokenizer.chat_template", t->chat_template)))
        goto done;
    goto done;
oom:
    rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", dir);
done:
    for (int i = 0; toks && i < n; i++) free(toks[i]);
    for (size_t i = 0; mstr && i < n_merges; i++) free(mstr[i]);
    free(toks), free(types), free(merges), free(mstr);
    lmf_tokenizer_free(t);
    return rc;
}
