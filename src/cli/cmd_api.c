/* lmforge api CFG.yaml [key=value ...]: serves the config's model (and LoRA adapter) over
 * OpenAI's HTTP API, reading API_HOST, API_PORT, API_KEY and API_MODEL_NAME as LLaMA-Factory's
 * `llamafactory-cli api` does; with tensor_parallel_size > 1 as rank 0 of a group of shards
 * (api_tensor_parallel.c). The server listens before the model loads (/health says 503
 * until it is ready); SIGINT or SIGTERM stop accepting, let in-flight requests finish, and
 * exit 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "lmforge/engine.h"
#include "lmforge/error.h"
#include "lmforge/gguf.h"
#include "lmforge/quant.h"
#include "lmforge/server.h"

enum { DRAIN_SECONDS = 60 };

enum { MAX_ADAPTERS = 64 };

typedef struct api {
    lmf_model *m;
    lmf_lora *lora;
    lmf_lora *adapters[MAX_ADAPTERS]; /* lora_modules */
    char *adapter_names[MAX_ADAPTERS];
    int n_adapters;
    lmf_tokenizer *tok;
    lmf_engine *eng;
    lmf_server *srv;
} api;

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

int lmf_cli_api_env(const struct lmf_config *cfg, int min_port, const char **host, int *port,
                    const char **api_key) {
    if (env("API_HOST")) *host = env("API_HOST");
    if (env("API_PORT")) {
        long long p;
        int rc = lmf_cli_int(env("API_PORT"), "API_PORT", min_port, 65535, &p);
        if (rc) return rc;
        *port = (int)p;
    }
    *api_key = env("API_KEY") ? env("API_KEY") : lmf_config_str(cfg, "api_key");
    return 0;
}

/* The engine's pool and limits from the config: kv_cache_bytes, or room for max_num_seqs full
 * contexts capped at 1 GiB, never less than one full context. */
static int engine_config(const lmf_config *cfg, const lmf_model *m, lmf_engine_config *ec) {
    lmf_engine_config_defaults(ec);
    ec->block_size = (int)lmf_config_int(cfg, "kv_block_size");
    ec->max_running = (int)lmf_config_int(cfg, "max_num_seqs");
    ec->max_batch_tokens = (int)lmf_config_int(cfg, "max_num_batched_tokens");
    ec->max_waiting = (int)lmf_config_int(cfg, "max_waiting_requests");
    ec->prefix_caching = lmf_config_bool(cfg, "enable_prefix_caching");
    int rc = lmf_cli_kv_cache_dtype(cfg, m, &ec->kv_dtype);
    if (rc) return rc;
    size_t per_block = lmf_kv_bytes_per_block(&m->cfg, ec->block_size, ec->kv_dtype);
    long long ctx_blocks = (m->cfg.max_pos + ec->block_size - 1) / ec->block_size + 1;
    long long n;
    if (lmf_config_is_set(cfg, "kv_cache_bytes")) {
        n = lmf_config_int(cfg, "kv_cache_bytes") / (long long)per_block;
        if (n < 1)
            return lmf_errorf(
                LMF_EINVAL, "%s: kv_cache_bytes %lld is less than one KV block (%zu bytes)",
                cfg->path, (long long)lmf_config_int(cfg, "kv_cache_bytes"), per_block);
    } else {
        n = ctx_blocks * ec->max_running;
        if (n * (long long)per_block > (1ll << 30)) n = (1ll << 30) / (long long)per_block;
        if (n < ctx_blocks) n = ctx_blocks;
    }
    if (n > (1 << 30)) n = 1 << 30;
    ec->n_blocks = (int)n;
    printf("KV cache: %d blocks x %d tokens = %lld tokens, %.1f MiB (%zu bytes per block, %s)\n",
           ec->n_blocks, ec->block_size, (long long)ec->n_blocks * ec->block_size,
           (double)per_block * ec->n_blocks / (1 << 20), per_block,
           lmf_kv_dtype_name(ec->kv_dtype));
    return 0;
}

