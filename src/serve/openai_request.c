/* Parsing and validation of OpenAI request bodies (see openai_request.h). Unknown fields are
 * ignored, as OpenAI's clients send extras (user, metadata); known fields with the wrong type or
 * range are refused with a message and param naming them. */
#include "openai_request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/error.h"

#define INVALID "invalid_request_error"

int lmf_oai_error_set(lmf_oai_error *e, int status, const char *type, const char *code,
                      const char *param, const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return LMF_EINVAL;
}

char *lmf_oai_error_json(const lmf_oai_error *e) {
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    if (!err) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(err, "message", e->message);
    cJSON_AddStringToObject(err, "type", e->type ? e->type : INVALID);
    if (e->param[0])
        cJSON_AddStringToObject(err, "param", e->param);
    else
        cJSON_AddNullToObject(err, "param");
    if (e->code)
        cJSON_AddStringToObject(err, "code", e->code);
    else
        cJSON_AddNullToObject(err, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static int bad(lmf_oai_error *e, const char *param, const char *fmt, const char *detail) {
    return lmf_oai_error_set(e, 400, INVALID, NULL, param, fmt, param, detail);
}

/* A present, non-null field. */
static const cJSON *field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int get_number(const cJSON *o, const char *key, double lo, double hi, float *out,
                      lmf_oai_error *e) {
    const cJSON *v = field(o, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return bad(e, key, "'%s': expected a number%s", "");
    if (v->valuedouble < lo || v->valuedouble > hi)
        return lmf_oai_error_set(e, 400, INVALID, NULL, key, "'%s': %g is not in [%g, %g]", key,
                                 v->valuedouble, lo, hi);
    *out = (float)v->valuedouble;
    return 0;
}

static int is_integer(const cJSON *v) {
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
           v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 9.007e15;
}

static int get_int(const cJSON *o, const char *key, long long lo, long long hi, int *present,
                   long long *out, lmf_oai_error *e) {
    const cJSON *v = field(o, key);
    if (present) *present = v != NULL;
    if (!v) return 0;
    if (!is_integer(v)) return bad(e, key, "'%s': expected an integer%s", "");
    long long x = (long long)v->valuedouble;
    if (x < lo || x > hi)
        return lmf_oai_error_set(e, 400, INVALID, NULL, key, "'%s': %lld is not in [%lld, %lld]",
                                 key, x, lo, hi);
    *out = x;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, int *out, lmf_oai_error *e) {
    const cJSON *v = field(o, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return bad(e, key, "'%s': expected true or false%s", "");
    *out = cJSON_IsTrue(v);
    return 0;
}

static char *dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int oom(lmf_oai_error *e) {
    return lmf_oai_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* A message's content: a string, or an array of {"type": "text", "text": ...} parts joined. */
static int message_content(const cJSON *c, int i, char **out, lmf_oai_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (cJSON_IsString(c)) return (*out = dup(c->valuestring)) ? 0 : oom(e);
    if (!cJSON_IsArray(c))
        return bad(e, param, "'%s': expected a string or an array of text parts%s", "");
    size_t len = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") ||
            !cJSON_IsString(text))
            return bad(e, param, "'%s': only {\"type\": \"text\", \"text\": ...} parts are%s",
                       " supported");
        len += strlen(text->valuestring);
    }
    char *s = malloc(len + 1);
    if (!s) return oom(e);
    s[0] = 0;
    len = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(s + len, t, n + 1);
        len += n;
    }
    *out = s;
    return 0;
}

static int parse_messages(const cJSON *arr, lmf_message **msgs, int *n_msgs, lmf_oai_error *e) {
    if (!arr) return bad(e, "messages", "'%s' is required%s", "");
    if (!cJSON_IsArray(arr)) return bad(e, "messages", "'%s': expected an array%s", "");
    int n = cJSON_GetArraySize(arr);
    if (n == 0) return bad(e, "messages", "'%s': must not be empty%s", "");
    lmf_message *m = calloc((size_t)n, sizeof *m);
    if (!m) return oom(e);
    *msgs = m, *n_msgs = 0;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(it)) return bad(e, param, "'%s': expected an object%s", "");
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsString(role)) return bad(e, param, "'%s': expected a string%s", "");
        const char *r = role->valuestring;
        if (!strcmp(r, "developer")) r = "system"; /* OpenAI's newer name for system */
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return lmf_oai_error_set(e, 400, INVALID, NULL, param,
                                     "'%s': \"%.40s\" is not one of system, developer, user, "
                                     "assistant",
                                     param, role->valuestring);
        const cJSON *content = field(it, "content");
        char *text = NULL;
        if (!content && !strcmp(r, "assistant")) {
            text = dup("");
        } else if (!content) {
            snprintf(param, sizeof param, "messages[%d].content", i);
            return bad(e, param, "'%s' is required%s", "");
        } else if (message_content(content, i, &text, e)) {
            return LMF_EINVAL;
        }
        m[i].content = text;
        m[i].role = dup(r);
        (*n_msgs)++;
        if (!m[i].content || !m[i].role) return oom(e);
        i++;
    }
    return 0;
}

