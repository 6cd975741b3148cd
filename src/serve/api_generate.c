/* POST /v1/chat/completions and /v1/completions: request -> prompt ids -> n engine requests
 * (one lmf_api_task) -> a whole response, or an SSE stream whose pull callback blocks on the
 * task for the next text. A client that goes away cancels its engine requests, which frees
 * their KV blocks at the engine's next step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_internal.h"
#include "api_task.h"
#include "lmforge/core.h"
#include "lmforge/encode.h"
#include "openai_render.h"

enum { WAIT_MS = 100 };

int lmf_api_chat_prompt(lmf_server *s, const lmf_message *msgs, int n, int32_t **ids, int *n_ids,
                        lmf_oai_error *e) {
    if (!s->tpl)
        return lmf_oai_error_set(e, 400, "invalid_request_error", NULL, "messages",
                                 "this server has no chat template (set `template` in its config)");
    lmf_chat_pieces pieces = {0};
    lmf_template_opts topts = {s->c.enable_thinking};
    int rc = lmf_template_render_generation_prompt(s->tpl, msgs, n, s->c.default_system, &topts,
                                                   &pieces);
    lmf_encode_options eo = {s->tok, s->tpl, 0, 1, 0, 0, s->c.enable_thinking};
    if (!rc) rc = lmf_encode_pieces(&eo, &pieces, ids, n_ids);
    lmf_chat_pieces_free(&pieces);
    if (rc)
        return lmf_oai_error_set(e, 400, "invalid_request_error", NULL, "messages",
                                 "'messages': %s", lmf_last_error());
    return 0;
}

/* Prompt ids of a completions request: its token ids, or its text with the tokenizer's
 * special tokens (bos) as Hugging Face's add_special_tokens=True gives. */
static int completion_prompt(lmf_server *s, const lmf_oai_request *r, int32_t **ids, int *n,
                             lmf_oai_error *e) {
    if (r->prompt_ids) {
        for (int i = 0; i < r->n_prompt_ids; i++)
            if (r->prompt_ids[i] >= lmf_model_vocab(s->m)) {
                char param[32];
                snprintf(param, sizeof param, "prompt[%d]", i);
                return lmf_oai_error_set(e, 400, "invalid_request_error", NULL, param,
                                         "'%s': token %d is outside the vocabulary (%d)", param,
                                         r->prompt_ids[i], lmf_model_vocab(s->m));
            }
        *ids = malloc(sizeof **ids * (size_t)r->n_prompt_ids);
        if (!*ids) return lmf_oai_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        memcpy(*ids, r->prompt_ids, sizeof **ids * (size_t)r->n_prompt_ids);
        *n = r->n_prompt_ids;
        return 0;
    }
    if (lmf_tokenizer_encode(s->tok, r->prompt, strlen(r->prompt), 1, ids, n))
        return lmf_oai_error_set(e, 400, "invalid_request_error", NULL, "prompt", "'prompt': %s",
                                 lmf_last_error());
    if (*n == 0)
        return lmf_oai_error_set(e, 400, "invalid_request_error", NULL, "prompt",
                                 "'prompt': encodes to no tokens");
    return 0;
}

typedef struct gen {
    lmf_server *s;
    lmf_oai_kind kind;
    lmf_api_task *task;
    char id[48];
    char *model;
    long long created;
    int include_usage, logprobs, top_logprobs, n_prompt, fd;
    /* streaming */
    char *buf;
    size_t buf_len, buf_off, buf_cap;
    int ended;
} gen;

static void gen_free(gen *g) {
    free(g->model);
    free(g->buf);
    free(g);
}

static int buf_add(gen *g, char *ev) {
    if (!ev) return LMF_ENOMEM;
    size_t n = strlen(ev);
    if (g->buf_len + n > g->buf_cap) {
        size_t cap = (g->buf_len + n) * 2;
        char *p = realloc(g->buf, cap);
        if (!p) {
            free(ev);
            return LMF_ENOMEM;
        }
        g->buf = p, g->buf_cap = cap;
    }
    memcpy(g->buf + g->buf_len, ev, n);
    g->buf_len += n;
    free(ev);
    return 0;
}