static int server_config(const lmf_config *cfg, lmf_server_config *sc) {
    lmf_server_config_defaults(sc);
    int rc = lmf_cli_api_env(cfg, 0, &sc->host, &sc->port, &sc->api_key);
    if (rc) return rc;
    if (env("API_MODEL_NAME")) sc->model_name = env("API_MODEL_NAME");
    sc->model_path = lmf_config_str(cfg, "model_name_or_path");
    sc->max_body_bytes = (size_t)lmf_config_int(cfg, "max_request_bytes");
    sc->default_max_tokens = (int)lmf_config_int(cfg, "max_new_tokens");
    sc->sampling.temperature = (float)lmf_config_float(cfg, "temperature");
    sc->sampling.top_p = (float)lmf_config_float(cfg, "top_p");
    sc->sampling.top_k = (int)lmf_config_int(cfg, "top_k");
    sc->sampling.repetition_penalty = (float)lmf_config_float(cfg, "repetition_penalty");
    if (sc->sampling.top_p <= 0)
        return lmf_errorf(LMF_EINVAL, "%s: top_p must be greater than 0", cfg->path);
    sc->default_system = lmf_config_str(cfg, "default_system");
    sc->enable_thinking = lmf_config_bool(cfg, "enable_thinking");
    return 0;
}

/* A GGUF model whose linears are in a block format lmforge multiplies with (Q8_0, Q4_0, Q4_1,
 * Q4_K: blk.0.attn_q.weight's type) is served in that format when infer_dtype is auto, as
 * llama.cpp would: the file's blocks are dequantized on load, then quantized again (near
 * lossless: the same scales up to f16 rounding). Non-zero with *q set when so. */
static int gguf_format(const lmf_config *cfg, lmf_qtype *q) {
    const char *path = lmf_config_str(cfg, "model_name_or_path");
    lmf_gguf g;
    if (!path || !lmf_path_is_gguf(path) || lmf_gguf_open(&g, path)) return 0;
    const lmf_gguf_tensor *t = lmf_gguf_find_tensor(&g, "blk.0.attn_q.weight");
    int ok = t && lmf_ggml_to_qtype(t->type, q) == 0;
    if (ok)
        lmf_info("%s holds %s blocks: serving them as %s (infer_dtype float32 serves the "
                 "dequantized weights)",
                 path, lmf_ggml_type_name(t->type), lmf_qtype_name(*q));
    lmf_gguf_close(&g);
    return ok;
}

/* The weights the server multiplies with: infer_dtype float32 / bfloat16 / a block-quantized
 * format (q8_0, q4_0, q4_1, q4_k, nf4, fp4), or LLaMA-Factory's quantization_bit (8 or 4, with
 * quantization_type), which quantize the base on load as QLoRA training does; auto is the
 * format of a GGUF file's linears, else float32. */
int lmf_cli_apply_infer_dtype(const lmf_config *cfg, lmf_model *m) {
    const char *t = lmf_config_str(cfg, "infer_dtype");
    int auto_t = !t || !strcmp(t, "auto"), rc = 0;
    lmf_qtype q;
    int quant = 0;
    if (lmf_config_is_set(cfg, "quantization_bit")) {
        if (!auto_t && strcmp(t, "float32"))
            return lmf_errorf(LMF_EINVAL,
                              "%s: infer_dtype \"%s\" and quantization_bit %lld: set one of them",
                              cfg->path, t, (long long)lmf_config_int(cfg, "quantization_bit"));
        if ((rc = lmf_qtype_from_bits((int)lmf_config_int(cfg, "quantization_bit"),
                                      lmf_config_str(cfg, "quantization_type"), &q)))
            return lmf_error_prefix(rc, "%s", cfg->path);
        quant = 1;
    } else if (auto_t && gguf_format(cfg, &q)) {
        quant = 1;
    } else if (!auto_t && strcmp(t, "float32") && strcmp(t, "bfloat16")) {
        if (lmf_qtype_parse(t, &q))
            return lmf_errorf(LMF_EINVAL,
                              "%s: infer_dtype \"%s\": expected auto, float32, bfloat16, q8_0, "
                              "q4_0, q4_1, q4_k, nf4 or fp4",
                              cfg->path, t);
        quant = 1;
    }
    if (quant) {
        if ((rc = lmf_model_quantize_base(m, (int)q)))
            return lmf_error_prefix(rc, "%s: quantizing the base model as %s", cfg->path,
                                    lmf_qtype_name(q));
        size_t f32, held = lmf_model_base_bytes(m, &f32);
        lmf_info("weights: %s, %.2f MB (%.2f MB quantized + float32 norms) instead of %.2f MB in "
                 "float32 (%.2fx)",
                 lmf_qtype_name(q), (double)held / 1e6, (double)m->qbytes / 1e6, (double)f32 / 1e6,
                 (double)held / (double)f32);
        return 0;
    }
    if (auto_t || !strcmp(t, "float32")) return 0;
    return lmf_model_set_infer_dtype(m, LMF_BF16);
}

