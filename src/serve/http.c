/* HTTP over libmicrohttpd, one thread per connection (see http.h). A thread per connection
 * lets a streamed response block in its pull callback until the engine has the next token,
 * which keeps the glue a plain wait on a condition variable. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lmforge/error.h"

struct lmf_http {
    struct MHD_Daemon *d;
    lmf_http_handler handler;
    void *user;
    size_t max_body;
    pthread_mutex_t mu;
    int in_flight;
};

typedef struct conn_ctx {
    char *body;
    size_t len, cap;
    int too_big;
} conn_ctx;

typedef struct stream_ctx {
    lmf_http_pull pull;
    void (*pull_free)(void *);
    void *ctx;
} stream_ctx;

int lmf_http_client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static ssize_t reader(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_ctx *s = cls;
    (void)pos;
    ssize_t n = s->pull(s->ctx, buf, max);
    if (n == 0) return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void reader_free(void *cls) {
    stream_ctx *s = cls;
    if (s->pull_free) s->pull_free(s->ctx);
    free(s);
}

static struct MHD_Response *make_response(lmf_http_response *res) {
    struct MHD_Response *r;
    if (res->pull) {
        stream_ctx *s = malloc(sizeof *s);
        r = s ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, reader, s,
                                                  reader_free)
              : NULL;
        if (!r) {
            free(s);
            if (res->pull_free) res->pull_free(res->pull_ctx);
            return NULL;
        }
        *s = (stream_ctx){res->pull, res->pull_free, res->pull_ctx};
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
    } else {
        r = MHD_create_response_from_buffer(res->body_len, res->body ? res->body : "",
                                            res->body ? MHD_RESPMEM_MUST_FREE
                                                      : MHD_RESPMEM_PERSISTENT);
        if (!r) {
            free(res->body);
            return NULL;
        }
    }
    if (res->content_type) MHD_add_response_header(r, "Content-Type", res->content_type);
    if (res->retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", res->retry_after);
        MHD_add_response_header(r, "Retry-After", v);
    }
    if (res->allow_get || res->allow_post)
        MHD_add_response_header(r, "Allow",
                                res->allow_get && res->allow_post ? "GET, POST"
                                : res->allow_get                  ? "GET"
                                                                  : "POST");
    return r;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls) {
    lmf_http *s = cls;
    conn_ctx *cc = *con_cls;
    (void)version;
    if (!cc) {
        if (!(cc = calloc(1, sizeof *cc))) return MHD_NO;
        *con_cls = cc;
        pthread_mutex_lock(&s->mu);
        s->in_flight++;
        pthread_mutex_unlock(&s->mu);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cc->too_big && cc->len + *upload_size > s->max_body) {
            cc->too_big = 1;
            free(cc->body);
            cc->body = NULL, cc->len = cc->cap = 0;
        }
        if (!cc->too_big) {
            if (cc->len + *upload_size + 1 > cc->cap) {
                size_t cap = (cc->len + *upload_size + 1) * 2;
                if (cap > s->max_body + 1) cap = s->max_body + 1;
                char *p = realloc(cc->body, cap);
                if (!p) return MHD_NO;
                cc->body = p, cc->cap = cap;
            }
            memcpy(cc->body + cc->len, upload, *upload_size);
            cc->len += *upload_size;
            cc->body[cc->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    lmf_http_request req = {
        .method = method,
        .path = url,
        .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
        .body = cc->body ? cc->body : "",
        .body_len = cc->len,
        .body_too_large = cc->too_big,
        .fd = ci ? ci->connect_fd : -1,
    };
    lmf_http_response res = {0};
    s->handler(s->user, &req, &res);
    struct MHD_Response *r = make_response(&res);
    if (!r) return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)res.status, r);
    MHD_destroy_response(r);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
    lmf_http *s = cls;
    conn_ctx *cc = *con_cls;
    (void)conn, (void)why;
    if (!cc) return;
    free(cc->body);
    free(cc);
    *con_cls = NULL;
    pthread_mutex_lock(&s->mu);
    s->in_flight--;
    pthread_mutex_unlock(&s->mu);
}

int lmf_http_start(lmf_http **out, const lmf_http_config *c, lmf_http_handler h, void *user) {
    char port[16];
    snprintf(port, sizeof port, "%d", c->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
                    *ai = NULL;
    int gai = getaddrinfo(c->host, port, &hints, &ai);
    if (gai) return lmf_errorf(LMF_EINVAL, "API_HOST %s: %s", c->host, gai_strerror(gai));
    lmf_http *s = calloc(1, sizeof *s);
    if (!s) {
        freeaddrinfo(ai);
        return lmf_errorf(LMF_ENOMEM, "http: out of memory");
    }
    s->handler = h, s->user = user, s->max_body = c->max_body;
    pthread_mutex_init(&s->mu, NULL);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_POLL;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, (uint16_t)c->port, NULL, NULL, on_access, s,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)(c->max_connections > 0 ? c->max_connections : 256),
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return lmf_errorf(LMF_EIO,
                          "cannot listen on %s:%d (in use, or not an address of this "
                          "machine?)",
                          c->host, c->port);
    }
    *out = s;
    return 0;
}

void lmf_http_quiesce(lmf_http *s) {
    MHD_socket fd = MHD_quiesce_daemon(s->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

int lmf_http_in_flight(lmf_http *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->in_flight;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void lmf_http_stop(lmf_http *s) {
    if (!s) return;
    MHD_stop_daemon(s->d);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int lmf_http_bearer_ok(const char *key, const char *authorization) {
    if (!key || !key[0]) return 1;
    if (!authorization || strncmp(authorization, "Bearer ", 7)) return 0;
    const char *got = authorization + 7;
    size_t n = strlen(key), m = strlen(got);
    unsigned diff = n != m;
    for (size_t i = 0; i < n; i++) diff |= (unsigned)(key[i] ^ (i < m ? got[i] : 0));
    return diff == 0;
}
