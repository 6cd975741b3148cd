/* lmforge chat CFG.yaml [--prompt TEXT ...] [key=value ...]: a terminal chat with the model
 * (and adapter) of a LLaMA-Factory config, streamed through the inference engine with the
 * config's template and sampling settings. With --prompt it answers each prompt as a fresh
 * conversation and exits (scripts, the demo); otherwise it reads lines from stdin, keeping
 * the history, with `clear` and `exit`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "lmforge/encode.h"
#include "lmforge/engine.h"
#include "lmforge/error.h"

typedef struct chat {
    lmf_model *m;
    lmf_lora *lora;
    lmf_tokenizer *tok;
    const lmf_template *tpl;
    lmf_engine *eng;
    lmf_sampling_params sp;
    int max_new, done;
    const char *system;
    lmf_detok_stream ds;
    char *reply;
    size_t reply_len;
    int32_t stops[8];
    int n_stops;
} chat;

/* Prints a piece of the reply as it comes and keeps it for the history. */
static void append_reply(chat *c, const char *piece) {
    fputs(piece, stdout);
    fflush(stdout);
    size_t n = strlen(piece);
    char *grown = realloc(c->reply, c->reply_len + n + 1);
    if (grown) {
        memcpy(grown + c->reply_len, piece, n + 1);
        c->reply = grown, c->reply_len += n;
    }
}

static int on_token(lmf_request *r, const lmf_sample_result *tok, void *user) {
    chat *c = user;
    (void)r;
    for (int i = 0; i < c->n_stops; i++)
        if (tok->token == c->stops[i]) return 0; /* the engine ends the request; print nothing */
    char *piece = NULL;
    if (lmf_detok_stream_push(&c->ds, tok->token, &piece) == 0 && piece) append_reply(c, piece);
    free(piece);
    return 0;
}

static void on_finish(lmf_request *r, lmf_finish why, void *user) {
    (void)r, (void)why;
    ((chat *)user)->done = 1;
}

/* The prompt ids for msgs (ending with a user turn). */
static int prompt_ids(chat *c, const lmf_message *msgs, int n, int32_t **ids, int *n_ids) {
    lmf_chat_pieces pieces = {0};
    lmf_template_opts topts = {1};
    int rc = lmf_template_render_generation_prompt(c->tpl, msgs, n, c->system, &topts, &pieces);
    lmf_encode_options eo = {c->tok, c->tpl, 0, 1, 0, 0, 1};
    *ids = NULL, *n_ids = 0;
    if (!rc) rc = lmf_encode_pieces(&eo, &pieces, ids, n_ids);
    lmf_chat_pieces_free(&pieces);
    return rc;
}

/* Generates the assistant's reply to msgs (ending with a user turn) and prints it. */
static int reply(chat *c, const lmf_message *msgs, int n) {
    int32_t *ids = NULL, *stops = c->stops;
    int n_ids = 0, n_stops = 0;
    int rc = prompt_ids(c, msgs, n, &ids, &n_ids);
    int sw_n;
    const char *const *sw = lmf_template_stop_words(c->tpl, &sw_n);
    for (int i = 0; i < sw_n && n_stops < 7; i++) {
        int32_t id = lmf_tokenizer_token_to_id(c->tok, sw[i]);
        if (id >= 0) stops[n_stops++] = id;
    }
    if (lmf_tokenizer_eos(c->tok) >= 0) stops[n_stops++] = lmf_tokenizer_eos(c->tok);
    c->n_stops = n_stops;
    int room = c->m->cfg.max_pos - n_ids - 1;
    lmf_request_params p = {.prompt = ids,
                            .n_prompt = n_ids,
                            .max_tokens = c->max_new < room ? c->max_new : room,
                            .sampling = c->sp,
                            .stop_ids = stops,
                            .n_stop_ids = n_stops,
                            .on_token = on_token,
                            .on_finish = on_finish,
                            .user = c};
    free(c->reply);
    c->reply = NULL, c->reply_len = 0, c->done = 0;
    lmf_detok_stream_init(&c->ds, c->tok);
    if (!rc) rc = lmf_engine_submit(c->eng, &p, NULL);
    while (!rc && !c->done) {
        int active = lmf_engine_step(c->eng);
        if (active < 0) rc = active;
    }
    char *rest = NULL; /* a character the last token left incomplete (U+FFFD, as HF decodes) */
    if (!rc && lmf_detok_stream_finish(&c->ds, &rest) == 0 && rest) append_reply(c, rest);
    free(rest);
    lmf_detok_stream_free(&c->ds);
    free(ids);
    printf("\n");
    return rc;
}

/* Interactive history that no longer leaves room to answer loses its oldest exchanges (the
 * last user message always stays; alone too long, the engine refuses it with a message). */
static int fit_history(chat *c, lmf_message *hist, int *n) {
    for (;;) {
        int32_t *ids;
        int n_ids, rc = prompt_ids(c, hist, *n, &ids, &n_ids);
        free(ids);
        if (rc || *n < 3 || n_ids + 16 < c->m->cfg.max_pos) return rc;
        free((char *)hist[0].content), free((char *)hist[1].content);
        memmove(hist, hist + 2, sizeof *hist * (size_t)(*n - 2));
        *n -= 2;
        fprintf(stderr, "(oldest exchange dropped: the context is full)\n");
    }
}

