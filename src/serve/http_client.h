/* A small HTTP/1.1 client over POSIX sockets, for the router: one request per connection
 * (Connection: close), connect with a timeout, the response's status and headers read whole,
 * then its body read as it arrives (chunked transfer decoded), so that a stream of server-sent
 * events can be passed on piece by piece. Blocking calls wait at most a given time; the caller
 * polls lmf_hc_fd to wait on several things at once. */
#ifndef LMF_SERVE_HTTP_CLIENT_H
#define LMF_SERVE_HTTP_CLIENT_H

#include <stddef.h>
#include <sys/types.h>

/* "http://host:port[/]" (host may be a name, an IPv4 address or [IPv6]). */
typedef struct lmf_hc_url {
    char host[256];
    char port[8];
} lmf_hc_url;

/* 0, or LMF_EINVAL with a message naming url. */
int lmf_hc_parse_url(const char *url, lmf_hc_url *out);

typedef struct lmf_hc_request {
    const char *method, *path;
    const char *authorization; /* NULL: none */
    const char *content_type;  /* NULL: none */
    const char *body;          /* NULL: no body */
    size_t body_len;
    int connect_timeout_ms; /* connecting */
    int send_timeout_ms;    /* sending the request */
} lmf_hc_request;

typedef struct lmf_hc lmf_hc;

/* Connects and sends the request. 0 with *out set, or a negative code with a message naming
 * the URL (nothing of a response was received: the request may be sent elsewhere). */
int lmf_hc_request_start(lmf_hc **out, const lmf_hc_url *u, const lmf_hc_request *r);
/* Reads the status line and headers: 0 when they are complete, LMF_HC_WAIT when they did not
 * come within timeout_ms (call again), or LMF_EIO (closed or not HTTP; the message says). */
int lmf_hc_read_head(lmf_hc *c, int timeout_ms);
/* 1 once any byte of the response has been received. */
int lmf_hc_got_bytes(const lmf_hc *c);
int lmf_hc_status(const lmf_hc *c);
/* The Content-Type header ("" when absent); Retry-After in seconds (0 when absent). */
const char *lmf_hc_content_type(const lmf_hc *c);
int lmf_hc_retry_after(const lmf_hc *c);
/* The socket, to poll for readability before lmf_hc_read. */
int lmf_hc_fd(const lmf_hc *c);
/* Body bytes (chunked encoding removed): > 0 bytes, 0 at the end of the body, LMF_EIO when the
 * connection failed or the framing is broken (the message names the URL), LMF_HC_WAIT when no
 * data arrived within timeout_ms (call again). */
#define LMF_HC_WAIT (-1000)
ssize_t lmf_hc_read(lmf_hc *c, char *buf, size_t max, int timeout_ms);
/* The whole body (NUL-terminated, malloc'd), at most max bytes; waits at most timeout_ms. */
int lmf_hc_read_all(lmf_hc *c, char **body, size_t *len, size_t max, int timeout_ms);
void lmf_hc_close(lmf_hc *c);

/* A request in one call: status and whole body (malloc'd; NULL on failure), all within
 * timeout_ms after connecting. */
int lmf_hc_fetch(const lmf_hc_url *u, const lmf_hc_request *r, int timeout_ms, int *status,
                 char **body, size_t *len, size_t max);

#endif
