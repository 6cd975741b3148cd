/* The router's life cycle, its health checker, the replica bookkeeping and the endpoints it
 * answers itself (/health, /v1/models as the union of the replicas' lists, routing of the rest
 * to router_proxy.c and router_metrics.c). */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lmforge/core.h"
#include "lmforge/error.h"
#include "openai_request.h"
#include "router_internal.h"

#define INVALID "invalid_request_error"

void lmf_router_config_defaults(lmf_router_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8000;
    c->policy = LMF_ROUTE_LEAST;
    c->health_interval = 2.0;
    c->health_failures = 2;
    c->prefix_chars = 256;
    c->max_body_bytes = 1 << 20;
    c->max_connections = 256;
    c->connect_timeout_ms = 2000;
    c->request_timeout_s = 600;
}

int lmf_router_policy_parse(const char *s, lmf_router_policy *out) {
    if (!strcmp(s, "least"))
        *out = LMF_ROUTE_LEAST;
    else if (!strcmp(s, "prefix"))
        *out = LMF_ROUTE_PREFIX;
    else
        return lmf_errorf(LMF_EINVAL, "router policy \"%s\": expected least or prefix", s);
    return 0;
}

void lmf_router_error(lmf_http_response *res, int status, const char *type, const char *code,
                      const char *fmt, ...) {
    lmf_oai_error e;
    char msg[sizeof e.message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lmf_oai_error_set(&e, status, type, code, NULL, "%s", msg);
    char *json = lmf_oai_error_json(&e);
    res->status = json ? status : 500;
    res->content_type = "application/json";
    res->body = json;
    res->body_len = json ? strlen(json) : 0;
}

int lmf_router_acquire(lmf_router *r, uint64_t key, int use_key, const unsigned char *tried) {
    lmf_route_view v[LMF_ROUTER_MAX_REPLICAS];
    pthread_mutex_lock(&r->pick_mu);
    for (int i = 0; i < r->n; i++)
        v[i] =
            (lmf_route_view){atomic_load(&r->rep[i].healthy), atomic_load(&r->rep[i].outstanding)};
    int i =
        lmf_router_choose(v, r->n, use_key ? r->c.policy : LMF_ROUTE_LEAST, key, tried, r->rr++);
    if (i >= 0) {
        atomic_fetch_add(&r->rep[i].outstanding, 1);
        atomic_fetch_add(&r->rep[i].routed, 1);
    }
    pthread_mutex_unlock(&r->pick_mu);
    return i;
}

void lmf_router_release(lmf_router *r, int i) {
    atomic_fetch_sub(&r->rep[i].outstanding, 1);
}

void lmf_router_eject(lmf_router *r, int i, const char *why) {
    atomic_fetch_add(&r->rep[i].failures, 1);
    if (atomic_exchange(&r->rep[i].healthy, 0)) {
        atomic_fetch_add(&r->rep[i].ejections, 1);
        lmf_warn("router: replica %s ejected: %s", r->rep[i].url, why);
    }
}

int lmf_router_healthy(lmf_router *r) {
    int n = 0;
    for (int i = 0; i < r->n; i++) n += atomic_load(&r->rep[i].healthy);
    return n;
}

/* GET /health of replica p: 1 healthy, 0 not (why says), -1 unreachable (refused: no server). */
static int probe(lmf_router *r, router_replica *p, char *why, size_t n) {
    int timeout_ms = (int)(r->c.health_interval * 1000);
    if (timeout_ms < 2000) timeout_ms = 2000;
    lmf_hc_request q = {.method = "GET",
                        .path = "/health",
                        .connect_timeout_ms = r->c.connect_timeout_ms,
                        .send_timeout_ms = timeout_ms};
    lmf_hc *c = NULL;
    if (lmf_hc_request_start(&c, &p->u, &q)) {
        snprintf(why, n, "health check: %s", lmf_last_error());
        return -1;
    }
    int rc = lmf_hc_read_head(c, timeout_ms), status = lmf_hc_status(c);
    lmf_hc_close(c);
    if (rc == LMF_HC_WAIT)
        snprintf(why, n, "health check: no answer in %d ms", timeout_ms);
    else if (rc)
        snprintf(why, n, "health check: %s", lmf_last_error());
    else
        snprintf(why, n, "health check: GET /health answered %d", status);
    return !rc && status == 200;
}

/* One probe per replica: a pass re-admits; a refused connection ejects at once, other misses
 * after health_failures in a row. */
static void check_all(lmf_router *r) {
    for (int i = 0; i < r->n; i++) {
        router_replica *p = &r->rep[i];
        char why[300];
        int ok = probe(r, p, why, sizeof why);
        if (ok > 0) {
            p->fails = 0;
            if (!atomic_exchange(&p->healthy, 1)) lmf_info("router: replica %s is healthy", p->url);
            continue;
        }
        ++p->fails;
        if (atomic_load(&p->healthy) && (ok < 0 || p->fails >= r->c.health_failures))
            lmf_router_eject(r, i, why);
        else if (p->fails == 1)
            lmf_debug("router: replica %s: %s", p->url, why);
    }
}

static void *health_main(void *arg) {
    lmf_router *r = arg;
    pthread_mutex_lock(&r->health_mu);
    while (!r->health_stop) {
        pthread_mutex_unlock(&r->health_mu);
        check_all(r);
        pthread_mutex_lock(&r->health_mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = ts.tv_sec + ts.tv_nsec * 1e-9 + r->c.health_interval;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        while (!r->health_stop && pthread_cond_timedwait(&r->health_cv, &r->health_mu, &ts) == 0) {
        }
    }
    pthread_mutex_unlock(&r->health_mu);
    return NULL;
}

/* GET /v1/models: the union of the healthy replicas' lists (by id, first seen kept). */
static void models(lmf_router *r, const lmf_http_request *req, lmf_http_response *res) {
    cJSON *out = cJSON_CreateObject(), *data = cJSON_CreateArray();
    int answered = 0;
    for (int i = 0; i < r->n && data; i++) {
        if (!atomic_load(&r->rep[i].healthy)) continue;
        lmf_hc_request q = {.method = "GET",
                            .path = "/v1/models",
                            .authorization = req->authorization,
                            .connect_timeout_ms = r->c.connect_timeout_ms,
                            .send_timeout_ms = 5000};
        int status = 0;
        char *body = NULL;
        size_t len;
        if (lmf_hc_fetch(&r->rep[i].u, &q, 10000, &status, &body, &len, 1 << 20)) {
            free(body);
            continue;
        }
        if (status != 200) { /* 401 and the like: the client's problem, pass it on */
            cJSON_Delete(out), cJSON_Delete(data);
            res->status = status;
            res->content_type = "application/json";
            res->body = body, res->body_len = len;
            return;
        }
        cJSON *o = cJSON_ParseWithLength(body, len);
        free(body);
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "data"), *m;
        answered += cJSON_IsArray(list);
        cJSON_ArrayForEach(m, list) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id"), *x;
            int dup = 0;
            cJSON_ArrayForEach(x, data) {
                const cJSON *xid = cJSON_GetObjectItemCaseSensitive(x, "id");
                dup |= cJSON_IsString(id) && cJSON_IsString(xid) &&
                       !strcmp(id->valuestring, xid->valuestring);
            }
            if (!dup) cJSON_AddItemToArray(data, cJSON_Duplicate(m, 1));
        }
        cJSON_Delete(o);
    }
    if (!answered) {
        cJSON_Delete(out), cJSON_Delete(data);
        lmf_router_error(res, 503, "service_unavailable", NULL,
                         "no healthy replica answered GET /v1/models");
        res->retry_after = 1;
        return;
    }
    cJSON_AddStringToObject(out, "object", "list");
    cJSON_AddItemToObject(out, "data", data);
    char *json = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    res->status = json ? 200 : 500;
    res->content_type = "application/json";
    res->body = json, res->body_len = json ? strlen(json) : 0;
}

