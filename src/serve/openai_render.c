/* OpenAI response and chunk JSON (see openai_render.h). */
#include "openai_render.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *token_text(const lmf_tokenizer *tok, int32_t id) {
    char *s = NULL;
    size_t len;
    if (lmf_tokenizer_decode(tok, &id, 1, 0, &s, &len)) return NULL;
    return s;
}

static cJSON *bytes_array(const char *s) {
    cJSON *a = cJSON_CreateArray();
    for (const unsigned char *p = (const unsigned char *)s; a && *p; p++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(*p));
    return a;
}

static cJSON *chat_entry(const lmf_tokenizer *tok, int32_t id, float lp) {
    cJSON *o = cJSON_CreateObject();
    char *t = token_text(tok, id);
    cJSON_AddStringToObject(o, "token", t ? t : "");
    cJSON_AddNumberToObject(o, "logprob", lp);
    cJSON_AddItemToObject(o, "bytes", bytes_array(t ? t : ""));
    free(t);
    return o;
}

cJSON *lmf_oai_logprobs_json(lmf_oai_kind kind, const lmf_tokenizer *tok,
                             const lmf_sample_result *toks, int n, int top, size_t *offset) {
    cJSON *root = cJSON_CreateObject();
    if (kind == LMF_OAI_CHAT) {
        cJSON *content = cJSON_AddArrayToObject(root, "content");
        for (int i = 0; content && i < n; i++) {
            cJSON *e = chat_entry(tok, toks[i].token, toks[i].logprob);
            cJSON *alts = cJSON_AddArrayToObject(e, "top_logprobs");
            for (int k = 0; alts && k < toks[i].n_top && k < top; k++)
                cJSON_AddItemToArray(
                    alts, chat_entry(tok, toks[i].top_tokens[k], toks[i].top_logprobs[k]));
            cJSON_AddItemToArray(content, e);
        }
        return root;
    }
    cJSON *tokens = cJSON_AddArrayToObject(root, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(root, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(root, "top_logprobs");
    cJSON *offs = cJSON_AddArrayToObject(root, "text_offset");
    for (int i = 0; offs && i < n; i++) {
        char *t = token_text(tok, toks[i].token);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(t ? t : ""));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(toks[i].logprob));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)*offset));
        *offset += t ? strlen(t) : 0;
        free(t);
        cJSON *alt = cJSON_CreateObject();
        for (int k = 0; alt && k < toks[i].n_top && k < top; k++) {
            char *a = token_text(tok, toks[i].top_tokens[k]);
            if (a && !cJSON_GetObjectItemCaseSensitive(alt, a))
                cJSON_AddNumberToObject(alt, a, toks[i].top_logprobs[k]);
            free(a);
        }
        cJSON_AddItemToArray(tops, alt);
    }
    return root;
}

static const char *object_name(lmf_oai_kind kind, int chunk) {
    if (kind == LMF_OAI_COMPLETION) return "text_completion";
    return chunk ? "chat.completion.chunk" : "chat.completion";
}

static cJSON *envelope(lmf_oai_kind kind, int chunk, const char *id, long long created,
                       const char *model) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", object_name(kind, chunk));
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "system_fingerprint", "lmforge");
    return o;
}

static cJSON *usage_json(const lmf_oai_usage *u) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", u->prompt_tokens + u->completion_tokens);
    return o;
}

static void add_str_or_null(cJSON *o, const char *key, const char *s) {
    if (s)
        cJSON_AddStringToObject(o, key, s);
    else
        cJSON_AddNullToObject(o, key);
}

static cJSON *choice_json(lmf_oai_kind kind, int chunk, lmf_oai_choice_out *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", c->index);
    if (kind == LMF_OAI_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(o, chunk ? "delta" : "message");
        if (!chunk || c->first) cJSON_AddStringToObject(m, "role", "assistant");
        if (!chunk)
            add_str_or_null(m, "content", c->text ? c->text : "");
        else if (c->text)
            cJSON_AddStringToObject(m, "content", c->text);
    } else {
        cJSON_AddStringToObject(o, "text", c->text ? c->text : "");
    }
    if (c->logprobs)
        cJSON_AddItemToObject(o, "logprobs", c->logprobs);
    else
        cJSON_AddNullToObject(o, "logprobs");
    c->logprobs = NULL;
    add_str_or_null(o, "finish_reason", c->finish_reason);
    return o;
}

static char *print_and_free(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *lmf_oai_render_response(lmf_oai_kind kind, const char *id, long long created,
                              const char *model, lmf_oai_choice_out *c, int n,
                              const lmf_oai_usage *u) {
    cJSON *o = envelope(kind, 0, id, created, model);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(choices, choice_json(kind, 0, &c[i]));
    cJSON_AddItemToObject(o, "usage", usage_json(u));
    return print_and_free(o);
}

char *lmf_oai_render_chunk(lmf_oai_kind kind, const char *id, long long created, const char *model,
                           lmf_oai_choice_out *c, int usage_field, const lmf_oai_usage *u) {
    cJSON *o = envelope(kind, 1, id, created, model);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    if (c) {
        cJSON_AddItemToArray(choices, choice_json(kind, 1, c));
        if (usage_field) cJSON_AddNullToObject(o, "usage");
    } else {
        cJSON_AddItemToObject(o, "usage", usage_json(u));
    }
    char *json = print_and_free(o);
    if (!json) return NULL;
    size_t n = strlen(json);
    char *ev = malloc(n + 9);
    if (ev) {
        memcpy(ev, "data: ", 6);
        memcpy(ev + 6, json, n);
        memcpy(ev + 6 + n, "\n\n", 3);
    }
    free(json);
    return ev;
}

char *lmf_oai_render_models(const char *const *names, int n, long long created) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    for (int i = 0; i < n; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", names[i]);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", (double)created);
        cJSON_AddStringToObject(m, "owned_by", "lmforge");
        cJSON_AddItemToArray(data, m);
    }
    return print_and_free(o);
}
