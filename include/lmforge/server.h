/* The OpenAI-compatible HTTP server (`lmforge api`): POST /v1/chat/completions and
 * /v1/completions (streamed as server-sent events or whole), GET /v1/models, /health, /metrics,
 * POST /tokenize and /detokenize, over the continuous-batching engine. HTTP threads parse and
 * validate requests and post them to the engine; one engine thread owns the model and the KV
 * cache and hands tokens back through a per-request queue.
 *
 * Life cycle: lmf_server_start listens at once (so /health answers 503 while the model loads),
 * lmf_server_ready hands over the loaded model and starts the engine thread, lmf_server_shutdown
 * stops accepting, lets in-flight requests and streams finish, and stops the engine thread. */
#ifndef LMFORGE_SERVER_H
#define LMFORGE_SERVER_H

#include <stddef.h>

#include "lmforge/engine.h"
#include "lmforge/template.h"
#include "lmforge/tokenizer.h"

typedef struct lmf_server_config {
    const char *host;       /* default "127.0.0.1" */
    int port;               /* default 8000 */
    const char *api_key;    /* NULL or "": no authentication */
    const char *model_name; /* the name clients use and /v1/models lists */
    const char *model_path; /* also accepted as a request's model (model_name_or_path) */
    size_t max_body_bytes;  /* larger bodies get 413 */
    int max_connections;
    int default_max_tokens;       /* when a request gives none (clipped to the context) */
    lmf_sampling_params sampling; /* defaults for fields a request leaves out */
    const char *default_system;   /* chat: system prompt when the messages have none */
    int enable_thinking;          /* reasoning templates */
} lmf_server_config;

typedef struct lmf_server lmf_server;

void lmf_server_config_defaults(lmf_server_config *c);
/* Listens on host:port; every endpoint but /health and /metrics answers 503 until ready. */
int lmf_server_start(lmf_server **out, const lmf_server_config *c);
/* Borrows the model, tokenizer, template and engine (which must outlive the server) and starts
 * the engine thread; tpl may be NULL (chat completions are then refused). */
int lmf_server_ready(lmf_server *s, lmf_model *m, const lmf_tokenizer *tok, const lmf_template *tpl,
                     lmf_engine *e);
/* Stops accepting connections, waits up to drain_seconds for in-flight requests to complete
 * (streams end normally), then closes the rest and stops the engine thread. */
/* Serves adapter l (borrowed; it must outlive the server) beside the model under name, as
 * vLLM's --lora-modules: a request whose `model` is name decodes with l, mixed in the same
 * batches as the others; the model's own name keeps the base (with m->lora if set). Call
 * before lmf_server_ready; at most 64 adapters, names distinct from the model's. */
int lmf_server_add_adapter(lmf_server *s, const char *name, const lmf_lora *l);
void lmf_server_shutdown(lmf_server *s, double drain_seconds);
void lmf_server_free(lmf_server *s);

#endif
