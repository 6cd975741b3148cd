/* Reads the normalizer, pre_tokenizer, post_processor and decoder objects of tokenizer.json
 * into the tokenizer's step lists. Anything outside the supported set is refused with an error
 * naming the JSON path, so an unknown pipeline never encodes silently wrong. */
#include "text/tokenizer_internal.h"

#include "lmforge/core.h"
#include "lmforge/json.h"

#include <stdlib.h>
#include <string.h>

static int dup_str(const char *s, char **out, size_t *len, const char *file) {
    *out = lmf_strdup(s);
    if (!*out) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
    *len = strlen(s);
    return 0;
}

/* {"type": ..., "pattern": {"String": s}} patterns only (Regex patterns are refused). */
static int string_pattern(const cJSON *o, const char *path, const char *file, const char **out) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const cJSON *str = pat ? cJSON_GetObjectItemCaseSensitive(pat, "String") : NULL;
    if (!cJSON_IsString(str))
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: %s.pattern: only {\"String\": ...} is supported",
                          file, path);
    *out = str->valuestring;
    return 0;
}

static int req_str(const cJSON *o, const char *key, const char *path, const char *file,
                   const char **out) {
    int rc = lmf_json_get_str(o, key, file, out);
    if (rc < 0) return lmf_error_prefix(rc, "%s", path);
    if (rc == 0) return lmf_errorf(LMF_EFORMAT, "%s: %s.%s: missing", file, path, key);
    return 0;
}

/* Calls fn on each element of a "Sequence" (under key) or on o itself. */
typedef int (*step_fn)(struct lmf_tokenizer *t, const cJSON *o, const char *path, const char *file);
static int each_step(struct lmf_tokenizer *t, const cJSON *o, const char *seq_key, const char *path,
                     const char *file, step_fn fn) {
    const char *type;
    int rc = req_str(o, "type", path, file, &type);
    if (rc) return rc;
    if (strcmp(type, "Sequence")) return fn(t, o, path, file);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, seq_key);
    if (!cJSON_IsArray(arr))
        return lmf_errorf(LMF_EFORMAT, "%s: %s.%s: expected an array", file, path, seq_key);
    int i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char sub[256];
        snprintf(sub, sizeof sub, "%s.%s[%d]", path, seq_key, i);
        if (!cJSON_IsObject(e))
            return lmf_errorf(LMF_EFORMAT, "%s: %s: expected an object", file, sub);
        if ((rc = each_step(t, e, seq_key, sub, file, fn))) return rc;
    }
    return 0;
}

static int norm_step(struct lmf_tokenizer *t, const cJSON *o, const char *path, const char *file) {
    const char *type, *a, *b;
    int rc = req_str(o, "type", path, file, &type);
    if (rc) return rc;
    lmf_norm_step *st = realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *st);
    if (!st) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
    t->norm = st;
    st = &t->norm[t->n_norm];
    memset(st, 0, sizeof *st);
    if (!strcmp(type, "Prepend")) {
        if ((rc = req_str(o, "prepend", path, file, &a))) return rc;
        st->kind = NORM_PREPEND;
        t->n_norm++;
        return dup_str(a, &st->a, &st->alen, file);
    }
    if (!strcmp(type, "Replace")) {
        if ((rc = string_pattern(o, path, file, &a)) ||
            (rc = req_str(o, "content", path, file, &b)))
            return rc;
        st->kind = NORM_REPLACE;
        t->n_norm++;
        if ((rc = dup_str(a, &st->a, &st->alen, file))) return rc;
        return dup_str(b, &st->b, &st->blen, file);
    }
    if (!strcmp(type, "NFC")) {
        st->kind = NORM_NFC;
        t->n_norm++;
        return 0;
    }
    return lmf_errorf(LMF_EUNSUPPORTED, "%s: %s: normalizer type \"%s\" is not supported", file,
                      path, type);
}

static int regex_of(const cJSON *o, const char *path, const char *file, int *rx) {
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const cJSON *re = pat ? cJSON_GetObjectItemCaseSensitive(pat, "Regex") : NULL;
    if (!cJSON_IsString(re))
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: %s.pattern: only {\"Regex\": ...} is supported",
                          file, path);
    if (!(*rx = lmf_regex_lookup(re->valuestring)))
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: %s.pattern: regex \"%s\" is not supported", file,
                          path, re->valuestring);
    return 0;
}

static int get_flag(const cJSON *o, const char *key, const char *path, const char *file, int dflt,
                    int *out) {
    *out = dflt;
    int rc = lmf_json_get_bool(o, key, file, out);
    return rc < 0 ? lmf_error_prefix(rc, "%s", path) : 0;
}

