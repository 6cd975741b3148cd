/* HTTP/1.1 client over POSIX sockets (see http_client.h). Non-blocking sockets waited on with
 * poll, so that every step has a deadline; the body is decoded from the read buffer by a small
 * state machine (chunked, Content-Length or until the connection closes). */
#include "http_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lmforge/core.h"
#include "lmforge/error.h"

enum { MAX_HEADER_BYTES = 64 * 1024 };

typedef enum body_mode { BODY_CHUNKED, BODY_LENGTH, BODY_CLOSE } body_mode;
typedef enum chunk_state { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE } chunk_state;

struct lmf_hc {
    int fd;
    char where[300]; /* "host:port" for messages */
    int status, retry_after;
    char content_type[128];
    body_mode mode;
    chunk_state cs;
    long long remaining; /* BODY_LENGTH: body bytes left; CH_DATA: chunk bytes left */
    char *buf;           /* received, not yet consumed: buf[pos, len) */
    size_t pos, len, cap;
    int eof, got_bytes, got_status, head_done;
};

int lmf_hc_parse_url(const char *url, lmf_hc_url *out) {
    memset(out, 0, sizeof *out);
    const char *p = url;
    if (!strncmp(p, "http://", 7))
        p += 7;
    else if (strstr(p, "://"))
        return lmf_errorf(LMF_EINVAL, "replica URL \"%s\": only http:// is supported", url);
    const char *host = p, *host_end, *colon;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(p, ']');
        if (!host_end) return lmf_errorf(LMF_EINVAL, "replica URL \"%s\": unclosed [", url);
        colon = host_end[1] == ':' ? host_end + 1 : NULL;
    } else {
        colon = strchr(p, ':');
        host_end = colon ? colon : p + strcspn(p, "/");
    }
    size_t hn = (size_t)(host_end - host);
    if (!hn || hn >= sizeof out->host)
        return lmf_errorf(LMF_EINVAL, "replica URL \"%s\": expected http://HOST:PORT", url);
    memcpy(out->host, host, hn);
    const char *port = colon ? colon + 1 : "80";
    size_t pn = strcspn(port, "/");
    char *end;
    long v = strtol(port, &end, 10);
    if (!pn || pn >= sizeof out->port || end != port + pn || v < 1 || v > 65535 ||
        (port[pn] && strcmp(port + pn, "/")))
        return lmf_errorf(LMF_EINVAL,
                          "replica URL \"%s\": expected http://HOST:PORT (a port in "
                          "1..65535 and no path)",
                          url);
    memcpy(out->port, port, pn);
    return 0;
}

static int wait_fd(int fd, short events, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = events};
    int r;
    do r = poll(&p, 1, timeout_ms < 0 ? -1 : timeout_ms);
    while (r < 0 && errno == EINTR);
    return r; /* > 0 ready, 0 timed out, < 0 error */
}

static int remaining_ms(double deadline) {
    double left = deadline - lmf_time_sec();
    return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

static int connect_to(lmf_hc *c, const lmf_hc_url *u, int timeout_ms) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(u->host, u->port, &hints, &ai);
    if (gai) return lmf_errorf(LMF_EIO, "%s: %s", c->where, gai_strerror(gai));
    double deadline = lmf_time_sec() + timeout_ms / 1000.0;
    int err = 0;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r < 0 && errno == EINPROGRESS) {
            int w = wait_fd(fd, POLLOUT, remaining_ms(deadline));
            socklen_t sl = sizeof err;
            if (w > 0 && !getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) && !err)
                r = 0;
            else if (w == 0)
                err = ETIMEDOUT;
        } else if (r < 0)
            err = errno;
        if (r == 0) {
            c->fd = fd;
            freeaddrinfo(ai);
            return 0;
        }
        close(fd);
    }
    freeaddrinfo(ai);
    return lmf_errorf(LMF_EIO, "%s: cannot connect: %s", c->where, strerror(err ? err : EIO));
}

static int send_all(lmf_hc *c, const char *p, size_t n, double deadline) {
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w, n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return lmf_errorf(LMF_EIO, "%s: sending the request: %s", c->where, strerror(errno));
        if (wait_fd(c->fd, POLLOUT, remaining_ms(deadline)) <= 0)
            return lmf_errorf(LMF_EIO, "%s: sending the request: timed out", c->where);
    }
    return 0;
}

/* Reads more into the buffer: > 0 bytes read, 0 at EOF, LMF_EIO, LMF_HC_WAIT. */
static ssize_t fill(lmf_hc *c, int timeout_ms) {
    if (c->eof) return 0;
    if (c->pos > 0 && c->pos == c->len) c->pos = c->len = 0;
    if (c->len == c->cap) {
        if (c->pos > 0) {
            memmove(c->buf, c->buf + c->pos, c->len - c->pos);
            c->len -= c->pos, c->pos = 0;
        } else {
            size_t cap = c->cap ? c->cap * 2 : 16384;
            char *nb = realloc(c->buf, cap);
            if (!nb) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", c->where);
            c->buf = nb, c->cap = cap;
        }
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r > 0) {
            c->len += (size_t)r;
            c->got_bytes = 1;
            return r;
        }
        if (r == 0) {
            c->eof = 1;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return lmf_errorf(LMF_EIO, "%s: %s", c->where, strerror(errno));
        int w = wait_fd(c->fd, POLLIN, timeout_ms);
        if (w == 0) return LMF_HC_WAIT;
        if (w < 0) return lmf_errorf(LMF_EIO, "%s: poll: %s", c->where, strerror(errno));
    }
}