static int usage_completion(const lmf_api_task *t) {
    int n = 0;
    for (int i = 0; i < t->n; i++) n += t->ch[i].n_generated;
    return n;
}

/* With the task locked: turns whatever is new into SSE events in g->buf. */
static int stream_collect(gen *g) {
    lmf_api_task *t = g->task;
    int all_sent = 1, rc = 0;
    for (int i = 0; i < t->n && !rc; i++) {
        lmf_api_choice *c = &t->ch[i];
        lmf_oai_choice_out out = {.index = i};
        if (g->kind == LMF_OAI_CHAT && !c->first_sent) {
            out.first = 1, out.text = "";
            rc = buf_add(g, lmf_oai_render_chunk(g->kind, g->id, g->created, g->model, &out,
                                                 g->include_usage, NULL));
            c->first_sent = 1;
            out.first = 0;
        }
        int new_toks = g->logprobs ? c->n_toks - c->toks_sent : 0;
        if (!rc && (c->safe > c->sent || new_toks > 0)) {
            char *delta = malloc(c->safe - c->sent + 1);
            if (!delta) return LMF_ENOMEM;
            memcpy(delta, c->text + c->sent, c->safe - c->sent);
            delta[c->safe - c->sent] = 0;
            out.text = delta;
            if (new_toks > 0)
                out.logprobs = lmf_oai_logprobs_json(g->kind, t->tok, c->toks + c->toks_sent,
                                                     new_toks, g->top_logprobs, &c->lp_offset);
            rc = buf_add(g, lmf_oai_render_chunk(g->kind, g->id, g->created, g->model, &out,
                                                 g->include_usage, NULL));
            free(delta);
            c->sent = c->safe;
            c->toks_sent = c->n_toks;
            out.text = NULL;
        }
        if (!rc && c->done && !c->finish_sent && c->sent == c->len) {
            out.finish_reason = lmf_api_finish_reason(c->finish);
            out.text = g->kind == LMF_OAI_COMPLETION ? "" : NULL;
            rc = buf_add(g, lmf_oai_render_chunk(g->kind, g->id, g->created, g->model, &out,
                                                 g->include_usage, NULL));
            c->finish_sent = 1;
        }
        all_sent &= c->finish_sent;
    }
    if (!rc && all_sent && !g->ended) {
        if (g->include_usage) {
            lmf_oai_usage u = {g->n_prompt, usage_completion(t)};
            rc =
                buf_add(g, lmf_oai_render_chunk(g->kind, g->id, g->created, g->model, NULL, 1, &u));
        }
        if (!rc) rc = buf_add(g, lmf_strdup("data: [DONE]\n\n"));
        g->ended = 1;
    }
    return rc;
}

static ssize_t stream_pull(void *ctx, char *out, size_t max) {
    gen *g = ctx;
    for (;;) {
        if (g->buf_off < g->buf_len) {
            size_t n = g->buf_len - g->buf_off;
            if (n > max) n = max;
            memcpy(out, g->buf + g->buf_off, n);
            g->buf_off += n;
            if (g->buf_off == g->buf_len) g->buf_off = g->buf_len = 0;
            return (ssize_t)n;
        }
        if (g->ended) return 0;
        pthread_mutex_lock(&g->task->mu);
        int rc = stream_collect(g);
        if (!rc && g->buf_len == 0 && !g->ended) lmf_api_task_wait_locked(g->task, WAIT_MS);
        pthread_mutex_unlock(&g->task->mu);
        if (rc) return -1;
        if (g->buf_len == 0 && lmf_http_client_gone(g->fd)) return -1;
    }
}

