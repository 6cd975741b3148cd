/* The router's pure parts and its HTTP client: replica choice (least outstanding with tried
 * replicas excluded, prefix affinity that keeps a key on one replica and falls back when it is
 * unhealthy), prefix keys (same prefix -> same key, past max_chars ignored), URL parsing, and the
 * client reading a chunked response that a local socket server sends in awkward pieces (chunk
 * sizes split across writes, a chunk extension, trailers) plus a Content-Length one and a
 * connection cut mid-chunk; expected bodies written by hand. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lmforge/error.h"
#include "serve/http_client.h"
#include "serve/router_internal.h"
#include "test.h"

static void test_choose(void) {
    lmf_route_view v[3] = {{1, 2}, {1, 0}, {1, 1}};
    CHECK(lmf_router_choose(v, 3, LMF_ROUTE_LEAST, 0, NULL, 0) == 1);
    unsigned char tried[3] = {0, 1, 0};
    CHECK(lmf_router_choose(v, 3, LMF_ROUTE_LEAST, 0, tried, 0) == 2);
    v[2].healthy = 0;
    CHECK(lmf_router_choose(v, 3, LMF_ROUTE_LEAST, 0, tried, 0) == 0);
    tried[0] = 1;
    CHECK(lmf_router_choose(v, 3, LMF_ROUTE_LEAST, 0, tried, 0) == -1);
    /* ties rotate with start */
    lmf_route_view eq[2] = {{1, 0}, {1, 0}};
    CHECK(lmf_router_choose(eq, 2, LMF_ROUTE_LEAST, 0, NULL, 0) == 0);
    CHECK(lmf_router_choose(eq, 2, LMF_ROUTE_LEAST, 0, NULL, 1) == 1);
    /* prefix: the same key always picks the same replica whatever the load ... */
    lmf_route_view p[4] = {{1, 0}, {1, 5}, {1, 9}, {1, 3}};
    int hits[4] = {0};
    for (uint64_t key = 1; key <= 400; key++) {
        int a = lmf_router_choose(p, 4, LMF_ROUTE_PREFIX, key * 0x9e3779b9ull, NULL, 0);
        int b = lmf_router_choose(p, 4, LMF_ROUTE_PREFIX, key * 0x9e3779b9ull, NULL, 3);
        CHECK(a == b && a >= 0);
        if (a >= 0) hits[a]++;
        /* ... and when that replica is unhealthy, the least loaded of the rest */
        lmf_route_view q[4];
        memcpy(q, p, sizeof q);
        q[a].healthy = 0;
        int c = lmf_router_choose(q, 4, LMF_ROUTE_PREFIX, key * 0x9e3779b9ull, NULL, 0);
        CHECK(c == (a == 0 ? 3 : 0));
    }
    for (int i = 0; i < 4; i++)
        CHECK_MSG(hits[i] > 60, "replica %d got %d of 400 keys", i, hits[i]);
}

static uint64_t key_of(const char *json, int max_chars) {
    return lmf_router_prefix_key(json, strlen(json), max_chars);
}

static void test_prefix_key(void) {
    const char *a =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"0123456789\"},"
        "{\"role\":\"user\",\"content\":\"first\"}]}";
    const char *b =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"0123456789\"},"
        "{\"role\":\"user\",\"content\":\"second\"}],\"max_tokens\":3}";
    const char *c = "{\"model\":\"other\",\"messages\":[{\"role\":\"system\",\"content\":"
                    "\"0123456789\"}]}";
    /* "system" + sep + 10 characters = 17: both bodies agree on their first 17 characters */
    CHECK(key_of(a, 17) == key_of(b, 17));
    CHECK(key_of(a, 40) != key_of(b, 40));
    CHECK(key_of(a, 17) != key_of(c, 17)); /* the model is part of the key */
    CHECK(key_of("{\"prompt\":\"abcdef\"}", 4) == key_of("{\"prompt\":\"abcdXY\"}", 4));
    CHECK(key_of("{\"prompt\":[1,2,3,4]}", 4) == key_of("{\"prompt\":[1,2,9]}", 4));
    CHECK(key_of("{\"prompt\":[1,2,3,4]}", 6) != key_of("{\"prompt\":[1,2,9]}", 6));
    CHECK(key_of("not json", 10) == 0);
    CHECK(key_of("{\"prompt\":\"x\"}", 10) != 0);
}