static int prepend_scheme(const cJSON *o, const char *path, const char *file, int *out) {
    const char *s = NULL;
    int rc = lmf_json_get_str(o, "prepend_scheme", file, &s);
    if (rc < 0) return lmf_error_prefix(rc, "%s", path);
    int add = 1;
    if (!s && (rc = get_flag(o, "add_prefix_space", path, file, 1, &add))) return rc;
    if (!s) s = add ? "always" : "never";
    if (!strcmp(s, "always"))
        *out = PREPEND_ALWAYS;
    else if (!strcmp(s, "first"))
        *out = PREPEND_FIRST;
    else if (!strcmp(s, "never"))
        *out = PREPEND_NEVER;
    else
        return lmf_errorf(LMF_EFORMAT, "%s: %s.prepend_scheme: unknown value \"%s\"", file, path,
                          s);
    return 0;
}

static int pretok_step(struct lmf_tokenizer *t, const cJSON *o, const char *path,
                       const char *file) {
    const char *type, *s;
    int rc = req_str(o, "type", path, file, &type);
    if (rc) return rc;
    lmf_pretok_step *st = realloc(t->pretok, (size_t)(t->n_pretok + 1) * sizeof *st);
    if (!st) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
    t->pretok = st;
    st = &t->pretok[t->n_pretok];
    memset(st, 0, sizeof *st);
    if (!strcmp(type, "ByteLevel")) {
        int use_regex;
        st->kind = PT_BYTELEVEL;
        if ((rc = get_flag(o, "add_prefix_space", path, file, 1, &st->add_prefix_space)) ||
            (rc = get_flag(o, "use_regex", path, file, 1, &use_regex)))
            return rc;
        st->regex = use_regex ? RX_GPT2 : 0;
    } else if (!strcmp(type, "Split")) {
        int invert = 0;
        st->kind = PT_SPLIT;
        if ((rc = regex_of(o, path, file, &st->regex)) ||
            (rc = req_str(o, "behavior", path, file, &s)) ||
            (rc = get_flag(o, "invert", path, file, 0, &invert)))
            return rc;
        if (strcmp(s, "Isolated") || invert)
            return lmf_errorf(LMF_EUNSUPPORTED,
                              "%s: %s: Split behavior \"%s\"%s is not supported (only Isolated)",
                              file, path, s, invert ? " with invert" : "");
    } else if (!strcmp(type, "Metaspace")) {
        st->kind = PT_METASPACE;
        if ((rc = req_str(o, "replacement", path, file, &s)) ||
            (rc = prepend_scheme(o, path, file, &st->prepend_scheme)) ||
            (rc = get_flag(o, "split", path, file, 1, &st->split)))
            return rc;
        if (strlen(s) >= sizeof st->repl || !s[0])
            return lmf_errorf(LMF_EFORMAT, "%s: %s.replacement: expected one character", file,
                              path);
        st->repl_len = strlen(s);
        memcpy(st->repl, s, st->repl_len);
    } else {
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: %s: pre-tokenizer type \"%s\" is not supported",
                          file, path, type);
    }
    t->n_pretok++;
    return 0;
}

static int dec_step(struct lmf_tokenizer *t, const cJSON *o, const char *path, const char *file) {
    const char *type, *a, *b;
    int rc = req_str(o, "type", path, file, &type);
    if (rc) return rc;
    lmf_dec_step *st = realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *st);
    if (!st) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
    t->dec = st;
    st = &t->dec[t->n_dec];
    memset(st, 0, sizeof *st);
    if (!strcmp(type, "ByteLevel")) {
        st->kind = DEC_BYTELEVEL;
    } else if (!strcmp(type, "ByteFallback")) {
        st->kind = DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        st->kind = DEC_FUSE;
    } else if (!strcmp(type, "Replace")) {
        if ((rc = string_pattern(o, path, file, &a)) ||
            (rc = req_str(o, "content", path, file, &b)))
            return rc;
        st->kind = DEC_REPLACE;
        if ((rc = dup_str(a, &st->a, &st->alen, file)) ||
            (rc = dup_str(b, &st->b, &st->blen, file))) {
            free(st->a);
            return rc;
        }
    } else if (!strcmp(type, "Strip")) {
        int64_t start = 0, stop = 0;
        if ((rc = req_str(o, "content", path, file, &a))) return rc;
        if ((rc = lmf_json_get_int(o, "start", file, &start)) < 0 ||
            (rc = lmf_json_get_int(o, "stop", file, &stop)) < 0)
            return lmf_error_prefix(rc, "%s", path);
        if (start < 0 || stop < 0 || start > 1000000 || stop > 1000000)
            return lmf_errorf(LMF_EFORMAT, "%s: %s: start/stop out of range", file, path);
        st->kind = DEC_STRIP;
        st->start = (int)start;
        st->stop = (int)stop;
        if ((rc = dup_str(a, &st->a, &st->alen, file))) return rc;
    } else if (!strcmp(type, "Metaspace")) {
        if ((rc = req_str(o, "replacement", path, file, &a)) ||
            (rc = prepend_scheme(o, path, file, &st->prepend_scheme)))
            return rc;
        st->kind = DEC_METASPACE;
        if ((rc = dup_str(a, &st->a, &st->alen, file))) return rc;
    } else {
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: %s: decoder type \"%s\" is not supported", file,
                          path, type);
    }
    t->n_dec++;
    return 0;
}