static void stream_free(void *ctx) {
    gen *g = ctx;
    pthread_mutex_lock(&g->task->mu);
    int unfinished = g->task->n_done < g->task->n;
    pthread_mutex_unlock(&g->task->mu);
    if (unfinished) {
        lmf_api_task_cancel(g->task, g->s->eng);
        lmf_api_metrics_count_cancel(&g->s->metrics);
    }
    lmf_api_task_release(g->task);
    gen_free(g);
}

/* Waits for every choice and renders the whole response; NULL when the client went away. */
static char *whole_response(gen *g) {
    lmf_api_task *t = g->task;
    pthread_mutex_lock(&t->mu);
    while (t->n_done < t->n) {
        lmf_api_task_wait_locked(t, WAIT_MS);
        if (t->n_done < t->n && lmf_http_client_gone(g->fd)) {
            pthread_mutex_unlock(&t->mu);
            lmf_api_task_cancel(t, g->s->eng);
            lmf_api_metrics_count_cancel(&g->s->metrics);
            return NULL;
        }
    }
    lmf_oai_choice_out outs[LMF_OAI_MAX_N];
    for (int i = 0; i < t->n; i++) {
        lmf_api_choice *c = &t->ch[i];
        size_t off = 0;
        outs[i] = (lmf_oai_choice_out){
            .index = i,
            .text = c->text ? c->text : "",
            .finish_reason = lmf_api_finish_reason(c->finish),
            .logprobs = g->logprobs ? lmf_oai_logprobs_json(g->kind, t->tok, c->toks, c->n_toks,
                                                            g->top_logprobs, &off)
                                    : NULL};
    }
    lmf_oai_usage u = {g->n_prompt, usage_completion(t)};
    char *json = lmf_oai_render_response(g->kind, g->id, g->created, g->model, outs, t->n, &u);
    pthread_mutex_unlock(&t->mu);
    return json;
}

/* 0 for the served model, i + 1 for adapter i, -1 for an unknown name. */
static int model_index(const lmf_server *s, const char *name) {
    if (!name || !strcmp(name, s->c.model_name) ||
        (s->c.model_path && !strcmp(name, s->c.model_path)))
        return 0;
    for (int i = 0; i < s->n_adapters; i++)
        if (!strcmp(name, s->adapter_names[i])) return i + 1;
    return -1;
}

/* Submits the n choices; fills res with the error when one cannot be. */
static int submit_all(lmf_server *s, gen *g, const lmf_oai_request *r, const int32_t *ids,
                      int n_ids, const lmf_lora *lora, lmf_http_response *res) {
    int room = s->m->cfg.max_pos - n_ids;
    lmf_oai_error e;
    const char *pparam = g->kind == LMF_OAI_CHAT ? "messages" : "prompt";
    if (room < 1) {
        lmf_oai_error_set(&e, 400, "invalid_request_error", "context_length_exceeded", pparam,
                          "the prompt is %d tokens; this model's context is %d", n_ids,
                          s->m->cfg.max_pos);
        lmf_api_error_response(&e, res);
        return -1;
    }
    if (r->max_tokens > room) {
        lmf_oai_error_set(&e, 400, "invalid_request_error", "context_length_exceeded", "max_tokens",
                          "'max_tokens': %d + %d prompt tokens exceed this model's context (%d)",
                          r->max_tokens, n_ids, s->m->cfg.max_pos);
        lmf_api_error_response(&e, res);
        return -1;
    }
    int max_tokens = r->max_tokens ? r->max_tokens : s->c.default_max_tokens;
    if (max_tokens > room) max_tokens = room;
    lmf_request_params p = {.prompt = ids,
                            .n_prompt = n_ids,
                            .max_tokens = max_tokens,
                            .sampling = r->sampling,
                            .seed = r->seed,
                            .has_seed = r->has_seed,
                            .ignore_eos = r->ignore_eos,
                            .lora = lora};
    if (g->kind == LMF_OAI_CHAT) p.stop_ids = s->tpl_stop_ids, p.n_stop_ids = s->n_tpl_stop_ids;
    for (int i = 0; i < r->n; i++) {
        p.seed = r->seed + (uint64_t)i;
        int rc = lmf_api_task_submit(g->task, s->eng, &p, i);
        if (rc == 0) continue;
        lmf_api_task_cancel(g->task, s->eng);
        if (rc > 0) {
            lmf_oai_error_set(&e, 429, "rate_limit_exceeded", "rate_limit_exceeded", NULL,
                              "the server's request queue is full; retry later");
            res->retry_after = 1;
        } else {
            lmf_oai_error_set(&e, 400, "invalid_request_error", NULL, NULL, "%s", lmf_last_error());
        }
        int ra = res->retry_after;
        lmf_api_error_response(&e, res);
        res->retry_after = ra;
        return -1;
    }
    return 0;
}

