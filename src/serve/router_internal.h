/* What the router's files share: the router state (router.c: life cycle, health checks, the
 * small endpoints), the replica choice (router_policy.c), the proxy (router_proxy.c) and the
 * metrics (router_metrics.c). */
#ifndef LMF_SERVE_ROUTER_INTERNAL_H
#define LMF_SERVE_ROUTER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "http.h"
#include "http_client.h"
#include "lmforge/router.h"

typedef struct router_replica {
    char *url; /* as configured, owned */
    lmf_hc_url u;
    atomic_int healthy;     /* routable now */
    atomic_int outstanding; /* requests sent to it and not finished */
    int fails;              /* consecutive failed health checks (health thread only) */
    atomic_llong routed, failures, ejections, stream_errors;
} router_replica;

struct lmf_router {
    lmf_router_config c; /* strings owned */
    router_replica rep[LMF_ROUTER_MAX_REPLICAS];
    int n;
    lmf_http *http;
    pthread_mutex_t pick_mu; /* choice + outstanding++ as one step */
    unsigned rr;             /* rotates the start among equal choices (under pick_mu) */
    pthread_mutex_t health_mu;
    pthread_cond_t health_cv;
    int health_stop; /* under health_mu */
    pthread_t health_thread;
    int health_started;
    atomic_int draining;
    /* counters of the router itself */
    atomic_llong http_class[6]; /* responses by status class: [2] 2xx ... [5] 5xx */
    atomic_llong retries;       /* requests sent again to another replica */
    atomic_llong no_replica;    /* requests refused because no replica could take them */
};

/* The choice among replicas: v[i].healthy / .outstanding; tried[i] excludes i. LEAST picks the
 * healthy untried replica with the fewest outstanding requests (ties: the first at or after
 * start, cyclically); PREFIX picks the replica of highest rendezvous weight for key among all
 * n when it is healthy and untried, else as LEAST. -1 when none qualifies. */
typedef struct lmf_route_view {
    int healthy, outstanding;
} lmf_route_view;
int lmf_router_choose(const lmf_route_view *v, int n, lmf_router_policy p, uint64_t key,
                      const unsigned char *tried, unsigned start);
/* The prefix key of a chat or completions body: FNV-1a of the model name and the first
 * max_chars characters of the messages (role and content) or of the prompt (text or ids).
 * 0 when the body is not such JSON. */
uint64_t lmf_router_prefix_key(const char *body, size_t len, int max_chars);

/* Picks a replica for a request (outstanding++), -1 when none; release with router_release. */
int lmf_router_acquire(lmf_router *r, uint64_t key, int use_key, const unsigned char *tried);
void lmf_router_release(lmf_router *r, int i);
/* Marks replica i unreachable (a request could not reach it): out of rotation until a health
 * check passes. */
void lmf_router_eject(lmf_router *r, int i, const char *why);

/* POST /v1/chat/completions, /v1/completions, /tokenize, /detokenize: forwarded. */
void lmf_router_proxy(lmf_router *r, const lmf_http_request *req, lmf_http_response *res,
                      int prefix_route);
/* GET /metrics: the router's counters and every healthy replica's metrics labelled by replica
 * (malloc'd). */
char *lmf_router_metrics_render(lmf_router *r);
/* An OpenAI error object response. */
void lmf_router_error(lmf_http_response *res, int status, const char *type, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
