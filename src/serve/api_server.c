/* The server: routing, authentication, the small endpoints (/health, /metrics, /v1/models,
 * /tokenize, /detokenize), the engine thread, start-up and a draining shutdown. The generating
 * endpoints are in api_generate.c. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api_internal.h"
#include "lmforge/core.h"
#include "openai_render.h"

#define INVALID "invalid_request_error"

void lmf_server_config_defaults(lmf_server_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8000;
    c->model_name = "gpt-3.5-turbo"; /* LLaMA-Factory's API_MODEL_NAME default */
    c->max_body_bytes = 1 << 20;
    c->max_connections = 256;
    c->default_max_tokens = 1024;
    lmf_sampling_defaults(&c->sampling);
    c->enable_thinking = 1;
}

void lmf_api_json_response(int status, char *json, lmf_http_response *res) {
    res->status = json ? status : 500;
    res->content_type = "application/json";
    res->body = json;
    res->body_len = json ? strlen(json) : 0;
}

void lmf_api_error_response(const lmf_oai_error *e, lmf_http_response *res) {
    lmf_api_json_response(e->status, lmf_oai_error_json(e), res);
}

static void error_reply(lmf_http_response *res, int status, const char *type, const char *code,
                        const char *msg) {
    lmf_oai_error e;
    lmf_oai_error_set(&e, status, type, code, NULL, "%s", msg);
    lmf_api_error_response(&e, res);
}