static int post_step(struct lmf_tokenizer *t, const cJSON *o, const char *path, const char *file) {
    const char *type;
    int rc = req_str(o, "type", path, file, &type);
    if (rc) return rc;
    if (!strcmp(type, "ByteLevel")) return 0; /* only changes offsets */
    if (strcmp(type, "TemplateProcessing"))
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: %s: post-processor type \"%s\" is not supported",
                          file, path, type);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
    if (!cJSON_IsArray(single))
        return lmf_errorf(LMF_EFORMAT, "%s: %s.single: expected an array", file, path);
    free(t->post_single);
    t->post_single = NULL;
    t->n_post_single = 0;
    int i = 0;
    for (const cJSON *e = single->child; e; e = e->next, i++) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "SpecialToken");
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(e, "Sequence");
        const cJSON *ids = NULL;
        if (sp) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
            const cJSON *def = cJSON_IsString(name) && specials
                                   ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring)
                                   : NULL;
            ids = def ? cJSON_GetObjectItemCaseSensitive(def, "ids") : NULL;
            if (!cJSON_IsArray(ids))
                return lmf_errorf(LMF_EFORMAT,
                                  "%s: %s.single[%d]: special token not in special_tokens", file,
                                  path, i);
        } else if (!sq) {
            return lmf_errorf(LMF_EFORMAT, "%s: %s.single[%d]: expected SpecialToken or Sequence",
                              file, path, i);
        }
        int add = ids ? cJSON_GetArraySize(ids) : 1;
        int32_t *v = realloc(t->post_single, (size_t)(t->n_post_single + add) * sizeof *v);
        if (!v) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
        t->post_single = v;
        if (!ids) {
            v[t->n_post_single++] = -1;
            continue;
        }
        for (const cJSON *x = ids->child; x; x = x->next) {
            if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 2147483647.0)
                return lmf_errorf(LMF_EFORMAT, "%s: %s.single[%d]: bad id", file, path, i);
            v[t->n_post_single++] = (int32_t)x->valuedouble;
        }
    }
    return 0;
}

int lmf_tok_load_pipeline(struct lmf_tokenizer *t, const cJSON *root, const char *file) {
    static const struct {
        const char *key, *seq;
        step_fn fn;
    } parts[] = {{"normalizer", "normalizers", norm_step},
                 {"pre_tokenizer", "pretokenizers", pretok_step},
                 {"post_processor", "processors", post_step},
                 {"decoder", "decoders", dec_step}};
    for (int i = 0; i < 4; i++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, parts[i].key);
        if (!o || cJSON_IsNull(o)) continue;
        if (!cJSON_IsObject(o))
            return lmf_errorf(LMF_EFORMAT, "%s: %s: expected an object or null", file,
                              parts[i].key);
        if (i == 3) t->has_decoder = 1;
        int rc = each_step(t, o, parts[i].seq, parts[i].key, file, parts[i].fn);
        if (rc) return rc;
    }
    return 0;
}

void lmf_tok_free_pipeline(struct lmf_tokenizer *t) {
    for (int i = 0; i < t->n_norm; i++) free(t->norm[i].a), free(t->norm[i].b);
    for (int i = 0; i < t->n_dec; i++) free(t->dec[i].a), free(t->dec[i].b);
    free(t->norm), free(t->pretok), free(t->dec), free(t->post_single);
    t->norm = NULL, t->pretok = NULL, t->dec = NULL, t->post_single = NULL;
    t->n_norm = t->n_pretok = t->n_dec = t->n_post_single = 0;
}
