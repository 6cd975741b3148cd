/* GET /metrics of the router in Prometheus' text format: its own counters and gauges per
 * replica (healthy, outstanding, routed, failures, ejections, stream errors), then every healthy
 * replica's own exposition with a replica="URL" label added to each sample. Samples of one
 * metric family from all replicas are grouped under a single # HELP / # TYPE, as the format
 * requires. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "router_internal.h"

enum { MAX_FAMILIES = 512 };

typedef struct family {
    char name[128];
    char *help, *type; /* whole lines, from the first replica that gave them */
    lmf_strbuf samples;
} family;

typedef struct families {
    family f[MAX_FAMILIES];
    int n;
} families;

static family *find(families *fs, const char *name, size_t n) {
    if (n >= sizeof fs->f[0].name) n = sizeof fs->f[0].name - 1;
    for (int i = 0; i < fs->n; i++)
        if (strlen(fs->f[i].name) == n && !strncmp(fs->f[i].name, name, n)) return &fs->f[i];
    if (fs->n == MAX_FAMILIES) return NULL;
    family *f = &fs->f[fs->n++];
    memcpy(f->name, name, n);
    f->name[n] = 0;
    return f;
}

/* Histogram and summary samples (x_bucket, x_sum, x_count) belong to family x when x is known. */
static family *sample_family(families *fs, const char *line, size_t n, family *cur) {
    if (cur) {
        size_t k = strlen(cur->name);
        if (n >= k && !strncmp(line, cur->name, k) && (n == k || line[k] == '_')) return cur;
    }
    return find(fs, line, n);
}

static void add_exposition(families *fs, const char *url, const char *body) {
    family *cur = NULL;
    for (const char *p = body; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 7 && (!strncmp(p, "# HELP ", 7) || !strncmp(p, "# TYPE ", 7))) {
            const char *name = p + 7;
            size_t nn = strcspn(name, " \n");
            cur = find(fs, name, nn);
            char **slot = cur ? (p[2] == 'H' ? &cur->help : &cur->type) : NULL;
            if (slot && !*slot && (*slot = malloc(len + 1))) {
                memcpy(*slot, p, len);
                (*slot)[len] = 0;
            }
        } else if (len && p[0] != '#') {
            size_t nn = strcspn(p, "{ \n");
            family *f = sample_family(fs, p, nn, cur);
            if (f) {
                if (p[nn] == '{')
                    lmf_strbuf_printf(&f->samples, "%.*s{replica=\"%s\",%.*s\n", (int)nn, p, url,
                                      (int)(len - nn - 1), p + nn + 1);
                else
                    lmf_strbuf_printf(&f->samples, "%.*s{replica=\"%s\"}%.*s\n", (int)nn, p, url,
                                      (int)(len - nn), p + nn);
            }
        }
        p += len + (e ? 1 : 0);
    }
}

static void own(lmf_router *r, lmf_strbuf *t) {
    static const struct {
        const char *name, *type, *help;
    } m[] = {
        {"lmforge_router_replica_healthy", "gauge", "1 while the replica is in rotation"},
        {"lmforge_router_replica_outstanding", "gauge", "requests in flight on the replica"},
        {"lmforge_router_requests_routed_total", "counter", "requests sent to the replica"},
        {"lmforge_router_replica_failures_total", "counter",
         "requests or health checks that could not reach the replica"},
        {"lmforge_router_replica_ejections_total", "counter", "times taken out of rotation"},
        {"lmforge_router_stream_errors_total", "counter",
         "streams ended with an error event because the replica failed mid-stream"},
    };
    for (size_t k = 0; k < sizeof m / sizeof *m; k++) {
        lmf_strbuf_printf(t, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name,
                          m[k].type);
        for (int i = 0; i < r->n; i++) {
            router_replica *p = &r->rep[i];
            long long v = k == 0   ? atomic_load(&p->healthy)
                          : k == 1 ? atomic_load(&p->outstanding)
                          : k == 2 ? atomic_load(&p->routed)
                          : k == 3 ? atomic_load(&p->failures)
                          : k == 4 ? atomic_load(&p->ejections)
                                   : atomic_load(&p->stream_errors);
            lmf_strbuf_printf(t, "%s{replica=\"%s\"} %lld\n", m[k].name, p->url, v);
        }
    }
    lmf_strbuf_printf(
        t,
        "# HELP lmforge_router_retries_total requests sent again to another replica\n"
        "# TYPE lmforge_router_retries_total counter\nlmforge_router_retries_total %lld\n",
        (long long)atomic_load(&r->retries));
    lmf_strbuf_printf(
        t,
        "# HELP lmforge_router_no_replica_total requests refused: no replica could take them\n"
        "# TYPE lmforge_router_no_replica_total counter\nlmforge_router_no_replica_total %lld\n",
        (long long)atomic_load(&r->no_replica));
    lmf_strbuf_printf(
        t, "# HELP lmforge_router_http_responses_total responses of the router by status class\n"
           "# TYPE lmforge_router_http_responses_total counter\n");
    for (int c = 2; c <= 5; c++)
        lmf_strbuf_printf(t, "lmforge_router_http_responses_total{class=\"%dxx\"} %lld\n", c,
                          (long long)atomic_load(&r->http_class[c]));
}

char *lmf_router_metrics_render(lmf_router *r) {
    lmf_strbuf t = {0};
    own(r, &t);
    families *fs = calloc(1, sizeof *fs);
    if (!fs) {
        free(t.s);
        return NULL;
    }
    for (int i = 0; i < r->n; i++) {
        if (!atomic_load(&r->rep[i].healthy)) continue;
        lmf_hc_request q = {.method = "GET",
                            .path = "/metrics",
                            .connect_timeout_ms = r->c.connect_timeout_ms,
                            .send_timeout_ms = 2000};
        int status = 0;
        char *body = NULL;
        size_t len;
        if (!lmf_hc_fetch(&r->rep[i].u, &q, 5000, &status, &body, &len, 8 << 20) && status == 200)
            add_exposition(fs, r->rep[i].url, body);
        free(body);
    }
    for (int i = 0; i < fs->n; i++) {
        family *f = &fs->f[i];
        if (f->help) lmf_strbuf_printf(&t, "%s\n", f->help);
        if (f->type) lmf_strbuf_printf(&t, "%s\n", f->type);
        if (f->samples.s) lmf_strbuf_printf(&t, "%s", f->samples.s);
        free(f->help), free(f->type), free(f->samples.s);
    }
    free(fs);
    return lmf_strbuf_take(&t);
}