int lmf_cli_kv_cache_dtype(const lmf_config *cfg, const lmf_model *m, lmf_kv_dtype *out) {
    const char *t = lmf_config_str(cfg, "kv_cache_dtype");
    *out = LMF_KV_F32;
    if (!t || !strcmp(t, "auto")) {
        *out = lmf_kv_dtype_auto(m);
        return 0;
    }
    if (lmf_kv_dtype_parse(t, out))
        return lmf_errorf(LMF_EINVAL,
                          "%s: kv_cache_dtype \"%s\": expected auto, float32, bfloat16 or int8",
                          cfg->path, t);
    return 0;
}

/* lora_modules: "name=path,name2=path2", each adapter loaded on the base without merging. */
static int load_lora_modules(api *a, const lmf_config *cfg) {
    const char *spec = lmf_config_str(cfg, "lora_modules");
    if (!spec || !spec[0]) return 0;
    char *list = lmf_strdup(spec), *save = NULL;
    int rc = list ? 0 : lmf_errorf(LMF_ENOMEM, "out of memory");
    for (char *item = list ? strtok_r(list, ",", &save) : NULL; item && !rc;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item || !eq[1]) {
            rc = lmf_errorf(LMF_EINVAL, "%s: lora_modules: \"%s\" is not name=path", cfg->path,
                            item);
            break;
        }
        *eq = 0;
        for (int i = 0; i < a->n_adapters; i++)
            if (!strcmp(a->adapter_names[i], item))
                rc = lmf_errorf(LMF_EINVAL, "%s: lora_modules: the name \"%s\" is given twice",
                                cfg->path, item);
        if (!rc && a->n_adapters == MAX_ADAPTERS)
            rc = lmf_errorf(LMF_EINVAL, "%s: lora_modules: more than %d adapters", cfg->path,
                            MAX_ADAPTERS);
        if (rc) break;
        lmf_lora *l = NULL;
        if ((rc = lmf_lora_load(&l, a->m, eq + 1))) {
            rc = lmf_error_prefix(rc, "%s: lora_modules: %s", cfg->path, item);
            break;
        }
        if (l->modules_to_save[0]) {
            rc = lmf_errorf(LMF_EINVAL,
                            "%s: lora_modules: %s has modules_to_save (%s), which replace base "
                            "weights for every request; serve it alone with adapter_name_or_path",
                            cfg->path, item, l->modules_to_save);
            lmf_lora_free(l);
            break;
        }
        a->adapters[a->n_adapters] = l;
        a->adapter_names[a->n_adapters++] = lmf_strdup(item);
        printf("lmforge api: adapter %s (r %d) from %s\n", item, l->r, eq + 1);
    }
    free(list);
    return rc;
}

/* tp: rank 0 of a tensor-parallel group, which loads only its shard; or NULL. */
static int load(api *a, const lmf_config *cfg, const lmf_template **tpl, lmf_cli_tp *tp) {
    const char *path = lmf_config_str(cfg, "model_name_or_path");
    int rc = tp ? lmf_cli_tp_load(tp, path, &a->m) : lmf_model_load(&a->m, path, lmf_backend_cpu());
    const char *adapter = lmf_config_str(cfg, "adapter_name_or_path");
    if (!rc && adapter) {
        rc = lmf_lora_load(&a->lora, a->m, adapter);
        if (!rc) a->m->lora = a->lora;
    }
    if (!rc) rc = load_lora_modules(a, cfg);
    if (!rc) rc = lmf_tokenizer_load(&a->tok, path);
    const char *name = lmf_config_str(cfg, "template");
    *tpl = NULL;
    if (!rc && name && !(*tpl = lmf_template_find(name)))
        rc = lmf_error_prefix(LMF_EINVAL, "%s: template", cfg->path);
    if (!rc && !name)
        fprintf(stderr, "lmforge api: no `template` in %s: /v1/chat/completions is disabled\n",
                cfg->path);
    return rc;
}