static void dispatch(lmf_router *r, const lmf_http_request *req, lmf_http_response *res) {
    static const struct {
        const char *path;
        int get, prefix;
    } table[] = {{"/health", 1, 0},         {"/metrics", 1, 0},
                 {"/v1/models", 1, 0},      {"/v1/chat/completions", 0, 1},
                 {"/v1/completions", 0, 1}, {"/tokenize", 0, 0},
                 {"/detokenize", 0, 0}};
    int k = -1;
    for (int i = 0; i < (int)(sizeof table / sizeof *table); i++)
        if (!strcmp(req->path, table[i].path)) k = i;
    if (k < 0) {
        lmf_router_error(res, 404, INVALID, "unknown_url", "no such endpoint: %.200s %.200s",
                         req->method, req->path);
        return;
    }
    int is_get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
    int ok = table[k].get ? is_get : !strcmp(req->method, "POST");
    if (!ok) {
        lmf_router_error(res, 405, INVALID, "method_not_allowed",
                         "%.60s is not allowed on %.200s (use %s)", req->method, req->path,
                         table[k].get ? "GET" : "POST");
        res->allow_get = table[k].get, res->allow_post = !table[k].get;
        return;
    }
    if (!strcmp(req->path, "/health")) {
        int n = lmf_router_healthy(r), up = n > 0 && !atomic_load(&r->draining);
        char *b = malloc(96);
        if (b)
            snprintf(b, 96, "{\"status\":\"%s\",\"healthy_replicas\":%d,\"replicas\":%d}",
                     atomic_load(&r->draining) ? "shutting down"
                     : up                      ? "ok"
                                               : "no healthy replica",
                     n, r->n);
        res->status = b ? (up ? 200 : 503) : 500;
        res->content_type = "application/json";
        res->body = b, res->body_len = b ? strlen(b) : 0;
        return;
    }
    if (!strcmp(req->path, "/metrics")) {
        res->body = lmf_router_metrics_render(r);
        res->status = res->body ? 200 : 500;
        res->content_type = "text/plain; version=0.0.4; charset=utf-8";
        res->body_len = res->body ? strlen(res->body) : 0;
        return;
    }
    if (!lmf_http_bearer_ok(r->c.api_key, req->authorization)) {
        lmf_router_error(res, 401, INVALID, "invalid_api_key", "%s",
                         req->authorization ? "Incorrect API key provided"
                                            : "Missing API key: send Authorization: Bearer <key>");
        return;
    }
    if (req->body_too_large) {
        lmf_router_error(res, 413, INVALID, "request_too_large",
                         "the request body is larger than the router's limit (%zu bytes)",
                         r->c.max_body_bytes);
        return;
    }
    if (atomic_load(&r->draining)) {
        lmf_router_error(res, 503, "service_unavailable", NULL, "the router is shutting down");
        res->retry_after = 1;
        return;
    }
    if (table[k].get)
        models(r, req, res);
    else
        lmf_router_proxy(r, req, res, table[k].prefix);
}

