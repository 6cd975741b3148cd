/* The HTTP layer of the server, over libmicrohttpd with one thread per connection: it reads a
 * request (its body up to a size limit, past which the body is dropped and the handler is
 * told to answer 413), hands it to one handler function, and sends back either a whole body or a
 * stream pulled from a callback (server-sent events), which may block for the next event. Knows
 * nothing about OpenAI or the engine. */
#ifndef LMF_SERVE_HTTP_H
#define LMF_SERVE_HTTP_H

#include <stddef.h>
#include <sys/types.h>

typedef struct lmf_http lmf_http;

typedef struct lmf_http_request {
    const char *method, *path;
    const char *authorization; /* the Authorization header, or NULL */
    const char *body;          /* NUL-terminated */
    size_t body_len;
    int body_too_large; /* the body passed the limit and was dropped: answer 413 */
    int fd; /* the client's socket, to notice a client that went away (lmf_http_client_gone) */
} lmf_http_request;

/* Fills buf with up to max bytes of the stream: > 0 bytes written, 0 at the end, < 0 to abort
 * the connection (the client went away). Called on the connection's thread; may block. */
typedef ssize_t (*lmf_http_pull)(void *ctx, char *buf, size_t max);

typedef struct lmf_http_response {
    int status;
    const char *content_type; /* static */
    char *body;               /* malloc'd, taken over; NULL for an empty body or a stream */
    size_t body_len;
    int retry_after;              /* > 0: Retry-After header (seconds) */
    int allow_get, allow_post;    /* 405: the Allow header */
    lmf_http_pull pull;           /* non-NULL: a streamed body */
    void (*pull_free)(void *ctx); /* called once when the stream ends or the client is gone */
    void *pull_ctx;
} lmf_http_response;

typedef void (*lmf_http_handler)(void *user, const lmf_http_request *req, lmf_http_response *res);

typedef struct lmf_http_config {
    const char *host; /* "127.0.0.1", "0.0.0.0", "::" ... */
    int port;
    size_t max_body; /* bytes; a longer body gets 413 */
    int max_connections;
} lmf_http_config;

/* Starts listening; the handler runs on connection threads. Errors name host:port. */
int lmf_http_start(lmf_http **out, const lmf_http_config *c, lmf_http_handler h, void *user);
/* Stops accepting new connections (open ones go on). */
void lmf_http_quiesce(lmf_http *s);
/* Requests being handled or streamed now. */
int lmf_http_in_flight(lmf_http *s);
/* Closes everything and frees the server. */
void lmf_http_stop(lmf_http *s);
/* 1 when the peer of socket fd has closed its side or the socket failed. */
int lmf_http_client_gone(int fd);
/* 1 when no key is required (key NULL or "") or the Authorization header is "Bearer <key>";
 * compared in time independent of where the first difference lies. */
int lmf_http_bearer_ok(const char *key, const char *authorization);

#endif