static void test_url(void) {
    lmf_hc_url u;
    CHECK(lmf_hc_parse_url("http://10.77.0.2:8001", &u) == 0 && !strcmp(u.host, "10.77.0.2") &&
          !strcmp(u.port, "8001"));
    CHECK(lmf_hc_parse_url("localhost:9/", &u) == 0 && !strcmp(u.host, "localhost") &&
          !strcmp(u.port, "9"));
    CHECK(lmf_hc_parse_url("http://[::1]:80", &u) == 0 && !strcmp(u.host, "::1"));
    CHECK(lmf_hc_parse_url("https://x:1", &u) != 0);
    CHECK(lmf_hc_parse_url("http://x:99999", &u) != 0);
    CHECK(lmf_hc_parse_url("http://x:1/v1", &u) != 0);
    CHECK(lmf_hc_parse_url("http://:1", &u) != 0);
}

/* A one-shot server: accepts one connection, reads the request head, writes pieces[] with
 * short pauses, closes. */
typedef struct server {
    int lfd;
    const char *const *pieces;
    char request[2048];
} server;

static void *serve_once(void *arg) {
    server *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    size_t n = 0;
    while (n < sizeof s->request - 1 && !strstr(s->request, "\r\n\r\n{}")) { /* head and body */
        ssize_t r = read(fd, s->request + n, sizeof s->request - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        s->request[n] = 0;
    }
    for (int i = 0; s->pieces[i]; i++) {
        if (write(fd, s->pieces[i], strlen(s->pieces[i])) < 0) break;
        usleep(2000);
    }
    close(fd);
    return NULL;
}

/* Runs the server with pieces, GETs /x, reads the body in reads of at most step bytes. */
static int fetch(const char *const *pieces, size_t step, int *status, char *body, size_t cap,
                 char *request) {
    server s = {.pieces = pieces};
    s.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(s.lfd, (struct sockaddr *)&a, sizeof a) || listen(s.lfd, 1) ||
        getsockname(s.lfd, (struct sockaddr *)&a, &al))
        return -100;
    pthread_t t;
    pthread_create(&t, NULL, serve_once, &s);
    lmf_hc_url u;
    snprintf(u.host, sizeof u.host, "127.0.0.1");
    snprintf(u.port, sizeof u.port, "%d", ntohs(a.sin_port));
    lmf_hc_request q = {.method = "POST",
                        .path = "/x",
                        .authorization = "Bearer k",
                        .content_type = "application/json",
                        .body = "{}",
                        .body_len = 2,
                        .connect_timeout_ms = 2000,
                        .send_timeout_ms = 2000};
    lmf_hc *c = NULL;
    int rc = lmf_hc_request_start(&c, &u, &q);
    while (!rc && (rc = lmf_hc_read_head(c, 2000)) == LMF_HC_WAIT) {
    }
    size_t n = 0;
    if (!rc) {
        *status = lmf_hc_status(c);
        for (;;) {
            ssize_t r = lmf_hc_read(c, body + n, step < cap - n - 1 ? step : cap - n - 1, 2000);
            if (r == LMF_HC_WAIT) continue;
            if (r <= 0) {
                rc = (int)r;
                break;
            }
            n += (size_t)r;
        }
    }
    body[n] = 0;
    lmf_hc_close(c);
    pthread_join(t, NULL);
    close(s.lfd);
    strcpy(request, s.request);
    return rc;
}

static void test_client(void) {
    char body[256], req[2048];
    int status = 0;
    const char *chunked[] = {"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Enc",
                             "oding: chunked\r\n\r\n1",
                             "0;ext=1\r\ndata: one-----\n\n\r\n9\r\ndat",
                             "a: t",
                             "wo\r\n0\r\nX-Trailer: y\r\n\r\n",
                             NULL};
    int rc = fetch(chunked, 5, &status, body, sizeof body, req);
    CHECK_MSG(rc == 0 && status == 200 && !strcmp(body, "data: one-----\n\ndata: two"),
              "rc %d status %d body \"%s\" (%s)", rc, status, body, lmf_last_error());
    CHECK(strstr(req, "POST /x HTTP/1.1\r\n") && strstr(req, "Authorization: Bearer k\r\n") &&
          strstr(req, "Content-Length: 2\r\n"));
    const char *sized[] = {"HTTP/1.1 429 Too Many\r\nContent-Length: 5\r\nRetry-After: 3\r\n\r\nab",
                           "cde", NULL};
    rc = fetch(sized, 100, &status, body, sizeof body, req);
    CHECK_MSG(rc == 0 && status == 429 && !strcmp(body, "abcde"), "rc %d body \"%s\"", rc, body);
    const char *cut[] = {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly part",
                         NULL};
    rc = fetch(cut, 100, &status, body, sizeof body, req);
    CHECK_MSG(rc < 0 && !strcmp(body, "only part"), "rc %d body \"%s\"", rc, body);
    const char *none[] = {NULL}; /* closed before any response: an error, nothing received */
    rc = fetch(none, 100, &status, body, sizeof body, req);
    CHECK(rc < 0);
}

int main(void) {
    test_choose();
    test_prefix_key();
    test_url();
    test_client();
    return test_summary("test_router_parts");
}