static void on_request(void *user, const lmf_http_request *req, lmf_http_response *res) {
    lmf_router *r = user;
    dispatch(r, req, res);
    if (!res->status) lmf_router_error(res, 500, "server_error", NULL, "internal error");
    int cls = res->status / 100;
    if (cls >= 1 && cls <= 5) atomic_fetch_add(&r->http_class[cls], 1);
}

static int validate(const lmf_router_config *c) {
    if (c->n_replicas < 1)
        return lmf_errorf(LMF_EINVAL, "router: no replicas (give --replicas URL,URL or "
                                      "router_replicas)");
    if (c->n_replicas > LMF_ROUTER_MAX_REPLICAS)
        return lmf_errorf(LMF_EINVAL, "router: %d replicas; at most %d", c->n_replicas,
                          LMF_ROUTER_MAX_REPLICAS);
    if (!(c->health_interval >= 0.05 && c->health_interval <= 3600))
        return lmf_errorf(LMF_EINVAL, "router: health interval %g s: expected 0.05..3600",
                          c->health_interval);
    if (c->health_failures < 1)
        return lmf_errorf(LMF_EINVAL, "router: health failures %d: expected at least 1",
                          c->health_failures);
    if (c->prefix_chars < 1)
        return lmf_errorf(LMF_EINVAL, "router: prefix characters %d: expected at least 1",
                          c->prefix_chars);
    if (c->request_timeout_s < 1 || c->connect_timeout_ms < 1)
        return lmf_errorf(LMF_EINVAL, "router: timeouts must be positive");
    return 0;
}

