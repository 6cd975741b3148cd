/* Tokenizer loading (tokenizer.json + tokenizer_config.json), encoding and the small public
 * accessors. Encoding follows HF tokenizers: added tokens are cut out of the raw text first
 * (leftmost, longest), every other piece goes through normalizer -> pre-tokenizer -> BPE, and
 * the TemplateProcessing post-processor adds special tokens when asked. */
#include "lmforge/tokenizer.h"

#include "lmforge/core.h"
#include "lmforge/json.h"
#include "lmforge/tokenizer_gguf.h"
#include "text/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

static int cmp_added_len(const void *a, const void *b) {
    const lmf_added_token *x = a, *y = b;
    return x->plen < y->plen ? 1 : x->plen > y->plen ? -1 : 0;
}

/* HF matches "normalized" added tokens by their normalized content in normalized text (so with
 * Llama-2's Prepend("▁") the pattern of "<x>" is "▁<x>"). Needs the pipeline loaded. */
static int added_patterns(lmf_tokenizer *t) {
    int rc;
    for (int i = 0; i < t->n_added; i++) {
        lmf_added_token *a = &t->added[i];
        lmf_sbuf b = {0};
        if (a->normalized && (rc = lmf_tok_normalize(t, a->content, a->len, &b))) return rc;
        if (!a->normalized && (rc = lmf_sbuf_add(&b, a->content, a->len))) return rc;
        a->pat = b.p;
        a->plen = b.len;
        if (a->plen) t->added_first[(uint8_t)a->pat[0]] = 1;
    }
    if (t->n_added) qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added_len);
    return 0;
}

static int load_added(lmf_tokenizer *t, const cJSON *arr, const char *file) {
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr))
        return lmf_errorf(LMF_EFORMAT, "%s: added_tokens: expected an array", file);
    int n = cJSON_GetArraySize(arr), i = 0, rc;
    t->added = calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        lmf_added_token *a = &t->added[t->n_added];
        const char *content = NULL;
        int64_t id = -1;
        if ((rc = lmf_json_get_str(e, "content", file, &content)) < 0 ||
            (rc = lmf_json_get_int(e, "id", file, &id)) < 0 ||
            (rc = lmf_json_get_bool(e, "special", file, &a->special)) < 0 ||
            (rc = lmf_json_get_bool(e, "lstrip", file, &a->lstrip)) < 0 ||
            (rc = lmf_json_get_bool(e, "rstrip", file, &a->rstrip)) < 0 ||
            (rc = lmf_json_get_bool(e, "single_word", file, &a->single_word)) < 0 ||
            (rc = lmf_json_get_bool(e, "normalized", file, &a->normalized)) < 0)
            return lmf_error_prefix(rc, "added_tokens[%d]", i);
        if (!content || !content[0] || id < 0 || id > 16777216)
            return lmf_errorf(LMF_EFORMAT,
                              "%s: added_tokens[%d]: needs a non-empty content and an id", file, i);
        if (!(a->content = lmf_strdup(content)))
            return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
        a->len = strlen(content);
        a->id = (int32_t)id;
        t->n_added++;
    }
    return 0;
}

/* bos_token etc.: a string, an object with "content", or null. */
static int config_token(lmf_tokenizer *t, const cJSON *cfg, const char *key, const char *file,
                        int32_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    *out = -1;
    if (!v || cJSON_IsNull(v)) return 0;
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return lmf_errorf(LMF_EFORMAT, "%s: \"%s\": expected a string or {\"content\": ...}", file,
                          key);
    if ((*out = lmf_tokenizer_token_to_id(t, v->valuestring)) < 0)
        return lmf_errorf(LMF_EFORMAT, "%s: \"%s\": token \"%s\" is not in the vocabulary", file,
                          key, v->valuestring);
    return 0;
}

