/* Forwarding one request to a replica. Nothing reaches the client until the replica has
 * answered with a whole body, or (server-sent events) with its first whole event, so any
 * failure before then is retried on another replica (each at most once). After that the stream
 * is passed on event by event as it arrives; if the replica fails mid-stream the client gets an
 * error event and [DONE], and the connection ends normally. A replica that cannot be reached is
 * ejected at once (health checks re-admit it). A replica that answers 429 or 503 (busy, loading,
 * draining) makes the router try the others first and is passed on if none can do better. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/error.h"
#include "openai_request.h"
#include "router_internal.h"

enum { SLICE_MS = 200, MAX_RESPONSE = 64 << 20 };

typedef struct proxy_stream {
    lmf_router *r;
    int rep; /* replica index (released in stream_free) */
    lmf_hc *c;
    int client_fd;
    double idle_timeout, deadline; /* seconds without data that fail the stream */
    char *pend;                    /* received from the replica, not yet a whole event */
    size_t pend_len, pend_cap;
    char *out; /* whole events ready for the client: out[out_pos, out_len) */
    size_t out_pos, out_len, out_cap;
    int finished; /* nothing more comes from the replica */
    int failed;   /* the replica failed mid-stream */
} proxy_stream;

static int grow(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need) c *= 2;
    char *n = realloc(*p, c);
    if (!n) return -1;
    *p = n, *cap = c;
    return 0;
}

static int append(char **p, size_t *len, size_t *cap, const char *s, size_t n) {
    if (grow(p, cap, *len + n + 1)) return -1;
    memcpy(*p + *len, s, n);
    *len += n;
    (*p)[*len] = 0;
    return 0;
}

/* Moves the whole events ("...\n\n") at the front of pend to out. */
static int move_events(proxy_stream *s) {
    size_t end = 0;
    for (size_t i = 1; i < s->pend_len; i++)
        if (s->pend[i] == '\n' && s->pend[i - 1] == '\n') end = i + 1;
    if (!end) return 0;
    if (s->out_pos == s->out_len) s->out_pos = s->out_len = 0;
    if (append(&s->out, &s->out_len, &s->out_cap, s->pend, end)) return -1;
    memmove(s->pend, s->pend + end, s->pend_len - end);
    s->pend_len -= end;
    return 0;
}

/* Replaces what is left with an error event and [DONE]: the stream ends cleanly. */
static void fail_stream(proxy_stream *s, const char *why) {
    lmf_oai_error e;
    lmf_oai_error_set(&e, 502, "server_error", "replica_failed", NULL,
                      "the replica serving this stream failed: %s", why);
    char *json = lmf_oai_error_json(&e);
    s->pend_len = 0;
    if (s->out_pos == s->out_len) s->out_pos = s->out_len = 0;
    const char *pre = "data: ", *post = "\n\ndata: [DONE]\n\n";
    if (json) {
        append(&s->out, &s->out_len, &s->out_cap, pre, strlen(pre));
        append(&s->out, &s->out_len, &s->out_cap, json, strlen(json));
    }
    append(&s->out, &s->out_len, &s->out_cap, post, strlen(post));
    free(json);
    s->finished = s->failed = 1;
    atomic_fetch_add(&s->r->rep[s->rep].stream_errors, 1);
    lmf_router_eject(s->r, s->rep, why);
}

/* One read from the replica into the event buffers: 1 progress, 0 nothing yet, -1 client gone. */
static int pump(proxy_stream *s) {
    char buf[16384];
    if (lmf_http_client_gone(s->client_fd)) return -1;
    ssize_t n = lmf_hc_read(s->c, buf, sizeof buf, SLICE_MS);
    if (n == LMF_HC_WAIT) {
        if (lmf_time_sec() > s->deadline) {
            fail_stream(s, "no data within the request timeout");
            return 1;
        }
        return 0;
    }
    if (n < 0) {
        fail_stream(s, lmf_last_error());
        return 1;
    }
    if (n == 0) { /* the end: pass on anything left, even without a final blank line */
        if (s->pend_len) append(&s->out, &s->out_len, &s->out_cap, s->pend, s->pend_len);
        s->pend_len = 0;
        s->finished = 1;
        return 1;
    }
    s->deadline = lmf_time_sec() + s->idle_timeout;
    if (append(&s->pend, &s->pend_len, &s->pend_cap, buf, (size_t)n) || move_events(s)) {
        fail_stream(s, "out of memory");
        return 1;
    }
    return 1;
}

static ssize_t stream_pull(void *ctx, char *buf, size_t max) {
    proxy_stream *s = ctx;
    for (;;) {
        if (s->out_pos < s->out_len) {
            size_t n = s->out_len - s->out_pos;
            if (n > max) n = max;
            memcpy(buf, s->out + s->out_pos, n);
            s->out_pos += n;
            return (ssize_t)n;
        }
        if (s->finished) return 0;
        if (pump(s) < 0) return -1;
    }
}

static void stream_free(void *ctx) {
    proxy_stream *s = ctx;
    lmf_hc_close(s->c);
    lmf_router_release(s->r, s->rep);
    free(s->pend), free(s->out);
    free(s);
}

static const char *static_type(const char *t) {
    if (!strncmp(t, "text/event-stream", 17)) return "text/event-stream";
    if (!strncmp(t, "application/json", 16)) return "application/json";
    return "text/plain; charset=utf-8";
}

typedef enum outcome { DONE, RETRY, BUSY } outcome;

enum { HEAD_OK, HEAD_FAILED, HEAD_CLIENT_GONE, HEAD_TIMEOUT };

