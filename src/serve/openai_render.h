/* OpenAI API responses as JSON text: chat.completion / text_completion objects, their streamed
 * chunks as SSE events ("data: {...}\n\n"), logprobs in chat and completions shapes, the
 * models list. The HTTP glue gathers the values; this file only shapes them. */
#ifndef LMF_SERVE_OPENAI_RENDER_H
#define LMF_SERVE_OPENAI_RENDER_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "lmforge/sampling.h"
#include "lmforge/tokenizer.h"
#include "openai_request.h"

typedef struct lmf_oai_choice_out {
    int index;
    const char *text;          /* content (chat) or text (completions); NULL: none */
    const char *finish_reason; /* NULL while running */
    cJSON *logprobs;           /* NULL: "logprobs": null; taken over by the renderer */
    int first;                 /* chat stream: the first chunk carries role "assistant" */
} lmf_oai_choice_out;

typedef struct lmf_oai_usage {
    int prompt_tokens, completion_tokens;
} lmf_oai_usage;

/* Logprobs of n sampled tokens: chat shape {"content": [{token, logprob, bytes, top_logprobs}]}
 * or completions shape {tokens, token_logprobs, top_logprobs, text_offset} (text_offset counted
 * from *offset, which advances). top: alternatives per token to include. */
cJSON *lmf_oai_logprobs_json(lmf_oai_kind kind, const lmf_tokenizer *tok,
                             const lmf_sample_result *toks, int n, int top, size_t *offset);
/* The whole (non-streamed) response. */
char *lmf_oai_render_response(lmf_oai_kind kind, const char *id, long long created,
                              const char *model, lmf_oai_choice_out *c, int n,
                              const lmf_oai_usage *u);
/* One SSE event "data: {...}\n\n": a chunk for choice c, or (c NULL) the usage chunk with
 * empty choices. usage_field: add "usage": null to choice chunks (stream_options.include_usage
 * was set, as OpenAI does). */
char *lmf_oai_render_chunk(lmf_oai_kind kind, const char *id, long long created, const char *model,
                           lmf_oai_choice_out *c, int usage_field, const lmf_oai_usage *u);
/* GET /v1/models. */
char *lmf_oai_render_models(const char *const *names, int n, long long created);

#endif