static int load_config(lmf_tokenizer *t, const char *dir) {
    char *path = lmf_path_join(dir, "tokenizer_config.json"), *jinja = NULL;
    cJSON *cfg = NULL;
    int rc = 0;
    if (!path) return lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
    if (lmf_path_exists(path)) {
        if ((rc = lmf_json_load(path, &cfg))) goto done;
        if ((rc = config_token(t, cfg, "bos_token", path, &t->bos)) ||
            (rc = config_token(t, cfg, "eos_token", path, &t->eos)) ||
            (rc = config_token(t, cfg, "pad_token", path, &t->pad)))
            goto done;
        const char *tmpl = NULL;
        if ((rc = lmf_json_get_str(cfg, "chat_template", path, &tmpl)) < 0) goto done;
        rc = 0;
        if (tmpl && !(t->chat_template = lmf_strdup(tmpl))) {
            rc = lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
            goto done;
        }
    }
    /* newer transformers write the template next to the config instead of inside it */
    if (!t->chat_template) {
        size_t len;
        if (!(jinja = lmf_path_join(dir, "chat_template.jinja"))) {
            rc = lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
            goto done;
        }
        if (lmf_path_exists(jinja) && (rc = lmf_file_read_all(jinja, &t->chat_template, &len)))
            goto done;
    }
done:
    cJSON_Delete(cfg);
    free(path);
    free(jinja);
    return rc;
}

static const char MARKER[] = "\xE2\x96\x81"; /* U+2581, SentencePiece's space */

/* Without a pre-tokenizer (Llama-2 style) a whole text is one BPE word: slow, and uncacheable.
 * When no vocab token holds "▁" after another character, no merge can join a character to a
 * following "▁", so cutting the word before every "▁" that follows a non-"▁" gives the same
 * tokens (ignore_merges would look whole words up, so it turns the cut off). */
static int marker_split_ok(const lmf_tokenizer *t) {
    const lmf_bpe *m = &t->bpe;
    if (t->n_pretok || m->ignore_merges || lmf_bpe_lookup(m, MARKER, 3) < 0) return 0;
    for (int32_t id = 0; id < m->n_ids; id++) {
        const char *s = m->tok[id];
        if (!s) continue;
        while (!strncmp(s, MARKER, 3)) s += 3;
        if (strstr(s, MARKER)) return 0;
    }
    return 1;
}

int lmf_tok_build(lmf_tokenizer *t, const cJSON *root, const char *path) {
    int rc;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return lmf_errorf(LMF_EFORMAT, "%s: \"model\": expected an object", path);
    if ((rc = lmf_bpe_init(&t->bpe, model, path))) return rc;
    if ((rc = load_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), path)))
        return rc;
    if ((rc = lmf_tok_load_pipeline(t, root, path))) return rc;
    if ((rc = added_patterns(t))) return rc;
    for (int b = 0; b < 256; b++)
        t->bl_len[b] = (uint8_t)lmf_utf8_put(lmf_bytelevel_cp((uint8_t)b), t->bl_utf8[b]);
    t->vocab_size = t->bpe.n_ids;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id >= t->vocab_size) t->vocab_size = t->added[i].id + 1;
    if (!(t->added_of_id = malloc((size_t)t->vocab_size * sizeof *t->added_of_id)))
        return lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
    memset(t->added_of_id, 0xff, (size_t)t->vocab_size * sizeof *t->added_of_id);
    for (int i = 0; i < t->n_added; i++) t->added_of_id[t->added[i].id] = i;
    return 0;
}

int lmf_tokenizer_load(lmf_tokenizer **out, const char *dir) {
    *out = NULL;
    if (lmf_path_is_gguf(dir)) { /* the tokenizer a llama.cpp model file embeds */
        lmf_gguf g;
        int rc = lmf_gguf_open(&g, dir);
        if (!rc) rc = lmf_tokenizer_from_gguf(out, &g);
        lmf_gguf_close(&g);
        return rc;
    }
    char *path = lmf_path_join(dir, "tokenizer.json");
    cJSON *root = NULL;
    int rc;
    lmf_tokenizer *t = calloc(1, sizeof *t);
    if (!path || !t) {
        rc = lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
        goto fail;
    }
    t->bos = t->eos = t->pad = -1;
    if ((rc = lmf_json_load(path, &root))) goto fail;
    if ((rc = lmf_tok_build(t, root, path))) goto fail;
    if ((rc = load_config(t, dir))) goto fail;
    t->split_at_marker = marker_split_ok(t);
    cJSON_Delete(root);
    free(path);
    *out = t;
    return 0;
fail:
    cJSON_Delete(root);
    free(path);
    lmf_tokenizer_free(t);
    return rc;
}