/* The next CRLF-ended line in the buffer (its start; *n its length without CRLF), or NULL. */
static char *buffered_line(lmf_hc *c, size_t *n) {
    if (c->pos == c->len) return NULL;
    char *s = c->buf + c->pos, *e = memchr(s, '\n', c->len - c->pos);
    if (!e) return NULL;
    *n = (size_t)(e - s);
    if (*n && s[*n - 1] == '\r') --*n;
    return s;
}

static void header(lmf_hc *c, char *line, size_t n) {
    line[n] = 0;
    char *colon = strchr(line, ':');
    if (!colon) return;
    *colon = 0;
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    if (!strcasecmp(line, "Content-Type"))
        snprintf(c->content_type, sizeof c->content_type, "%s", v);
    else if (!strcasecmp(line, "Transfer-Encoding") && strstr(v, "chunked"))
        c->mode = BODY_CHUNKED;
    else if (!strcasecmp(line, "Content-Length") && c->mode != BODY_CHUNKED) {
        c->mode = BODY_LENGTH;
        c->remaining = atoll(v);
    } else if (!strcasecmp(line, "Retry-After"))
        c->retry_after = atoi(v);
}

int lmf_hc_read_head(lmf_hc *c, int timeout_ms) {
    while (!c->head_done) {
        size_t n;
        char *line = buffered_line(c, &n);
        if (!line) {
            if (c->len - c->pos > MAX_HEADER_BYTES)
                return lmf_errorf(LMF_EIO, "%s: response headers over %d bytes", c->where,
                                  MAX_HEADER_BYTES);
            ssize_t r = fill(c, timeout_ms);
            if (r == 0)
                return lmf_errorf(LMF_EIO, "%s: the connection closed before a response", c->where);
            if (r < 0) return (int)r; /* LMF_HC_WAIT too */
            continue;
        }
        char *next = (char *)memchr(line, '\n', c->len - c->pos) + 1;
        c->pos = (size_t)(next - c->buf);
        if (!c->got_status) {
            c->got_status = 1;
            if (n < 12 || strncmp(line, "HTTP/1.", 7) || line[8] != ' ')
                return lmf_errorf(LMF_EIO, "%s: not an HTTP/1.x response", c->where);
            c->status = atoi(line + 9);
            continue;
        }
        if (n == 0) {
            c->head_done = 1;
            if (c->mode == BODY_CHUNKED) c->cs = CH_SIZE;
            if (c->status == 204 || c->status == 304) c->mode = BODY_LENGTH, c->remaining = 0;
            break;
        }
        header(c, line, n);
    }
    return 0;
}