static int parse_token_array(const cJSON *arr, const char *key, int32_t **ids, int *n,
                             lmf_oai_error *e) {
    int len = cJSON_GetArraySize(arr);
    *ids = malloc(sizeof **ids * (size_t)(len ? len : 1));
    if (!*ids) return oom(e);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!is_integer(it) || it->valuedouble < 0 || it->valuedouble > INT32_MAX) {
            char param[64];
            snprintf(param, sizeof param, "%s[%d]", key, i);
            return bad(e, param, "'%s': expected a token id (a non-negative integer)%s", "");
        }
        (*ids)[i++] = (int32_t)it->valuedouble;
    }
    *n = i;
    return 0;
}

static int parse_prompt(const cJSON *p, lmf_oai_request *r, lmf_oai_error *e) {
    if (!p) return bad(e, "prompt", "'%s' is required%s", "");
    if (cJSON_IsString(p)) return (r->prompt = dup(p->valuestring)) ? 0 : oom(e);
    if (cJSON_IsArray(p)) {
        const cJSON *first = p->child;
        if (first && cJSON_IsString(first)) { /* a batch of prompts: one is allowed */
            if (cJSON_GetArraySize(p) != 1)
                return bad(e, "prompt", "'%s': a batch of several prompts is not supported%s",
                           "; send one request per prompt");
            return (r->prompt = dup(first->valuestring)) ? 0 : oom(e);
        }
        if (first && cJSON_IsArray(first)) {
            if (cJSON_GetArraySize(p) != 1)
                return bad(e, "prompt", "'%s': a batch of several prompts is not supported%s",
                           "; send one request per prompt");
            p = first;
        }
        if (cJSON_GetArraySize(p) == 0) return bad(e, "prompt", "'%s': must not be empty%s", "");
        return parse_token_array(p, "prompt", &r->prompt_ids, &r->n_prompt_ids, e);
    }
    return bad(e, "prompt", "'%s': expected a string or an array of token ids%s", "");
}

static int parse_stop(const cJSON *s, lmf_oai_request *r, lmf_oai_error *e) {
    if (!s) return 0;
    if (cJSON_IsString(s)) {
        if (!s->valuestring[0]) return 0;
        return (r->stop[r->n_stop++] = dup(s->valuestring)) ? 0 : oom(e);
    }
    if (!cJSON_IsArray(s)) return bad(e, "stop", "'%s': expected a string or an array%s", "");
    if (cJSON_GetArraySize(s) > LMF_OAI_MAX_STOP)
        return lmf_oai_error_set(e, 400, INVALID, NULL, "stop", "'stop': at most %d strings",
                                 LMF_OAI_MAX_STOP);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, s) {
        char param[32];
        snprintf(param, sizeof param, "stop[%d]", i++);
        if (!cJSON_IsString(it)) return bad(e, param, "'%s': expected a string%s", "");
        if (!it->valuestring[0]) continue;
        if (!(r->stop[r->n_stop++] = dup(it->valuestring))) return oom(e);
    }
    return 0;
}