int lmf_router_start(lmf_router **out, const lmf_router_config *c) {
    int rc = validate(c);
    if (rc) return rc;
    lmf_router *r = calloc(1, sizeof *r);
    if (!r) return lmf_errorf(LMF_ENOMEM, "router: out of memory");
    r->c = *c;
    r->c.host = lmf_strdup(c->host ? c->host : "127.0.0.1");
    r->c.api_key = c->api_key ? lmf_strdup(c->api_key) : NULL;
    for (int i = 0; i < LMF_ROUTER_MAX_REPLICAS; i++) r->c.replicas[i] = NULL;
    pthread_mutex_init(&r->pick_mu, NULL);
    pthread_mutex_init(&r->health_mu, NULL);
    pthread_cond_init(&r->health_cv, NULL);
    for (int i = 0; i < c->n_replicas && !rc; i++) {
        rc = lmf_hc_parse_url(c->replicas[i], &r->rep[i].u);
        if (!rc && !(r->rep[i].url = lmf_strdup(c->replicas[i])))
            rc = lmf_errorf(LMF_ENOMEM, "router: out of memory");
        for (int j = 0; j < i && !rc; j++)
            if (!strcmp(r->rep[j].url, r->rep[i].url))
                rc = lmf_errorf(LMF_EINVAL, "router: replica %s is given twice", r->rep[i].url);
        r->n = i + 1;
    }
    lmf_http_config hc = {r->c.host, c->port, c->max_body_bytes, c->max_connections};
    if (!rc) rc = lmf_http_start(&r->http, &hc, on_request, r);
    if (!rc) {
        if (pthread_create(&r->health_thread, NULL, health_main, r))
            rc = lmf_errorf(LMF_EIO, "router: cannot start the health-check thread");
        else
            r->health_started = 1;
    }
    if (rc) {
        lmf_router_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void lmf_router_shutdown(lmf_router *r, double drain_seconds) {
    if (!r) return;
    if (r->http) {
        atomic_store(&r->draining, 1);
        lmf_http_quiesce(r->http);
        double until = lmf_time_sec() + drain_seconds;
        while (lmf_http_in_flight(r->http) > 0 && lmf_time_sec() < until) usleep(20000);
        lmf_http_stop(r->http);
        r->http = NULL;
    }
    if (r->health_started) {
        pthread_mutex_lock(&r->health_mu);
        r->health_stop = 1;
        pthread_cond_broadcast(&r->health_cv);
        pthread_mutex_unlock(&r->health_mu);
        pthread_join(r->health_thread, NULL);
        r->health_started = 0;
    }
}

void lmf_router_free(lmf_router *r) {
    if (!r) return;
    lmf_router_shutdown(r, 0);
    for (int i = 0; i < r->n; i++) free(r->rep[i].url);
    pthread_mutex_destroy(&r->pick_mu);
    pthread_mutex_destroy(&r->health_mu);
    pthread_cond_destroy(&r->health_cv);
    free((char *)r->c.host), free((char *)r->c.api_key);
    free(r);
}