/* Waits for the response head of c, watching the client: HEAD_OK, or another with *why set. */
static int wait_head(lmf_hc *c, int client_fd, double deadline, const char **why) {
    for (;;) {
        int rc = lmf_hc_read_head(c, SLICE_MS);
        if (!rc) return HEAD_OK;
        if (rc != LMF_HC_WAIT) {
            *why = lmf_last_error();
            return HEAD_FAILED;
        }
        if (lmf_http_client_gone(client_fd)) {
            *why = "the client went away";
            return HEAD_CLIENT_GONE;
        }
        if (lmf_time_sec() > deadline) {
            *why = "no answer within the request timeout";
            return HEAD_TIMEOUT;
        }
    }
}

/* One attempt on replica i. DONE: res is filled (the replica is released, or owned by the
 * stream). RETRY: the replica failed before anything was sent (ejected). BUSY: it answered 429
 * or 503; res holds that answer in case nothing better turns up. */
static outcome attempt(lmf_router *r, int i, const lmf_http_request *req, lmf_http_response *res) {
    router_replica *p = &r->rep[i];
    lmf_hc_request q = {.method = req->method,
                        .path = req->path,
                        .authorization = req->authorization,
                        .content_type = "application/json",
                        .body = req->body,
                        .body_len = req->body_len,
                        .connect_timeout_ms = r->c.connect_timeout_ms,
                        .send_timeout_ms = 30000};
    double deadline = lmf_time_sec() + r->c.request_timeout_s;
    lmf_hc *c = NULL;
    const char *why = NULL;
    int rc = HEAD_FAILED;
    if (lmf_hc_request_start(&c, &p->u, &q))
        why = lmf_last_error();
    else
        rc = wait_head(c, req->fd, deadline, &why);
    if (rc != HEAD_OK) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", why);
        lmf_hc_close(c);
        lmf_router_release(r, i);
        if (rc == HEAD_CLIENT_GONE) { /* nobody to answer */
            lmf_router_error(res, 499, "invalid_request_error", NULL, "the client went away");
            return DONE;
        }
        if (rc == HEAD_TIMEOUT) {
            lmf_router_error(res, 504, "server_error", "replica_timeout", "replica %s: %s", p->url,
                             msg);
            return DONE;
        }
        lmf_router_eject(r, i, msg);
        return RETRY;
    }
    int status = lmf_hc_status(c);
    const char *type = lmf_hc_content_type(c);
    if (status == 200 && !strncmp(type, "text/event-stream", 17)) {
        proxy_stream *s = calloc(1, sizeof *s);
        if (!s) {
            lmf_hc_close(c);
            lmf_router_release(r, i);
            lmf_router_error(res, 500, "server_error", NULL, "router: out of memory");
            return DONE;
        }
        *s = (proxy_stream){.r = r,
                            .rep = i,
                            .c = c,
                            .client_fd = req->fd,
                            .idle_timeout = r->c.request_timeout_s,
                            .deadline = deadline};
        while (!s->failed && !s->out_len && !s->finished)
            if (pump(s) < 0) break;
        if (s->failed || !s->out_len) { /* nothing whole came: nothing was sent, try elsewhere */
            int gone = !s->failed && !s->finished;
            s->failed = 0;
            stream_free(s);
            if (gone) {
                lmf_router_error(res, 499, "invalid_request_error", NULL, "the client went away");
                return DONE;
            }
            return RETRY;
        }
        res->status = 200;
        res->content_type = "text/event-stream";
        res->pull = stream_pull, res->pull_free = stream_free, res->pull_ctx = s;
        return DONE;
    }
    char *body = NULL;
    size_t len = 0;
    int remaining = (int)((deadline - lmf_time_sec()) * 1000);
    rc = lmf_hc_read_all(c, &body, &len, MAX_RESPONSE, remaining > 0 ? remaining : 1);
    int retry_after = lmf_hc_retry_after(c);
    const char *content_type = static_type(type); /* type lives in c */
    lmf_hc_close(c);
    lmf_router_release(r, i);
    if (rc) {
        lmf_router_eject(r, i, lmf_last_error());
        return RETRY;
    }
    res->status = status;
    res->content_type = content_type;
    res->body = body, res->body_len = len;
    res->retry_after = retry_after;
    return status == 429 || status == 503 ? BUSY : DONE;
}

void lmf_router_proxy(lmf_router *r, const lmf_http_request *req, lmf_http_response *res,
                      int prefix_route) {
    int use_key = prefix_route && r->c.policy == LMF_ROUTE_PREFIX;
    uint64_t key = use_key ? lmf_router_prefix_key(req->body, req->body_len, r->c.prefix_chars) : 0;
    if (use_key && !key) use_key = 0;
    unsigned char tried[LMF_ROUTER_MAX_REPLICAS] = {0};
    lmf_http_response busy = {0};
    int attempts = 0;
    for (;;) {
        int i = lmf_router_acquire(r, key, use_key, tried);
        if (i < 0) break;
        tried[i] = 1;
        if (attempts++) atomic_fetch_add(&r->retries, 1);
        lmf_http_response one = {0};
        outcome o = attempt(r, i, req, &one);
        if (o == DONE) {
            free(busy.body);
            *res = one;
            return;
        }
        if (o == BUSY) {
            free(busy.body);
            busy = one;
        }
    }
    if (busy.status) {
        *res = busy;
        return;
    }
    atomic_fetch_add(&r->no_replica, 1);
    lmf_router_error(res, 503, "service_unavailable", "no_healthy_replica",
                     attempts ? "every replica failed this request (%d tried)"
                              : "no healthy replica (%d configured)",
                     attempts ? attempts : r->n);
    res->retry_after = 1;
}
