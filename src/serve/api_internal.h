/* What the server's files share: the server state, and the endpoint handlers of
 * api_generate.c (chat/completions) and api_server.c (routing, the rest). */
#ifndef LMF_SERVE_API_INTERNAL_H
#define LMF_SERVE_API_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "api_metrics.h"
#include "http.h"
#include "lmforge/server.h"
#include "openai_request.h"

#define LMF_API_MAX_TEMPLATE_STOPS 8
#define LMF_API_MAX_ADAPTERS       64 /* LoRA adapters served at once (lora_modules) */

struct lmf_server {
    lmf_server_config c; /* strings owned (copied) */
    lmf_http *http;
    lmf_api_metrics metrics;
    atomic_int ready, draining, engine_stop;
    atomic_ullong next_id;
    long long created;
    /* set by lmf_server_ready, read-only afterwards */
    lmf_model *m;
    char *adapter_names[LMF_API_MAX_ADAPTERS]; /* lmf_server_add_adapter; owned */
    const lmf_lora *adapters[LMF_API_MAX_ADAPTERS];
    int n_adapters;
    const lmf_tokenizer *tok;
    const lmf_template *tpl;
    lmf_engine *eng;
    int32_t tpl_stop_ids[LMF_API_MAX_TEMPLATE_STOPS]; /* the template's stop words as tokens */
    int n_tpl_stop_ids;
    pthread_t engine_thread;
    int engine_started;
};

/* Fills res with OpenAI's error object for e. */
void lmf_api_error_response(const lmf_oai_error *e, lmf_http_response *res);
/* A JSON body (taken over) with status. */
void lmf_api_json_response(int status, char *json, lmf_http_response *res);
/* Chat prompt token ids for messages (template + default system); errors name messages. */
int lmf_api_chat_prompt(lmf_server *s, const lmf_message *msgs, int n, int32_t **ids, int *n_ids,
                        lmf_oai_error *e);
/* POST /v1/chat/completions and /v1/completions. */
void lmf_api_generate(lmf_server *s, lmf_oai_kind kind, const lmf_http_request *req,
                      lmf_http_response *res);

#endif