int lmf_hc_request_start(lmf_hc **out, const lmf_hc_url *u, const lmf_hc_request *r) {
    lmf_hc *c = calloc(1, sizeof *c);
    if (!c) return lmf_errorf(LMF_ENOMEM, "http client: out of memory");
    c->fd = -1;
    c->mode = BODY_CLOSE;
    snprintf(c->where, sizeof c->where, "%s:%s", u->host, u->port);
    int rc = connect_to(c, u, r->connect_timeout_ms);
    char *head = NULL;
    if (!rc) {
        size_t cap = 512 + strlen(r->method) + strlen(r->path) + strlen(u->host) +
                     (r->authorization ? strlen(r->authorization) : 0) +
                     (r->content_type ? strlen(r->content_type) : 0);
        head = malloc(cap);
        if (!head)
            rc = lmf_errorf(LMF_ENOMEM, "http client: out of memory");
        else {
            int n = snprintf(head, cap, "%s %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n",
                             r->method, r->path, u->host, u->port);
            if (r->authorization)
                n += snprintf(head + n, cap - (size_t)n, "Authorization: %s\r\n", r->authorization);
            if (r->content_type)
                n += snprintf(head + n, cap - (size_t)n, "Content-Type: %s\r\n", r->content_type);
            if (r->body)
                n += snprintf(head + n, cap - (size_t)n, "Content-Length: %zu\r\n", r->body_len);
            n += snprintf(head + n, cap - (size_t)n, "\r\n");
            double deadline = lmf_time_sec() + r->send_timeout_ms / 1000.0;
            rc = send_all(c, head, (size_t)n, deadline);
            if (!rc && r->body) rc = send_all(c, r->body, r->body_len, deadline);
        }
    }
    free(head);
    if (rc) {
        lmf_hc_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

int lmf_hc_got_bytes(const lmf_hc *c) {
    return c->got_bytes;
}

int lmf_hc_status(const lmf_hc *c) {
    return c->status;
}
const char *lmf_hc_content_type(const lmf_hc *c) {
    return c->content_type;
}
int lmf_hc_retry_after(const lmf_hc *c) {
    return c->retry_after;
}
int lmf_hc_fd(const lmf_hc *c) {
    return c->fd;
}

/* Copies up to max buffered bytes (at most limit) to buf. */
static size_t take(lmf_hc *c, char *buf, size_t max, long long limit) {
    size_t n = c->len - c->pos;
    if (n > max) n = max;
    if (limit >= 0 && (long long)n > limit) n = (size_t)limit;
    memcpy(buf, c->buf + c->pos, n);
    c->pos += n;
    return n;
}

static ssize_t read_chunked(lmf_hc *c, char *buf, size_t max, int timeout_ms) {
    for (;;) {
        if (c->cs == CH_DONE) return 0;
        if (c->cs == CH_DATA && c->pos < c->len) {
            size_t n = take(c, buf, max, c->remaining);
            if (!(c->remaining -= (long long)n)) c->cs = CH_DATA_END;
            return (ssize_t)n;
        }
        if (c->cs != CH_DATA) {
            size_t n;
            char *line = buffered_line(c, &n);
            if (line) {
                c->pos = (size_t)(line - c->buf) + n;
                while (c->buf[c->pos] != '\n') c->pos++;
                c->pos++;
                if (c->cs == CH_DATA_END) {
                    if (n) return lmf_errorf(LMF_EIO, "%s: bad chunk end", c->where);
                    c->cs = CH_SIZE;
                } else if (c->cs == CH_SIZE) {
                    char *end;
                    c->remaining = strtoll(line, &end, 16);
                    if (end == line || c->remaining < 0)
                        return lmf_errorf(LMF_EIO, "%s: bad chunk size line", c->where);
                    c->cs = c->remaining ? CH_DATA : CH_TRAILER;
                } else if (n == 0)
                    c->cs = CH_DONE; /* CH_TRAILER: an empty line ends it */
                continue;
            }
        }
        ssize_t r = fill(c, timeout_ms);
        if (r == 0)
            return lmf_errorf(LMF_EIO, "%s: the connection closed in the middle of the response",
                              c->where);
        if (r < 0) return r;
    }
}

ssize_t lmf_hc_read(lmf_hc *c, char *buf, size_t max, int timeout_ms) {
    if (c->mode == BODY_CHUNKED) return read_chunked(c, buf, max, timeout_ms);
    if (c->mode == BODY_LENGTH && c->remaining == 0) return 0;
    if (c->pos == c->len) {
        ssize_t r = fill(c, timeout_ms);
        if (r == 0 && c->mode == BODY_LENGTH)
            return lmf_errorf(LMF_EIO, "%s: the connection closed in the middle of the response",
                              c->where);
        if (r <= 0) return r;
    }
    size_t n = take(c, buf, max, c->mode == BODY_LENGTH ? c->remaining : -1);
    if (c->mode == BODY_LENGTH) c->remaining -= (long long)n;
    return (ssize_t)n;
}

int lmf_hc_read_all(lmf_hc *c, char **body, size_t *len, size_t max, int timeout_ms) {
    size_t n = 0, cap = 4096;
    char *b = malloc(cap);
    if (!b) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", c->where);
    double deadline = lmf_time_sec() + timeout_ms / 1000.0;
    for (;;) {
        if (cap - n < 2048) {
            char *nb = cap * 2 > max + 1 ? NULL : realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return lmf_errorf(LMF_EIO, "%s: response body over %zu bytes", c->where, max);
            }
            b = nb, cap *= 2;
        }
        ssize_t r = lmf_hc_read(c, b + n, cap - n - 1, remaining_ms(deadline));
        if (r == LMF_HC_WAIT) r = lmf_errorf(LMF_EIO, "%s: response timed out", c->where);
        if (r < 0) {
            free(b);
            return (int)r;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    b[n] = 0;
    *body = b, *len = n;
    return 0;
}

void lmf_hc_close(lmf_hc *c) {
    if (!c) return;
    if (c->fd >= 0) close(c->fd);
    free(c->buf);
    free(c);
}

int lmf_hc_fetch(const lmf_hc_url *u, const lmf_hc_request *r, int timeout_ms, int *status,
                 char **body, size_t *len, size_t max) {
    lmf_hc *c;
    *body = NULL, *len = 0;
    int rc = lmf_hc_request_start(&c, u, r);
    if (rc) return rc;
    rc = lmf_hc_read_head(c, timeout_ms);
    if (rc == LMF_HC_WAIT)
        rc = lmf_errorf(LMF_EIO, "%s: no response in %d ms", c->where, timeout_ms);
    *status = c->status;
    if (!rc) rc = lmf_hc_read_all(c, body, len, max, timeout_ms);
    lmf_hc_close(c);
    return rc;
}
