/* Server metrics for GET /metrics in Prometheus' text format: latency histograms
 * (time to first token, inter-token latency, request duration) and counters observed by the
 * HTTP glue, plus the engine's own gauges and counters read at render time. */
#ifndef LMF_SERVE_API_METRICS_H
#define LMF_SERVE_API_METRICS_H

#include <pthread.h>
#include <stdint.h>

#include "lmforge/engine.h"

#define LMF_HIST_MAX_BUCKETS 20

typedef struct lmf_histogram {
    const double *bounds; /* upper bounds, ascending; +Inf is implicit */
    int n_bounds;
    int64_t counts[LMF_HIST_MAX_BUCKETS + 1]; /* per bucket, not cumulative */
    double sum;
    int64_t count;
} lmf_histogram;

typedef struct lmf_api_metrics {
    pthread_mutex_t mu;
    lmf_histogram ttft, itl, e2e;
    int64_t http_requests[6]; /* by status class: [2] 2xx ... [5] 5xx */
    int64_t rejected_busy;    /* 429s */
    int64_t cancelled;        /* clients gone before the end */
} lmf_api_metrics;

void lmf_api_metrics_init(lmf_api_metrics *m);
void lmf_api_metrics_free(lmf_api_metrics *m);
void lmf_histogram_observe(lmf_histogram *h, double v); /* caller holds the metrics lock */
void lmf_api_metrics_observe(lmf_api_metrics *m, lmf_histogram *h, double v);
void lmf_api_metrics_count_status(lmf_api_metrics *m, int status);
void lmf_api_metrics_count_cancel(lmf_api_metrics *m);
/* The Prometheus exposition (malloc'd). */
char *lmf_api_metrics_render(lmf_api_metrics *m, const lmf_engine_stats *st);

#endif