/* tp: rank 0 of a tensor-parallel group (api_tensor_parallel.c), or NULL. */
static int serve(api *a, const lmf_config *cfg, lmf_cli_tp *tp) {
    lmf_server_config sc;
    int rc = server_config(cfg, &sc);
    /* Every thread started from here on inherits the blocked signals; sigwait takes them. */
    sigset_t sigs;
    lmf_cli_block_stop_signals(&sigs);
    if (tp) sigaddset(&sigs, SIGUSR1); /* the launcher's stop, forwarded by mpirun (blocked) */
    if (!rc) rc = lmf_server_start(&a->srv, &sc);
    if (rc) return rc;
    printf("lmforge api: listening on http://%s:%d (model %s)%s\n", sc.host, sc.port, sc.model_name,
           sc.api_key && sc.api_key[0] ? ", API key required" : "");
    fflush(stdout);
    const lmf_template *tpl = NULL;
    lmf_engine_config ec;
    rc = load(a, cfg, &tpl, tp);
    if (!rc) rc = lmf_cli_apply_infer_dtype(cfg, a->m);
    if (!rc) rc = engine_config(cfg, a->m, &ec);
    if (tp) rc = lmf_cli_tp_agree(tp, rc, &ec, a->m);
    if (!rc) rc = lmf_engine_create(&a->eng, a->m, &ec);
    for (int i = 0; i < a->n_adapters && !rc; i++)
        rc = lmf_server_add_adapter(a->srv, a->adapter_names[i], a->adapters[i]);
    if (!rc) rc = lmf_server_ready(a->srv, a->m, a->tok, tpl, a->eng);
    if (rc) return rc;
    printf("lmforge api: ready\n");
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    printf("lmforge api: %s: finishing in-flight requests, then exiting\n", sig == SIGINT ? "SIGINT"
                                                                            : sig == SIGUSR1
                                                                                ? "SIGUSR1"
                                                                                : "SIGTERM");
    fflush(stdout);
    lmf_server_shutdown(a->srv, DRAIN_SECONDS);
    return 0;
}

int lmf_cmd_api(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: lmforge api CONFIG.yaml [key=value ...]\n\n"
                "Serves the config's model over OpenAI's API. Environment: API_HOST (127.0.0.1),\n"
                "API_PORT (8000), API_KEY (or the api_key key), API_MODEL_NAME (gpt-3.5-turbo).\n"
                "data_parallel_size: N starts N replicas on ports API_PORT+1..+N behind a router\n"
                "on API_PORT (see `lmforge router --help`).\n"
                "tensor_parallel_size: N splits the model over N ranks started under mpirun\n"
                "(`hostfile` or NNODES/NODE_RANK/MASTER_ADDR for several nodes); rank 0 serves.\n");
        return argc < 2 ? 2 : 0;
    }
    lmf_config cfg;
    int rc = lmf_config_load(&cfg, argv[1], argv + 2, argc - 2), code = -1;
    api a = {0};
    lmf_cli_tp *tp = NULL;
    if (!rc) {
        lmf_cli_threads_from_config(&cfg);
        if (!lmf_config_str(&cfg, "model_name_or_path"))
            rc = lmf_errorf(LMF_EINVAL, "%s: model_name_or_path is required", cfg.path);
        if (!rc && lmf_config_int(&cfg, "tensor_parallel_size") > 1)
            rc = lmf_cli_tp_begin(&cfg, "api", argc, argv, &tp, &code);
        if (rc || code >= 0) {
        } else if (tp && lmf_cli_tp_rank(tp) > 0) {
            rc = lmf_cli_tp_worker(tp, &cfg);
        } else if (lmf_config_int(&cfg, "data_parallel_size") > 1) {
            rc = lmf_cli_api_replicas(&cfg, argc, argv);
        } else {
            rc = serve(&a, &cfg, tp);
        }
        lmf_config_free(&cfg);
    }
    lmf_server_free(a.srv);
    lmf_engine_free(a.eng);
    lmf_lora_free(a.lora);
    for (int i = 0; i < a.n_adapters; i++) lmf_lora_free(a.adapters[i]), free(a.adapter_names[i]);
    lmf_model_free(a.m);
    lmf_tokenizer_free(a.tok);
    lmf_cli_tp_end(tp, rc);
    return code >= 0 ? code : lmf_cli_fail("api", rc);
}