void lmf_tokenizer_free(lmf_tokenizer *t) {
    if (!t) return;
    lmf_bpe_free(&t->bpe);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content), free(t->added[i].pat);
    free(t->added);
    free(t->added_of_id);
    lmf_tok_free_pipeline(t);
    free(t->chat_template);
    free(t);
}

/* Class bits of the character ending at s[end) / starting at s[i] (for HF's lstrip/rstrip,
 * which test char::is_whitespace, and single_word, which tests regex \\w). */
static int class_before(const uint8_t *s, size_t end, size_t *len) {
    size_t b = end - 1;
    while (b > 0 && end - b < 4 && (s[b] & 0xC0) == 0x80) b--;
    uint32_t cp;
    int k = lmf_utf8_next(s + b, end - b, &cp);
    *len = end - b;
    return k > 0 ? lmf_uc_class(cp) : 0;
}

static int class_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
    uint32_t cp;
    int k = lmf_utf8_next(s + i, n - i, &cp);
    *len = k > 0 ? (size_t)k : 1;
    return k > 0 ? lmf_uc_class(cp) : 0;
}

/* Finds the leftmost-longest added token whose "normalized" flag equals normalized at or after
 * pos; start and end include lstrip/rstrip whitespace (never reaching back before floor).
 * Returns the added index or -1. */
static int find_added(const lmf_tokenizer *t, int normalized, const uint8_t *s, size_t n,
                      size_t pos, size_t floor, size_t *start, size_t *end) {
    for (size_t i = pos; i < n; i++) {
        if (!t->added_first[s[i]]) continue;
        for (int k = 0; k < t->n_added; k++) {
            const lmf_added_token *a = &t->added[k];
            if (a->normalized != normalized || !a->plen || a->plen > n - i ||
                memcmp(s + i, a->pat, a->plen))
                continue;
            size_t b = i, e = i + a->plen, l;
            const int word = LMF_UC_W;
            if (a->single_word && ((b > 0 && (class_before(s, b, &l) & word)) ||
                                   (e < n && (class_at(s, n, e, &l) & word))))
                continue;
            if (a->lstrip)
                while (b > floor && (class_before(s, b, &l) & LMF_UC_WS)) b -= l;
            if (a->rstrip)
                while (e < n && (class_at(s, n, e, &l) & LMF_UC_WS)) e += l;
            *start = b;
            *end = e;
            return k;
        }
    }
    return -1;
}

typedef struct encode_ctx {
    lmf_pieces words, tmp;
    lmf_bpe_scratch scratch;
    lmf_sbuf norm;
} encode_ctx;

/* Pre-tokenizes normalized text and runs BPE on each word. */
static int encode_words(const lmf_tokenizer *t, encode_ctx *c, const char *s, size_t n, int first,
                        lmf_ids *out) {
    int rc;
    if (n == 0) return 0;
    if ((rc = lmf_tok_pretokenize(t, s, n, first, &c->words, &c->tmp))) return rc;
    for (size_t i = 0; i < c->words.n; i++) {
        const char *w = c->words.buf.p + c->words.off[i];
        size_t wn = c->words.len[i], b = 0;
        for (size_t j = 3; t->split_at_marker && j + 3 <= wn; j++) {
            if (memcmp(w + j, MARKER, 3) || !memcmp(w + j - 3, MARKER, 3)) continue;
            if ((rc = lmf_bpe_word(&t->bpe, &c->scratch, w + b, j - b, out))) return rc;
            b = j;
        }
        if ((rc = lmf_bpe_word(&t->bpe, &c->scratch, w + b, wn - b, out))) return rc;
    }
    return 0;
}

/* A raw piece between non-normalized added tokens: normalized, then split on the added tokens
 * marked "normalized" (HF matches those in normalized text), then encoded. */
static int encode_segment(const lmf_tokenizer *t, encode_ctx *c, const char *s, size_t n, int first,
                          lmf_ids *out) {
    int rc, k;
    if (n == 0) return 0;
    c->norm.len = 0;
    if ((rc = lmf_tok_normalize(t, s, n, &c->norm))) return rc;
    const uint8_t *u = (const uint8_t *)c->norm.p;
    size_t len = c->norm.len, done = 0, start, end;
    while ((k = find_added(t, 1, u, len, done, done, &start, &end)) >= 0) {
        if ((rc = encode_words(t, c, c->norm.p + done, start - done, first && done == 0, out)) ||
            (rc = lmf_ids_push(out, t->added[k].id)))
            return rc;
        done = end;
    }
    return encode_words(t, c, c->norm.p + done, len - done, first && done == 0, out);
}