static int parse_sampling(const cJSON *o, lmf_oai_request *r, lmf_oai_error *e) {
    lmf_sampling_params *sp = &r->sampling;
    long long v;
    int has;
    if (get_number(o, "temperature", 0, 2, &sp->temperature, e) ||
        get_number(o, "top_p", 0, 1, &sp->top_p, e) ||
        get_number(o, "min_p", 0, 1, &sp->min_p, e) ||
        get_number(o, "repetition_penalty", 0.01, 10, &sp->repetition_penalty, e) ||
        get_number(o, "presence_penalty", -2, 2, &sp->presence_penalty, e) ||
        get_number(o, "frequency_penalty", -2, 2, &sp->frequency_penalty, e))
        return LMF_EINVAL;
    if (field(o, "top_p") && sp->top_p <= 0)
        return bad(e, "top_p", "'%s': must be greater than 0%s", "");
    if (field(o, "min_p") && sp->min_p >= 1)
        return bad(e, "min_p", "'%s': must be less than 1%s", "");
    if (get_int(o, "top_k", -1, 1 << 30, &has, &v, e)) return LMF_EINVAL;
    if (has) sp->top_k = v < 0 ? 0 : (int)v; /* vLLM's -1 means off, as 0 does */
    if (get_int(o, "seed", INT64_MIN / 2, INT64_MAX / 2, &r->has_seed, &v, e)) return LMF_EINVAL;
    if (r->has_seed) r->seed = (uint64_t)v;
    return 0;
}

static int parse_limits(const cJSON *o, lmf_oai_request *r, lmf_oai_error *e) {
    long long v;
    int has;
    if (get_int(o, "max_tokens", 1, 1 << 30, &has, &v, e)) return LMF_EINVAL;
    if (has) r->max_tokens = (int)v;
    if (r->kind == LMF_OAI_CHAT) {
        if (get_int(o, "max_completion_tokens", 1, 1 << 30, &has, &v, e)) return LMF_EINVAL;
        if (has) r->max_tokens = (int)v;
    }
    if (get_int(o, "n", 1, LMF_OAI_MAX_N, &has, &v, e)) return LMF_EINVAL;
    r->n = has ? (int)v : 1;
    if (r->kind == LMF_OAI_CHAT) {
        if (get_bool(o, "logprobs", &r->logprobs, e)) return LMF_EINVAL;
        if (get_int(o, "top_logprobs", 0, LMF_MAX_TOP_LOGPROBS, &has, &v, e)) return LMF_EINVAL;
        if (has && !r->logprobs) return bad(e, "top_logprobs", "'%s' needs 'logprobs': true%s", "");
        r->top_logprobs = has ? (int)v : 0;
    } else {
        if (get_int(o, "logprobs", 0, 5, &has, &v, e)) return LMF_EINVAL;
        r->logprobs = has;
        r->top_logprobs = has ? (int)v : 0;
        int echo = 0;
        if (get_bool(o, "echo", &echo, e)) return LMF_EINVAL;
        if (echo) return bad(e, "echo", "'%s': true is not supported%s", "");
        const cJSON *suffix = field(o, "suffix");
        if (suffix && !(cJSON_IsString(suffix) && !suffix->valuestring[0]))
            return bad(e, "suffix", "'%s' is not supported%s", "");
        if (get_int(o, "best_of", 1, 1, NULL, &v, e)) return LMF_EINVAL;
    }
    r->sampling.top_logprobs = r->top_logprobs;
    if (get_bool(o, "ignore_eos", &r->ignore_eos, e)) return LMF_EINVAL;
    return 0;
}

static int parse_stream(const cJSON *o, lmf_oai_request *r, lmf_oai_error *e) {
    if (get_bool(o, "stream", &r->stream, e)) return LMF_EINVAL;
    const cJSON *so = field(o, "stream_options");
    if (!so) return 0;
    if (!cJSON_IsObject(so)) return bad(e, "stream_options", "'%s': expected an object%s", "");
    if (!r->stream)
        return bad(e, "stream_options", "'%s' is only allowed when 'stream' is true%s", "");
    const cJSON *iu = field(so, "include_usage");
    if (iu && !cJSON_IsBool(iu))
        return bad(e, "stream_options.include_usage", "'%s': expected true or false%s", "");
    r->include_usage = iu && cJSON_IsTrue(iu);
    return 0;
}

