/* One API request in flight: the thread-safe hand-over between the engine thread, which calls
 * the request's token and finish callbacks, and the HTTP thread that answers the client. Each of
 * the n choices is one engine request; its tokens are decoded to text on the engine thread,
 * stop strings are matched there (across token boundaries, cut from the text, and ending the
 * engine request at once), and the HTTP thread reads the text that is safe to release under the
 * task's lock. The task is reference counted: the HTTP side holds one reference and every
 * submitted engine request one more, so whichever finishes last frees it. */
#ifndef LMF_SERVE_API_TASK_H
#define LMF_SERVE_API_TASK_H

#include <pthread.h>
#include <stdint.h>

#include "api_metrics.h"
#include "lmforge/engine.h"
#include "lmforge/tokenizer.h"
#include "openai_request.h"

#define LMF_API_MAX_SKIP_IDS 16

typedef struct lmf_api_choice {
    struct lmf_api_task *task;
    int index;
    uint64_t engine_id;
    int submitted, done;
    lmf_finish finish;
    lmf_detok_stream ds;
    char *text; /* decoded output, cut at a matched stop string */
    size_t len, cap;
    size_t safe; /* bytes of text that may be released (no partial stop string at the end) */
    size_t sent; /* streaming: bytes already sent */
    lmf_sample_result *toks; /* with logprobs: the output tokens that carry text */
    int n_toks, cap_toks, toks_sent;
    int n_generated; /* every sampled token, stop tokens included (usage) */
    int stop_hit;
    double t_last;
    /* streaming state, HTTP thread only */
    int first_sent, finish_sent;
    size_t lp_offset;
} lmf_api_choice;

typedef struct lmf_api_task {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    const lmf_tokenizer *tok;
    lmf_api_metrics *metrics;
    int n, n_done;
    lmf_api_choice ch[LMF_OAI_MAX_N];
    char *stop[LMF_OAI_MAX_STOP];
    int n_stop;
    int32_t skip_ids[LMF_API_MAX_SKIP_IDS]; /* ending tokens that add no text (eos, <|im_end|>) */
    int n_skip;
    int want_logprobs;
    double t_start;
    int first_token_seen;
} lmf_api_task;

/* A task for n choices with the request's stop strings (copied). */
int lmf_api_task_create(lmf_api_task **out, const lmf_tokenizer *tok, lmf_api_metrics *metrics,
                        int n, char *const *stop, int n_stop, const int32_t *skip_ids, int n_skip,
                        int want_logprobs);
/* Submits choice i with base's prompt and settings (callbacks are filled in here). Returns
 * lmf_engine_submit's result: 0, 1 (queue full) or negative. */
int lmf_api_task_submit(lmf_api_task *t, lmf_engine *e, const lmf_request_params *base, int i);
/* Cancels every submitted choice that has not finished. */
void lmf_api_task_cancel(lmf_api_task *t, lmf_engine *e);
/* The HTTP side is done with the task. */
void lmf_api_task_release(lmf_api_task *t);
/* With t->mu held: waits for news (a token or a finish) up to timeout_ms. */
void lmf_api_task_wait_locked(lmf_api_task *t, int timeout_ms);
/* "stop" / "length" / ... for a finished choice. */
const char *lmf_api_finish_reason(lmf_finish f);

#endif