static int encode_body(const lmf_tokenizer *t, encode_ctx *c, const char *text, size_t len,
                       lmf_ids *out) {
    const uint8_t *s = (const uint8_t *)text;
    size_t done = 0, start, end;
    int rc, k;
    while ((k = find_added(t, 0, s, len, done, done, &start, &end)) >= 0) {
        if ((rc = encode_segment(t, c, text + done, start - done, done == 0, out)) ||
            (rc = lmf_ids_push(out, t->added[k].id)))
            return rc;
        done = end;
    }
    return encode_segment(t, c, text + done, len - done, done == 0, out);
}

int lmf_tokenizer_encode(const lmf_tokenizer *t, const char *text, size_t len, int add_special,
                         int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    lmf_ids out = {0};
    encode_ctx c;
    memset(&c, 0, sizeof c);
    int rc = 0;
    if (!lmf_utf8_valid((const uint8_t *)text, len)) {
        rc = lmf_errorf(LMF_EINVAL, "tokenizer: input text is not valid UTF-8");
        goto done;
    }
    if (add_special && t->n_post_single) {
        for (int i = 0; i < t->n_post_single && !rc; i++)
            rc = t->post_single[i] < 0 ? encode_body(t, &c, text, len, &out)
                                       : lmf_ids_push(&out, t->post_single[i]);
    } else {
        rc = encode_body(t, &c, text, len, &out);
    }
    if (!rc && out.n > 0x7fffffff) rc = lmf_errorf(LMF_ERANGE, "tokenizer: too many tokens");
    if (!rc && !out.v && (rc = lmf_ids_push(&out, 0)) == 0) out.n = 0; /* never hand out NULL */
done:
    lmf_pieces_free(&c.words);
    lmf_pieces_free(&c.tmp);
    lmf_bpe_scratch_free(&c.scratch);
    free(c.norm.p);
    if (rc) {
        free(out.v);
        return rc;
    }
    *ids = out.v;
    *n = (int)out.n;
    return 0;
}

int lmf_tokenizer_vocab_size(const lmf_tokenizer *t) {
    return t->vocab_size;
}

int32_t lmf_tokenizer_token_to_id(const lmf_tokenizer *t, const char *token) {
    for (int i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, token)) return t->added[i].id;
    return lmf_bpe_lookup(&t->bpe, token, strlen(token));
}

const char *lmf_tokenizer_id_to_token(const lmf_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->vocab_size) return NULL;
    if (t->added_of_id[id] >= 0) return t->added[t->added_of_id[id]].content;
    return id < t->bpe.n_ids ? t->bpe.tok[id] : NULL;
}

int32_t lmf_tokenizer_bos(const lmf_tokenizer *t) {
    return t->bos;
}
int32_t lmf_tokenizer_eos(const lmf_tokenizer *t) {
    return t->eos;
}
int32_t lmf_tokenizer_pad(const lmf_tokenizer *t) {
    return t->pad;
}

int lmf_tokenizer_is_special(const lmf_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->vocab_size && t->added_of_id[id] >= 0 &&
           t->added[t->added_of_id[id]].special;
}

const char *lmf_tokenizer_chat_template(const lmf_tokenizer *t) {
    return t->chat_template;
}

int lmf_tokenizer_copy_files(const char *src_dir, const char *dst_dir) {
    static const char *files[] = {"tokenizer.json",
                                  "tokenizer_config.json",
                                  "special_tokens_map.json",
                                  "tokenizer.model",
                                  "vocab.json",
                                  "merges.txt",
                                  "chat_template.jinja",
                                  "generation_config.json"};
    int rc = 0;
    for (size_t i = 0; !rc && i < sizeof files / sizeof *files; i++) {
        char *src = lmf_path_join(src_dir, files[i]), *dst = lmf_path_join(dst_dir, files[i]);
        if (!src || !dst)
            rc = lmf_errorf(LMF_ENOMEM, "out of memory");
        else if (lmf_path_exists(src))
            rc = lmf_file_copy(src, dst);
        free(src), free(dst);
    }
    return rc;
}
