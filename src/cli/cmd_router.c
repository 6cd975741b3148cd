/* lmforge router [CONFIG.yaml] [--replicas URL,URL,...] [--host H] [--port P]
 * [--policy least|prefix] [--health-interval S] [key=value ...]: one OpenAI-compatible endpoint
 * in front of `lmforge api` replicas (include/lmforge/router.h). Flags win over the config's
 * router_* keys, which win over API_HOST / API_PORT (API_KEY wins over api_key, as in api). SIGINT
 * or SIGTERM stop accepting, let in-flight requests and streams finish, and exit 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "lmforge/core.h"
#include "lmforge/error.h"
#include "lmforge/router.h"

enum { DRAIN_SECONDS = 60 };

int lmf_cli_router_replicas(lmf_router_config *rc, const char *list, char **storage) {
    free(*storage);
    *storage = lmf_strdup(list);
    if (!*storage) return lmf_errorf(LMF_ENOMEM, "out of memory");
    rc->n_replicas = 0;
    char *save = NULL;
    for (char *u = strtok_r(*storage, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
        while (*u == ' ') u++;
        if (!*u) continue;
        if (rc->n_replicas == LMF_ROUTER_MAX_REPLICAS)
            return lmf_errorf(LMF_EINVAL, "router replicas: more than %d", LMF_ROUTER_MAX_REPLICAS);
        rc->replicas[rc->n_replicas++] = u;
    }
    if (!rc->n_replicas)
        return lmf_errorf(LMF_EINVAL, "router replicas \"%s\": expected http://host:port,...",
                          list);
    return 0;
}

int lmf_cli_router_config(const lmf_config *cfg, lmf_router_config *rc, char **storage) {
    lmf_router_config_defaults(rc);
    const char *where = cfg->path ? cfg->path : "router";
    int e = lmf_cli_api_env(cfg, 1, &rc->host, &rc->port, &rc->api_key);
    if (e) return e;
    if (lmf_config_str(cfg, "router_host")) rc->host = lmf_config_str(cfg, "router_host");
    if (lmf_config_is_set(cfg, "router_port")) rc->port = (int)lmf_config_int(cfg, "router_port");
    e = lmf_router_policy_parse(lmf_config_str(cfg, "router_policy"), &rc->policy);
    if (e) return lmf_error_prefix(e, "%s: router_policy", where);
    rc->health_interval = lmf_config_float(cfg, "router_health_interval");
    rc->health_failures = (int)lmf_config_int(cfg, "router_health_failures");
    rc->prefix_chars = (int)lmf_config_int(cfg, "router_prefix_chars");
    rc->request_timeout_s = (int)lmf_config_int(cfg, "router_request_timeout");
    rc->max_connections = (int)lmf_config_int(cfg, "router_max_connections");
    rc->max_body_bytes = (size_t)lmf_config_int(cfg, "max_request_bytes");
    const char *list = lmf_config_str(cfg, "router_replicas");
    if (list && (e = lmf_cli_router_replicas(rc, list, storage)))
        return lmf_error_prefix(e, "%s: router_replicas", where);
    return 0;
}

int lmf_cli_router_start(const lmf_router_config *rc, lmf_router **out) {
    lmf_router *r = NULL;
    int e = lmf_router_start(&r, rc);
    if (e) return e;
    *out = r;
    printf("lmforge router: listening on http://%s:%d, %d replica(s), policy %s, health checks "
           "every %g s%s\n",
           rc->host, rc->port, rc->n_replicas, rc->policy == LMF_ROUTE_PREFIX ? "prefix" : "least",
           rc->health_interval, rc->api_key && rc->api_key[0] ? ", API key required" : "");
    for (int i = 0; i < rc->n_replicas; i++) printf("  replica %d: %s\n", i, rc->replicas[i]);
    fflush(stdout);
    return 0;
}

static int usage(int rc) {
    fprintf(
        rc ? stderr : stdout,
        "usage: lmforge router [CONFIG.yaml] [--replicas URL,URL,...] [--host H] [--port P]\n"
        "                      [--policy least|prefix] [--health-interval S] [key=value ...]\n\n"
        "Routes OpenAI API requests to `lmforge api` replicas: least outstanding requests\n"
        "(or prefix affinity), health checks on GET /health with ejection and re-admission,\n"
        "retries before the first byte, SSE passed through. Config keys: router_replicas,\n"
        "router_policy, router_health_interval, router_health_failures, router_prefix_chars,\n"
        "router_request_timeout, router_max_connections, router_host, router_port, api_key.\n"
        "Environment: API_HOST, API_PORT (8000), API_KEY.\n");
    return rc;
}

int lmf_cmd_router(int argc, char **argv) {
    const char *path = NULL, *replicas = NULL, *host = NULL, *port = NULL, *policy = NULL,
               *interval = NULL;
    char **ov = calloc((size_t)argc + 1, sizeof *ov);
    int n_ov = 0;
    if (!ov) return lmf_cli_fail("router", lmf_errorf(LMF_ENOMEM, "out of memory"));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], **dst = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            free(ov);
            return usage(0);
        }
        if (!strcmp(a, "--replicas"))
            dst = &replicas;
        else if (!strcmp(a, "--host"))
            dst = &host;
        else if (!strcmp(a, "--port"))
            dst = &port;
        else if (!strcmp(a, "--policy"))
            dst = &policy;
        else if (!strcmp(a, "--health-interval"))
            dst = &interval;
        if (dst) {
            if (!(*dst = lmf_cli_value(argc, argv, &i, "router"))) {
                free(ov);
                return 2;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "lmforge router: unknown option %s\n\n", a);
            free(ov);
            return usage(2);
        } else if (strchr(a, '='))
            ov[n_ov++] = argv[i];
        else if (!path)
            path = a;
        else {
            fprintf(stderr, "lmforge router: a second config file \"%s\"\n\n", a);
            free(ov);
            return usage(2);
        }
    }
    lmf_config cfg;
    int rc = lmf_config_load(&cfg, path, ov, n_ov);
    free(ov);
    if (rc) return lmf_cli_fail("router", rc);
    lmf_router_config c;
    char *storage = NULL;
    lmf_router *r = NULL;
    rc = lmf_cli_router_config(&cfg, &c, &storage);
    if (!rc && replicas) rc = lmf_cli_router_replicas(&c, replicas, &storage);
    if (!rc && host) c.host = host;
    long long v;
    if (!rc && port && !(rc = lmf_cli_int(port, "--port", 1, 65535, &v))) c.port = (int)v;
    if (!rc && policy) rc = lmf_router_policy_parse(policy, &c.policy);
    if (!rc && interval) {
        char *end;
        c.health_interval = strtod(interval, &end);
        if (!*interval || *end)
            rc =
                lmf_errorf(LMF_EINVAL, "--health-interval: expected seconds, got \"%s\"", interval);
    }
    sigset_t sigs;
    lmf_cli_block_stop_signals(&sigs);
    if (!rc) rc = lmf_cli_router_start(&c, &r);
    if (!rc) {
        int sig = 0;
        sigwait(&sigs, &sig);
        printf("lmforge router: %s: finishing in-flight requests, then exiting\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
        fflush(stdout);
        lmf_router_shutdown(r, DRAIN_SECONDS);
    }
    lmf_router_free(r);
    free(storage);
    lmf_config_free(&cfg);
    return lmf_cli_fail("router", rc);
}