void lmf_api_generate(lmf_server *s, lmf_oai_kind kind, const lmf_http_request *req,
                      lmf_http_response *res) {
    lmf_oai_defaults d = {s->c.sampling};
    lmf_oai_request r;
    lmf_oai_error e;
    if (lmf_oai_parse(req->body, req->body_len, kind, &d, &r, &e)) {
        lmf_api_error_response(&e, res);
        return;
    }
    int32_t *ids = NULL;
    int n_ids = 0;
    gen *g = NULL;
    int model = model_index(s, r.model);
    if (model < 0) {
        lmf_oai_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                          "The model `%.200s` does not exist (this server serves `%.200s`)",
                          r.model, s->c.model_name);
        goto fail;
    }
    if (kind == LMF_OAI_CHAT ? lmf_api_chat_prompt(s, r.messages, r.n_messages, &ids, &n_ids, &e)
                             : completion_prompt(s, &r, &ids, &n_ids, &e))
        goto fail;
    int32_t skip[LMF_API_MAX_SKIP_IDS];
    int n_skip = 0;
    if (kind == LMF_OAI_CHAT)
        for (int i = 0; i < s->n_tpl_stop_ids; i++) skip[n_skip++] = s->tpl_stop_ids[i];
    if (!r.ignore_eos && s->m->cfg.eos_id >= 0) skip[n_skip++] = s->m->cfg.eos_id;
    g = calloc(1, sizeof *g);
    if (!g || !(g->model = lmf_strdup(r.model ? r.model : s->c.model_name)) ||
        lmf_api_task_create(&g->task, s->tok, &s->metrics, r.n, r.stop, r.n_stop, skip, n_skip,
                            r.logprobs)) {
        lmf_oai_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        goto fail;
    }
    g->s = s, g->kind = kind, g->created = (long long)time(NULL);
    snprintf(g->id, sizeof g->id, "%s-%llx%08llx", kind == LMF_OAI_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)s->created, (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    g->include_usage = r.include_usage, g->logprobs = r.logprobs, g->top_logprobs = r.top_logprobs;
    g->n_prompt = n_ids, g->fd = req->fd;
    if (submit_all(s, g, &r, ids, n_ids, model ? s->adapters[model - 1] : NULL, res)) {
        lmf_api_task_release(g->task);
        gen_free(g);
        free(ids);
        lmf_oai_request_free(&r);
        return;
    }
    free(ids);
    if (r.stream) {
        res->status = 200;
        res->content_type = "text/event-stream";
        res->pull = stream_pull;
        res->pull_free = stream_free;
        res->pull_ctx = g;
    } else {
        char *json = whole_response(g);
        if (json)
            lmf_api_json_response(200, json, res);
        else
            res->status = 499, res->content_type = "text/plain"; /* nobody is listening */
        lmf_api_task_release(g->task);
        gen_free(g);
    }
    lmf_oai_request_free(&r);
    return;
fail:
    if (g) {
        if (g->task) lmf_api_task_release(g->task);
        gen_free(g);
    }
    free(ids);
    lmf_oai_request_free(&r);
    lmf_api_error_response(&e, res);
}