static char *print_json(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void tokenize(lmf_server *s, const lmf_http_request *req, lmf_http_response *res) {
    lmf_oai_tokenize t;
    lmf_oai_error e;
    int32_t *ids = NULL;
    int n = 0;
    if (lmf_oai_parse_tokenize(req->body, req->body_len, &t, &e)) {
        lmf_api_error_response(&e, res);
        return;
    }
    int rc = t.prompt
                 ? lmf_tokenizer_encode(s->tok, t.prompt, strlen(t.prompt), t.add_special, &ids, &n)
                 : lmf_api_chat_prompt(s, t.messages, t.n_messages, &ids, &n, &e);
    if (rc && t.prompt)
        lmf_oai_error_set(&e, 400, INVALID, NULL, "prompt", "'prompt': %s", lmf_last_error());
    lmf_oai_tokenize_free(&t);
    if (rc) {
        lmf_api_error_response(&e, res);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", n);
    cJSON_AddNumberToObject(o, "max_model_len", s->m->cfg.max_pos);
    cJSON_AddItemToObject(o, "tokens", cJSON_CreateIntArray(ids, n));
    free(ids);
    lmf_api_json_response(200, print_json(o), res);
}

static void detokenize(lmf_server *s, const lmf_http_request *req, lmf_http_response *res) {
    int32_t *ids;
    int n;
    lmf_oai_error e;
    if (lmf_oai_parse_detokenize(req->body, req->body_len, &ids, &n, &e)) {
        lmf_api_error_response(&e, res);
        return;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] >= lmf_tokenizer_vocab_size(s->tok)) {
            char p[32];
            snprintf(p, sizeof p, "tokens[%d]", i);
            lmf_oai_error_set(&e, 400, INVALID, NULL, p, "'%s': token %d is outside the vocabulary",
                              p, ids[i]);
            free(ids);
            lmf_api_error_response(&e, res);
            return;
        }
    char *text = NULL;
    size_t len;
    int rc = lmf_tokenizer_decode(s->tok, ids, n, 0, &text, &len);
    free(ids);
    if (rc) {
        error_reply(res, 400, INVALID, NULL, lmf_last_error());
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", text);
    free(text);
    lmf_api_json_response(200, print_json(o), res);
}

static void metrics(lmf_server *s, lmf_http_response *res) {
    lmf_engine_stats st = {0};
    if (atomic_load(&s->ready)) lmf_engine_stats_get(s->eng, &st);
    res->status = 200;
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    res->body = lmf_api_metrics_render(&s->metrics, &st);
    res->body_len = res->body ? strlen(res->body) : 0;
    if (!res->body) res->status = 500;
}

typedef enum route {
    R_NONE,
    R_HEALTH,
    R_METRICS,
    R_MODELS,
    R_CHAT,
    R_COMPLETIONS,
    R_TOKENIZE,
    R_DETOKENIZE
} route;

static route find_route(const char *path, int *get, int *post) {
    static const struct {
        const char *path;
        route r;
        int get;
    } table[] = {{"/health", R_HEALTH, 1},
                 {"/metrics", R_METRICS, 1},
                 {"/v1/models", R_MODELS, 1},
                 {"/v1/chat/completions", R_CHAT, 0},
                 {"/v1/completions", R_COMPLETIONS, 0},
                 {"/tokenize", R_TOKENIZE, 0},
                 {"/detokenize", R_DETOKENIZE, 0}};
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (!strcmp(path, table[i].path)) {
            *get = table[i].get, *post = !table[i].get;
            return table[i].r;
        }
    return R_NONE;
}

static void dispatch(lmf_server *s, const lmf_http_request *req, lmf_http_response *res) {
    int get = 0, post = 0;
    route r = find_route(req->path, &get, &post);
    if (r == R_NONE) {
        char msg[300];
        snprintf(msg, sizeof msg, "no such endpoint: %.200s %.60s", req->method, req->path);
        error_reply(res, 404, INVALID, "unknown_url", msg);
        return;
    }
    int is_get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
    if (!((get && is_get) || (post && !strcmp(req->method, "POST")))) {
        char msg[300];
        snprintf(msg, sizeof msg, "%.60s is not allowed on %.200s (use %s)", req->method, req->path,
                 get ? "GET" : "POST");
        error_reply(res, 405, INVALID, "method_not_allowed", msg);
        res->allow_get = get, res->allow_post = post;
        return;
    }
    if (r == R_HEALTH) {
        int ok = atomic_load(&s->ready) && !atomic_load(&s->draining);
        lmf_api_json_response(ok ? 200 : 503,
                              lmf_strdup(ok ? "{\"status\":\"ok\"}"
                                         : atomic_load(&s->draining)
                                             ? "{\"status\":\"shutting down\"}"
                                             : "{\"status\":\"loading\"}"),
                              res);
        return;
    }
    if (r == R_METRICS) {
        metrics(s, res);
        return;
    }
    if (!lmf_http_bearer_ok(s->c.api_key, req->authorization)) {
        error_reply(res, 401, INVALID, "invalid_api_key",
                    req->authorization ? "Incorrect API key provided"
                                       : "Missing API key: send Authorization: Bearer <key>");
        return;
    }
    if (req->body_too_large) {
        char msg[128];
        snprintf(msg, sizeof msg, "the request body is larger than the server's limit (%zu bytes)",
                 s->c.max_body_bytes);
        error_reply(res, 413, INVALID, "request_too_large", msg);
        return;
    }
    if (atomic_load(&s->draining) || !atomic_load(&s->ready)) {
        error_reply(res, 503, "service_unavailable", NULL,
                    atomic_load(&s->draining) ? "the server is shutting down"
                                              : "the model is still loading");
        res->retry_after = 1;
        return;
    }
    switch (r) {
    case R_MODELS: {
        const char *names[1 + LMF_API_MAX_ADAPTERS] = {s->c.model_name};
        int n = 1;
        for (int i = 0; i < s->n_adapters; i++) names[n++] = s->adapter_names[i];
        lmf_api_json_response(200, lmf_oai_render_models(names, n, s->created), res);
        break;
    }
    case R_CHAT:
        lmf_api_generate(s, LMF_OAI_CHAT, req, res);
        break;
    case R_COMPLETIONS:
        lmf_api_generate(s, LMF_OAI_COMPLETION, req, res);
        break;
    case R_TOKENIZE:
        tokenize(s, req, res);
        break;
    case R_DETOKENIZE:
        detokenize(s, req, res);
        break;
    default:
        break;
    }
}

static void on_request(void *user, const lmf_http_request *req, lmf_http_response *res) {
    lmf_server *s = user;
    dispatch(s, req, res);
    if (!res->status) error_reply(res, 500, "server_error", NULL, "internal error");
    lmf_api_metrics_count_status(&s->metrics, res->status);
}

static void *engine_main(void *arg) {
    lmf_server *s = arg;
    for (;;) {
        int active = lmf_engine_step(s->eng);
        if (active < 0) {
            lmf_warn("api: engine step failed: %s", lmf_last_error());
            usleep(10000);
            continue;
        }
        if (active == 0) {
            if (atomic_load(&s->engine_stop)) break;
            lmf_engine_wait(s->eng, 50);
        }
    }
    return NULL;
}

static char *dup_or_null(const char *s) {
    return s ? lmf_strdup(s) : NULL;
}

int lmf_server_start(lmf_server **out, const lmf_server_config *c) {
    lmf_server *s = calloc(1, sizeof *s);
    if (!s) return lmf_errorf(LMF_ENOMEM, "api: out of memory");
    s->c = *c;
    s->c.host = dup_or_null(c->host ? c->host : "127.0.0.1");
    s->c.api_key = dup_or_null(c->api_key);
    s->c.model_name = dup_or_null(c->model_name ? c->model_name : "gpt-3.5-turbo");
    s->c.model_path = dup_or_null(c->model_path);
    s->c.default_system = dup_or_null(c->default_system);
    s->created = (long long)time(NULL);
    atomic_init(&s->next_id, 1);
    lmf_api_metrics_init(&s->metrics);
    lmf_http_config hc = {s->c.host, c->port, c->max_body_bytes, c->max_connections};
    int rc = lmf_sampling_validate(&c->sampling);
    if (!rc && c->default_max_tokens <= 0)
        rc = lmf_errorf(LMF_EINVAL, "api: max_new_tokens must be positive");

    if (!rc) rc = lmf_http_start(&s->http, &hc, on_request, s);
    if (rc) {
        lmf_server_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int lmf_server_add_adapter(lmf_server *s, const char *name, const lmf_lora *l) {
    if (s->n_adapters == LMF_API_MAX_ADAPTERS)
        return lmf_errorf(LMF_EINVAL, "api: adapter %s: at most %d adapters", name,
                          LMF_API_MAX_ADAPTERS);
    if (!strcmp(name, s->c.model_name) || (s->c.model_path && !strcmp(name, s->c.model_path)))
        return lmf_errorf(LMF_EINVAL, "api: adapter %s: the name is the served model's", name);
    for (int i = 0; i < s->n_adapters; i++)
        if (!strcmp(name, s->adapter_names[i]))
            return lmf_errorf(LMF_EINVAL, "api: adapter %s: the name is given twice", name);
    if (!(s->adapter_names[s->n_adapters] = lmf_strdup(name)))
        return lmf_errorf(LMF_ENOMEM, "api: out of memory");
    s->adapters[s->n_adapters++] = l;
    return 0;
}

int lmf_server_ready(lmf_server *s, lmf_model *m, const lmf_tokenizer *tok, const lmf_template *tpl,
                     lmf_engine *e) {
    s->m = m, s->tok = tok, s->tpl = tpl, s->eng = e;
    int n_words = 0;
    const char *const *words = tpl ? lmf_template_stop_words(tpl, &n_words) : NULL;
    for (int i = 0; i < n_words && s->n_tpl_stop_ids < LMF_API_MAX_TEMPLATE_STOPS - 1; i++) {
        int32_t id = lmf_tokenizer_token_to_id(tok, words[i]);
        if (id >= 0) s->tpl_stop_ids[s->n_tpl_stop_ids++] = id;
    }
    if (tpl && lmf_tokenizer_eos(tok) >= 0)
        s->tpl_stop_ids[s->n_tpl_stop_ids++] = lmf_tokenizer_eos(tok);
    if (pthread_create(&s->engine_thread, NULL, engine_main, s))
        return lmf_errorf(LMF_EIO, "api: cannot start the engine thread");
    s->engine_started = 1;
    atomic_store(&s->ready, 1);
    return 0;
}

void lmf_server_shutdown(lmf_server *s, double drain_seconds) {
    if (!s || !s->http) return;
    atomic_store(&s->draining, 1);
    lmf_http_quiesce(s->http);
    double until = lmf_time_sec() + drain_seconds;
    while (lmf_http_in_flight(s->http) > 0 && lmf_time_sec() < until) usleep(20000);
    lmf_http_stop(s->http); /* closes what is left: their streams cancel their requests */
    s->http = NULL;
    if (s->engine_started) {
        atomic_store(&s->engine_stop, 1);
        pthread_join(s->engine_thread, NULL);
        s->engine_started = 0;
    }
}

void lmf_server_free(lmf_server *s) {
    if (!s) return;
    lmf_server_shutdown(s, 0);
    lmf_api_metrics_free(&s->metrics);
    free((char *)s->c.host), free((char *)s->c.api_key), free((char *)s->c.model_name),
        free((char *)s->c.model_path), free((char *)s->c.default_system);
    for (int i = 0; i < s->n_adapters; i++) free(s->adapter_names[i]);
    free(s);
}
