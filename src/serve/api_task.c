/* The per-request hand-over between the engine thread and an HTTP thread (see api_task.h). */
#include "api_task.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lmforge/core.h"
#include "stop_match.h"

int lmf_api_task_create(lmf_api_task **out, const lmf_tokenizer *tok, lmf_api_metrics *metrics,
                        int n, char *const *stop, int n_stop, const int32_t *skip_ids, int n_skip,
                        int want_logprobs) {
    if (n < 1 || n > LMF_OAI_MAX_N || n_stop > LMF_OAI_MAX_STOP || n_skip > LMF_API_MAX_SKIP_IDS)
        return lmf_errorf(LMF_EINVAL, "api task: n, stop or skip ids out of range");
    lmf_api_task *t = calloc(1, sizeof *t);
    if (!t) return lmf_errorf(LMF_ENOMEM, "api task: out of memory");
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->refs = 1;
    t->tok = tok, t->metrics = metrics, t->n = n, t->want_logprobs = want_logprobs;
    t->t_start = lmf_time_sec();
    for (int i = 0; i < n_stop; i++) {
        if (!(t->stop[i] = lmf_strdup(stop[i]))) {
            t->n_stop = i;
            lmf_api_task_release(t);
            return lmf_errorf(LMF_ENOMEM, "api task: out of memory");
        }
    }
    t->n_stop = n_stop;
    memcpy(t->skip_ids, skip_ids, sizeof *skip_ids * (size_t)n_skip);
    t->n_skip = n_skip;
    for (int i = 0; i < n; i++) {
        t->ch[i].task = t, t->ch[i].index = i;
        lmf_detok_stream_init(&t->ch[i].ds, tok);
    }
    *out = t;
    return 0;
}

static void task_free(lmf_api_task *t) {
    for (int i = 0; i < t->n; i++) {
        lmf_detok_stream_free(&t->ch[i].ds);
        free(t->ch[i].text), free(t->ch[i].toks);
    }
    for (int i = 0; i < t->n_stop; i++) free(t->stop[i]);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

/* Drops one reference; the caller holds t->mu, which this releases. */
static void unref_unlock(lmf_api_task *t) {
    int last = --t->refs == 0;
    pthread_mutex_unlock(&t->mu);
    if (last) task_free(t);
}

void lmf_api_task_release(lmf_api_task *t) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    unref_unlock(t);
}

static int append_text(lmf_api_choice *c, const char *s) {
    size_t n = strlen(s);
    if (c->len + n + 1 > c->cap) {
        size_t cap = (c->len + n + 1) * 2;
        char *p = realloc(c->text, cap);
        if (!p) return LMF_ENOMEM;
        c->text = p, c->cap = cap;
    }
    memcpy(c->text + c->len, s, n + 1);
    c->len += n;
    return 0;
}

/* Adds a decoded piece and looks for a stop string; 1 when one matched (text is cut there). */
static int add_piece(lmf_api_choice *c, const char *piece) {
    lmf_api_task *t = c->task;
    size_t from = c->len;
    if (!piece || !piece[0] || c->stop_hit || append_text(c, piece)) return c->stop_hit;
    long at = lmf_stop_find(c->text, c->len, from, t->stop, t->n_stop);
    if (at >= 0) {
        c->len = (size_t)at;
        c->text[c->len] = 0;
        c->stop_hit = 1;
        c->safe = c->len;
        return 1;
    }
    c->safe = lmf_stop_safe_len(c->text, c->len, t->stop, t->n_stop);
    return 0;
}

