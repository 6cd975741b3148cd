/* The data-parallel router (`lmforge router`): one OpenAI-compatible endpoint in front of N
 * `lmforge api` replicas. It proxies POST /v1/chat/completions, /v1/completions, /tokenize,
 * /detokenize and GET /v1/models, choosing a replica per request (least outstanding requests,
 * or prefix affinity so that requests sharing a prompt prefix reuse one replica's KV cache),
 * health-checks every replica (GET /health) to eject and re-admit them, retries a request on
 * another replica while nothing has been sent to the client, and passes server-sent events on
 * as they arrive. /health, /metrics and /v1/models answer for the whole set.
 *
 * Life cycle: lmf_router_start listens and starts the health checker; lmf_router_shutdown stops
 * accepting and lets in-flight requests and streams finish; lmf_router_free releases it. */
#ifndef LMFORGE_ROUTER_H
#define LMFORGE_ROUTER_H

#include <stddef.h>

#define LMF_ROUTER_MAX_REPLICAS 64

typedef enum lmf_router_policy {
    LMF_ROUTE_LEAST = 0, /* the healthy replica with the fewest requests in flight */
    LMF_ROUTE_PREFIX = 1 /* rendezvous hash of the prompt's first characters, else LEAST */
} lmf_router_policy;

typedef struct lmf_router_config {
    const char *host;                              /* default "127.0.0.1" */
    int port;                                      /* default 8000 */
    const char *replicas[LMF_ROUTER_MAX_REPLICAS]; /* "http://host:port" */
    int n_replicas;
    lmf_router_policy policy;
    double health_interval; /* seconds between health checks of each replica */
    int health_failures;    /* consecutive failed checks that eject a replica */
    int prefix_chars;       /* prefix policy: leading characters of the prompt hashed */
    const char *api_key;    /* NULL or "": clients are not checked here (replicas may still) */
    size_t max_body_bytes;  /* larger request bodies get 413 */
    int max_connections;    /* client connections at once (bounded concurrency) */
    int connect_timeout_ms; /* connecting to a replica */
    int request_timeout_s;  /* the longest a replica may take to answer one request */
} lmf_router_config;

typedef struct lmf_router lmf_router;

void lmf_router_config_defaults(lmf_router_config *c);
/* Parses "least" / "prefix"; LMF_EINVAL naming the value otherwise. */
int lmf_router_policy_parse(const char *s, lmf_router_policy *out);
/* Validates the config (URLs, ranges), listens on host:port and starts health checks. */
int lmf_router_start(lmf_router **out, const lmf_router_config *c);
/* Healthy replicas now. */
int lmf_router_healthy(lmf_router *r);
/* Stops accepting connections and waits up to drain_seconds for in-flight requests. */
void lmf_router_shutdown(lmf_router *r, double drain_seconds);
void lmf_router_free(lmf_router *r);

#endif
