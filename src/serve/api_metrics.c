/* Prometheus text exposition of the server's metrics (see api_metrics.h). Names follow
 * Prometheus' conventions (base units, _total counters) with an lmforge_ prefix. */
#include "api_metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double TTFT_BOUNDS[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,
                                     0.5,   0.75,  1.0,  2.5,  5.0,  7.5,  10.0, 20.0, 40.0};
static const double ITL_BOUNDS[] = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04,
                                    0.05,  0.075,  0.1,   0.15, 0.2,   0.3,  0.4,   0.5,  1.0};
static const double E2E_BOUNDS[] = {0.05, 0.1,  0.25, 0.5,  1.0,  2.5,
                                    5.0,  10.0, 20.0, 40.0, 60.0, 120.0};

static void hist_init(lmf_histogram *h, const double *b, int n) {
    memset(h, 0, sizeof *h);
    h->bounds = b, h->n_bounds = n;
}

void lmf_api_metrics_init(lmf_api_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->ttft, TTFT_BOUNDS, (int)(sizeof TTFT_BOUNDS / sizeof *TTFT_BOUNDS));
    hist_init(&m->itl, ITL_BOUNDS, (int)(sizeof ITL_BOUNDS / sizeof *ITL_BOUNDS));
    hist_init(&m->e2e, E2E_BOUNDS, (int)(sizeof E2E_BOUNDS / sizeof *E2E_BOUNDS));
}

void lmf_api_metrics_free(lmf_api_metrics *m) {
    pthread_mutex_destroy(&m->mu);
}

void lmf_histogram_observe(lmf_histogram *h, double v) {
    int b = 0;
    while (b < h->n_bounds && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->count++;
}

void lmf_api_metrics_observe(lmf_api_metrics *m, lmf_histogram *h, double v) {
    pthread_mutex_lock(&m->mu);
    lmf_histogram_observe(h, v);
    pthread_mutex_unlock(&m->mu);
}

void lmf_api_metrics_count_status(lmf_api_metrics *m, int status) {
    int c = status / 100;
    pthread_mutex_lock(&m->mu);
    if (c >= 1 && c <= 5) m->http_requests[c]++;
    if (status == 429) m->rejected_busy++;
    pthread_mutex_unlock(&m->mu);
}

void lmf_api_metrics_count_cancel(lmf_api_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->cancelled++;
    pthread_mutex_unlock(&m->mu);
}

static void metric(lmf_strbuf *b, const char *name, const char *type, const char *help, double v) {
    lmf_strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static void histogram(lmf_strbuf *b, const char *name, const char *help, const lmf_histogram *h) {
    lmf_strbuf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    int64_t cum = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cum += h->counts[i];
        lmf_strbuf_printf(b, "%s_bucket{le=\"%g\"} %lld\n", name, h->bounds[i], (long long)cum);
    }
    lmf_strbuf_printf(b, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.17g\n%s_count %lld\n", name,
                      (long long)h->count, name, h->sum, name, (long long)h->count);
}

char *lmf_api_metrics_render(lmf_api_metrics *m, const lmf_engine_stats *st) {
    lmf_strbuf b = {0};
    metric(&b, "lmforge_requests_running", "gauge", "Requests decoding in the engine.",
           st->running);
    metric(&b, "lmforge_requests_waiting", "gauge", "Requests queued for the engine.", st->waiting);
    metric(&b, "lmforge_kv_blocks_used", "gauge", "KV cache blocks in use.", st->blocks_used);
    metric(&b, "lmforge_kv_blocks_total", "gauge", "KV cache blocks in the pool.",
           st->blocks_total);
    metric(&b, "lmforge_kv_cache_usage_ratio", "gauge", "Fraction of KV cache blocks in use.",
           st->blocks_total ? (double)st->blocks_used / st->blocks_total : 0);
    metric(&b, "lmforge_prefix_cache_queries_total", "counter", "Prefix cache block lookups.",
           (double)st->block_lookups);
    metric(&b, "lmforge_prefix_cache_hits_total", "counter", "Prefix cache block hits.",
           (double)st->block_hits);
    metric(&b, "lmforge_prefix_cache_hit_rate", "gauge", "Prefix cache hits / lookups.",
           st->block_lookups ? (double)st->block_hits / (double)st->block_lookups : 0);
    metric(&b, "lmforge_prompt_tokens_total", "counter", "Prompt tokens prefilled.",
           (double)st->prompt_tokens);
    metric(&b, "lmforge_generation_tokens_total", "counter", "Tokens generated.",
           (double)st->generation_tokens);
    metric(&b, "lmforge_prefix_cache_hit_tokens_total", "counter",
           "Prompt tokens served from the prefix cache.", (double)st->prefix_hit_tokens);
    metric(&b, "lmforge_preemptions_total", "counter", "Requests preempted (recomputed).",
           (double)st->preemptions);
    metric(&b, "lmforge_requests_finished_total", "counter", "Engine requests finished.",
           (double)st->requests_done);
    pthread_mutex_lock(&m->mu);
    lmf_strbuf_printf(&b, "# HELP lmforge_http_requests_total HTTP responses by status class.\n"
                          "# TYPE lmforge_http_requests_total counter\n");
    for (int c = 1; c <= 5; c++)
        lmf_strbuf_printf(&b, "lmforge_http_requests_total{code=\"%dxx\"} %lld\n", c,
                          (long long)m->http_requests[c]);
    metric(&b, "lmforge_requests_rejected_busy_total", "counter",
           "Requests refused with 429 (queue full).", (double)m->rejected_busy);
    metric(&b, "lmforge_requests_cancelled_total", "counter",
           "Requests cancelled because the client went away.", (double)m->cancelled);
    histogram(&b, "lmforge_time_to_first_token_seconds", "Time from arrival to the first token.",
              &m->ttft);
    histogram(&b, "lmforge_inter_token_latency_seconds", "Time between consecutive tokens.",
              &m->itl);
    histogram(&b, "lmforge_request_duration_seconds", "Time from arrival to the last token.",
              &m->e2e);
    pthread_mutex_unlock(&m->mu);
    return lmf_strbuf_take(&b);
}