/* tp: rank 0 of a tensor-parallel group (api_tensor_parallel.c), or NULL. */
static int run(chat *c, const lmf_config *cfg, char **prompts, int n_prompts, lmf_cli_tp *tp) {
    const char *path = lmf_config_str(cfg, "model_name_or_path");
    int rc = tp ? lmf_cli_tp_load(tp, path, &c->m) : lmf_model_load(&c->m, path, lmf_backend_cpu());
    const char *adapter = lmf_config_str(cfg, "adapter_name_or_path");
    if (!rc && adapter) {
        rc = lmf_lora_load(&c->lora, c->m, adapter);
        c->m->lora = c->lora;
    }
    if (!rc) rc = lmf_cli_apply_infer_dtype(cfg, c->m);
    if (!rc) rc = lmf_tokenizer_load(&c->tok, lmf_config_str(cfg, "model_name_or_path"));
    if (!rc && !(c->tpl = lmf_template_find(
                     lmf_config_str(cfg, "template") ? lmf_config_str(cfg, "template") : "")))
        rc = lmf_error_prefix(LMF_EINVAL, "%s: template", cfg->path);
    lmf_engine_config ec;
    lmf_engine_config_defaults(&ec);
    if (!rc) rc = lmf_cli_kv_cache_dtype(cfg, c->m, &ec.kv_dtype);
    ec.n_blocks = (c->m ? c->m->cfg.max_pos : 1024) / ec.block_size + 1;
    if (tp) rc = lmf_cli_tp_agree(tp, rc, &ec, c->m);
    if (!rc) rc = lmf_engine_create(&c->eng, c->m, &ec);
    lmf_message hist[256];
    int n = 0;
    char line[8192];
    for (int i = 0; !rc; i++) {
        const char *text;
        if (n_prompts) {
            if (i >= n_prompts) break;
            text = prompts[i];
            n = 0; /* each --prompt is its own conversation */
            printf("user: %s\nassistant: ", text);
        } else {
            printf("user: ");
            fflush(stdout);
            if (!fgets(line, sizeof line, stdin)) break;
            line[strcspn(line, "\r\n")] = 0;
            if (!strcmp(line, "exit")) break;
            if (!strcmp(line, "clear") || n >= 254) {
                for (int k = 0; k < n; k++) free((char *)hist[k].content);
                n = 0;
                printf("(history cleared)\n");
                continue;
            }
            text = line;
            printf("assistant: ");
        }
        hist[n++] = (lmf_message){"user", lmf_strdup(text)};
        rc = fit_history(c, hist, &n);
        if (!rc) rc = reply(c, hist, n);
        hist[n++] = (lmf_message){"assistant", lmf_strdup(c->reply ? c->reply : "")};
        if (n_prompts)
            for (int k = 0; k < n; k++) free((char *)hist[k].content);
        if (n_prompts) n = 0;
    }
    for (int k = 0; k < n; k++) free((char *)hist[k].content);
    return rc;
}

int lmf_cmd_chat(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: lmforge chat CONFIG.yaml [--prompt TEXT ...] [key=value ...]\n");
        return argc < 2 ? 2 : 0;
    }
    char **prompts = calloc((size_t)argc, sizeof *prompts), **ov = calloc((size_t)argc, sizeof *ov);
    int n_prompts = 0, n_ov = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--prompt") && i + 1 < argc)
            prompts[n_prompts++] = argv[++i];
        else
            ov[n_ov++] = argv[i];
    }
    lmf_config cfg;
    int rc = lmf_config_load(&cfg, argv[1], ov, n_ov), code = -1;
    chat c = {0};
    lmf_cli_tp *tp = NULL;
    if (!rc) {
        lmf_cli_threads_from_config(&cfg);
        lmf_sampling_defaults(&c.sp);
        c.sp.temperature = (float)lmf_config_float(&cfg, "temperature");
        c.sp.top_p = (float)lmf_config_float(&cfg, "top_p");
        c.sp.top_k = (int)lmf_config_int(&cfg, "top_k");
        c.sp.repetition_penalty = (float)lmf_config_float(&cfg, "repetition_penalty");
        c.max_new = (int)lmf_config_int(&cfg, "max_new_tokens");
        c.system = lmf_config_str(&cfg, "default_system");
        if (!lmf_config_str(&cfg, "model_name_or_path"))
            rc = lmf_errorf(LMF_EINVAL, "%s: model_name_or_path is required", cfg.path);
        if (!rc && lmf_config_int(&cfg, "tensor_parallel_size") > 1)
            rc = lmf_cli_tp_begin(&cfg, "chat", argc, argv, &tp, &code);
        if (rc || code >= 0) {
        } else if (tp && lmf_cli_tp_rank(tp) > 0) {
            rc = lmf_cli_tp_worker(tp, &cfg);
        } else {
            rc = run(&c, &cfg, prompts, n_prompts, tp);
        }
        lmf_config_free(&cfg);
    }
    free(c.reply);
    lmf_engine_free(c.eng);
    lmf_lora_free(c.lora);
    lmf_model_free(c.m);
    lmf_tokenizer_free(c.tok);
    free(prompts), free(ov);
    lmf_cli_tp_end(tp, rc);
    return code >= 0 ? code : lmf_cli_fail("chat", rc);
}