static int parse_body(const char *body, size_t len, cJSON **root, lmf_oai_error *e) {
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!*root) {
        size_t off = end && end >= body ? (size_t)(end - body) : 0;
        return lmf_oai_error_set(e, 400, INVALID, NULL, NULL,
                                 "the request body is not valid JSON (error near byte %zu)", off);
    }
    if (!cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        return lmf_oai_error_set(e, 400, INVALID, NULL, NULL,
                                 "the request body must be a JSON object");
    }
    return 0;
}

int lmf_oai_parse(const char *body, size_t len, lmf_oai_kind kind, const lmf_oai_defaults *d,
                  lmf_oai_request *out, lmf_oai_error *e) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->sampling = d->sampling;
    out->n = 1;
    cJSON *root;
    if (parse_body(body, len, &root, e)) return LMF_EINVAL;
    int rc = 0;
    const cJSON *model = field(root, "model");
    if (model && !cJSON_IsString(model))
        rc = bad(e, "model", "'%s': expected a string%s", "");
    else if (model && !(out->model = dup(model->valuestring)))
        rc = oom(e);
    if (!rc && kind == LMF_OAI_CHAT)
        rc = parse_messages(field(root, "messages"), &out->messages, &out->n_messages, e);
    if (!rc && kind == LMF_OAI_COMPLETION) rc = parse_prompt(field(root, "prompt"), out, e);
    if (!rc) rc = parse_sampling(root, out, e);
    if (!rc) rc = parse_limits(root, out, e);
    if (!rc) rc = parse_stop(field(root, "stop"), out, e);
    if (!rc) rc = parse_stream(root, out, e);
    cJSON_Delete(root);
    if (rc) lmf_oai_request_free(out);
    return rc;
}

static void messages_free(lmf_message *m, int n) {
    for (int i = 0; i < n; i++) free((char *)m[i].role), free((char *)m[i].content);
    free(m);
}

void lmf_oai_request_free(lmf_oai_request *r) {
    free(r->model);
    messages_free(r->messages, r->n_messages);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

int lmf_oai_parse_tokenize(const char *body, size_t len, lmf_oai_tokenize *out, lmf_oai_error *e) {
    memset(out, 0, sizeof *out);
    out->add_special = 1;
    cJSON *root;
    if (parse_body(body, len, &root, e)) return LMF_EINVAL;
    int rc = get_bool(root, "add_special_tokens", &out->add_special, e);
    const cJSON *p = field(root, "prompt"), *m = field(root, "messages");
    if (!rc && p && m)
        rc = bad(e, "prompt", "give either '%s' or 'messages'%s", "");
    else if (!rc && p && !cJSON_IsString(p))
        rc = bad(e, "prompt", "'%s': expected a string%s", "");
    else if (!rc && p && !(out->prompt = dup(p->valuestring)))
        rc = oom(e);
    else if (!rc && !p)
        rc = m ? parse_messages(m, &out->messages, &out->n_messages, e)
               : bad(e, "prompt", "'%s' (or 'messages') is required%s", "");
    cJSON_Delete(root);
    if (rc) lmf_oai_tokenize_free(out);
    return rc;
}

void lmf_oai_tokenize_free(lmf_oai_tokenize *t) {
    free(t->prompt);
    messages_free(t->messages, t->n_messages);
    memset(t, 0, sizeof *t);
}

int lmf_oai_parse_detokenize(const char *body, size_t len, int32_t **ids, int *n,
                             lmf_oai_error *e) {
    *ids = NULL, *n = 0;
    cJSON *root;
    if (parse_body(body, len, &root, e)) return LMF_EINVAL;
    const cJSON *t = field(root, "tokens");
    int rc = !t                  ? bad(e, "tokens", "'%s' is required%s", "")
             : !cJSON_IsArray(t) ? bad(e, "tokens", "'%s': expected an array of token ids%s", "")
                                 : parse_token_array(t, "tokens", ids, n, e);
    cJSON_Delete(root);
    if (rc) free(*ids), *ids = NULL, *n = 0;
    return rc;
}