static int on_token(lmf_request *r, const lmf_sample_result *s, void *user) {
    lmf_api_choice *c = user;
    lmf_api_task *t = c->task;
    (void)r;
    double now = lmf_time_sec();
    pthread_mutex_lock(&t->mu);
    if (!t->first_token_seen) {
        t->first_token_seen = 1;
        lmf_api_metrics_observe(t->metrics, &t->metrics->ttft, now - t->t_start);
    } else if (c->n_generated > 0) {
        lmf_api_metrics_observe(t->metrics, &t->metrics->itl, now - c->t_last);
    }
    c->t_last = now;
    c->n_generated++;
    int stop = 0, skip = 0;
    for (int i = 0; i < t->n_skip; i++) skip |= s->token == t->skip_ids[i];
    if (!skip && !c->stop_hit) {
        if (t->want_logprobs) {
            if (c->n_toks == c->cap_toks) {
                int cap = c->cap_toks ? 2 * c->cap_toks : 16;
                lmf_sample_result *p = realloc(c->toks, sizeof *p * (size_t)cap);
                if (p) c->toks = p, c->cap_toks = cap;
            }
            if (c->n_toks < c->cap_toks) c->toks[c->n_toks++] = *s;
        }
        char *piece = NULL;
        if (lmf_detok_stream_push(&c->ds, s->token, &piece) == 0) stop = add_piece(c, piece);
        free(piece);
    }
    pthread_mutex_unlock(&t->mu);
    return stop; /* the waiting HTTP thread is woken by on_wake */
}

/* Wakes the HTTP thread waiting for the choice's text. The engine calls it from inside its
 * next step (lmf_request_params.on_wake): woken here between steps, the HTTP threads preempted
 * the engine thread while the other compute thread spun idle, 1.3-1.5 ms of every step at 32
 * streaming clients (~3 %). */
static void on_wake(lmf_request *r, void *user) {
    lmf_api_task *t = ((lmf_api_choice *)user)->task;
    (void)r;
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void on_finish(lmf_request *r, lmf_finish why, void *user) {
    lmf_api_choice *c = user;
    lmf_api_task *t = c->task;
    (void)r;
    pthread_mutex_lock(&t->mu);
    char *rest = NULL;
    if (!c->stop_hit && lmf_detok_stream_finish(&c->ds, &rest) == 0) add_piece(c, rest);
    free(rest);
    c->safe = c->len;
    c->finish = c->stop_hit ? LMF_FINISH_STOP : why;
    c->done = 1;
    t->n_done++;
    if (t->n_done == t->n)
        lmf_api_metrics_observe(t->metrics, &t->metrics->e2e, lmf_time_sec() - t->t_start);
    pthread_cond_broadcast(&t->cv);
    unref_unlock(t);
}

int lmf_api_task_submit(lmf_api_task *t, lmf_engine *e, const lmf_request_params *base, int i) {
    lmf_request_params p = *base;
    p.on_token = on_token;
    p.on_finish = on_finish;
    p.on_wake = on_wake;
    p.user = &t->ch[i];
    pthread_mutex_lock(&t->mu);
    t->refs++; /* on_finish may run on the engine thread before submit returns */
    pthread_mutex_unlock(&t->mu);
    uint64_t id = 0;
    int rc = lmf_engine_submit(e, &p, &id);
    pthread_mutex_lock(&t->mu);
    if (rc) {
        t->refs--;
    } else {
        t->ch[i].engine_id = id;
        t->ch[i].submitted = 1;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void lmf_api_task_cancel(lmf_api_task *t, lmf_engine *e) {
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->n; i++)
        if (t->ch[i].submitted && !t->ch[i].done) lmf_engine_cancel(e, t->ch[i].engine_id);
    pthread_mutex_unlock(&t->mu);
}

void lmf_api_task_wait_locked(lmf_api_task *t, int timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)timeout_ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
}

const char *lmf_api_finish_reason(lmf_finish f) {
    switch (f) {
    case LMF_FINISH_STOP:
        return "stop";
    case LMF_FINISH_LENGTH:
        return "length";
    case LMF_FINISH_CANCELLED:
        return "abort";
    case LMF_FINISH_ERROR:
        return "error";
    default:
        return NULL;
    }
}
