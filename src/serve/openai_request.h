/* OpenAI API requests: parsing and validating the JSON bodies of /v1/chat/completions,
 * /v1/completions, /tokenize and /detokenize into plain structs, and OpenAI's error object.
 * Every rejection fills an lmf_oai_error with the HTTP status and the offending field (param),
 * as OpenAI's API does: {"error": {"message", "type", "param", "code"}}. Nothing here touches
 * the model or the engine, so bad input is tested on its own (tests/serve/test_openai_json.c). */
#ifndef LMF_SERVE_OPENAI_REQUEST_H
#define LMF_SERVE_OPENAI_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "lmforge/sampling.h"
#include "lmforge/template.h"

#define LMF_OAI_MAX_N    16 /* choices per request */
#define LMF_OAI_MAX_STOP 16 /* stop strings per request */

typedef enum lmf_oai_kind { LMF_OAI_CHAT, LMF_OAI_COMPLETION } lmf_oai_kind;

typedef struct lmf_oai_error {
    int status;       /* HTTP status: 400, 401, 404, 405, 413, 429, 500, 503 */
    const char *type; /* "invalid_request_error", ... (static) */
    const char *code; /* NULL or a static code such as "model_not_found" */
    char param[64];   /* the field at fault ("messages[1].content"), "" for none */
    char message[512];
} lmf_oai_error;

/* Fills e and returns LMF_EINVAL; param may be NULL. */
int lmf_oai_error_set(lmf_oai_error *e, int status, const char *type, const char *code,
                      const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* {"error": {...}} as a malloc'd string (NULL when out of memory). */
char *lmf_oai_error_json(const lmf_oai_error *e);

/* What the server uses for fields the request leaves out. */
typedef struct lmf_oai_defaults {
    lmf_sampling_params sampling;
} lmf_oai_defaults;

typedef struct lmf_oai_request {
    lmf_oai_kind kind;
    char *model; /* NULL when absent */
    /* chat */
    lmf_message *messages; /* role and content strings owned */
    int n_messages;
    /* completions: a text prompt or token ids */
    char *prompt;
    int32_t *prompt_ids;
    int n_prompt_ids;
    int max_tokens; /* 0: the server's default */
    lmf_sampling_params sampling;
    uint64_t seed;
    int has_seed;
    char *stop[LMF_OAI_MAX_STOP];
    int n_stop;
    int n;
    int logprobs;     /* chat: logprobs true; completions: logprobs >= 0 given */
    int top_logprobs; /* alternatives per token (chat top_logprobs, completions logprobs) */
    int stream, include_usage;
    int ignore_eos;
} lmf_oai_request;

/* Parses a chat or completions body. 0 on success (free with lmf_oai_request_free); otherwise
 * negative with e filled (status 400 naming the field). */
int lmf_oai_parse(const char *body, size_t len, lmf_oai_kind kind, const lmf_oai_defaults *d,
                  lmf_oai_request *out, lmf_oai_error *e);
void lmf_oai_request_free(lmf_oai_request *r);

/* /tokenize: {"prompt": "...", "add_special_tokens": bool} or {"messages": [...]}. */
typedef struct lmf_oai_tokenize {
    char *prompt;
    lmf_message *messages;
    int n_messages;
    int add_special;
} lmf_oai_tokenize;
int lmf_oai_parse_tokenize(const char *body, size_t len, lmf_oai_tokenize *out, lmf_oai_error *e);
void lmf_oai_tokenize_free(lmf_oai_tokenize *t);
/* /detokenize: {"tokens": [ids]}; *ids malloc'd. */
int lmf_oai_parse_detokenize(const char *body, size_t len, int32_t **ids, int *n, lmf_oai_error *e);

#endif
