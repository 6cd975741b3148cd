/* lmforge init-model: writes a randomly initialised model folder in Hugging Face's layout,
 * optionally with a tokenizer copied in and the vocabulary sized to fit it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "lmforge/json.h"
#include "lmforge/model.h"
#include "lmforge/tokenizer.h"

/* Id of a special token named in tokenizer_config.json (a string or {"content": ...}). */
static int special_id(const cJSON *tcfg, const char *key, const cJSON *vocab, const cJSON *added) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(tcfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v)) return -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, added) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (cJSON_IsString(c) && cJSON_IsNumber(id) && !strcmp(c->valuestring, v->valuestring))
            return id->valueint;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(vocab, v->valuestring);
    return cJSON_IsNumber(id) ? id->valueint : -1;
}

/* Sizes cfg->vocab to the tokenizer (largest id + 1) and takes bos/eos from it. */
static int fit_tokenizer(lmf_model_config *cfg, const char *dir) {
    char *path = lmf_path_join(dir, "tokenizer.json");
    cJSON *tok = NULL, *tcfg = NULL;
    int rc = path ? lmf_json_load(path, &tok) : LMF_ENOMEM;
    if (rc) goto done;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tok, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tok, "added_tokens");
    if (!cJSON_IsObject(vocab)) {
        rc =
            lmf_errorf(LMF_EFORMAT, "%s: \"model.vocab\": expected an object of token -> id", path);
        goto done;
    }
    int max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valueint < 0) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: model.vocab[\"%s\"]: expected a non-negative id",
                            path, it->string);
            goto done;
        }
        if (it->valueint > max_id) max_id = it->valueint;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (cJSON_IsNumber(id) && id->valueint > max_id) max_id = id->valueint;
    }
    if (max_id < 0) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: empty vocabulary", path);
        goto done;
    }
    cfg->vocab = max_id + 1;
    free(path);
    path = lmf_path_join(dir, "tokenizer_config.json");
    cfg->bos_id = cfg->eos_id = -1;
    if (path && lmf_path_exists(path)) {
        if ((rc = lmf_json_load(path, &tcfg))) goto done;
        cfg->bos_id = special_id(tcfg, "bos_token", vocab, added);
        cfg->eos_id = special_id(tcfg, "eos_token", vocab, added);
    }
done:
    free(path);
    cJSON_Delete(tok);
    cJSON_Delete(tcfg);
    return rc;
}

static int usage(int code) {
    fprintf(code ? stderr : stdout, "usage: lmforge init-model --arch llama|mistral|qwen2|qwen3 "
                                    "--preset tiny|llama-110m|smollm-135m\n"
                                    "                          --out DIR [--seed N] [--tokenizer "
                                    "DIR] [--dtype float32|bfloat16] [--ffn N]\n");
    return code;
}

int lmf_cmd_init_model(int argc, char **argv) {
    const char *arch_s = "llama", *preset = NULL, *out = NULL, *tok = NULL, *dtype = "float32";
    long long seed = 0, ffn = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help")) return usage(0);
        if (!strcmp(a, "--arch") || !strcmp(a, "--preset") || !strcmp(a, "--out") ||
            !strcmp(a, "--seed") || !strcmp(a, "--tokenizer") || !strcmp(a, "--dtype") ||
            !strcmp(a, "--ffn")) {
            if (!(v = lmf_cli_value(argc, argv, &i, "init-model"))) return 2;
        } else {
            fprintf(stderr, "lmforge init-model: error: unknown option \"%s\"\n", a);
            return usage(2);
        }
        if (!strcmp(a, "--arch")) arch_s = v;
        if (!strcmp(a, "--preset")) preset = v;
        if (!strcmp(a, "--out")) out = v;
        if (!strcmp(a, "--tokenizer")) tok = v;
        if (!strcmp(a, "--dtype")) dtype = v;
        if (!strcmp(a, "--seed") && lmf_cli_int(v, "--seed", 0, (1LL << 62), &seed))
            return lmf_cli_fail("init-model", LMF_EINVAL);
        if (!strcmp(a, "--ffn") && lmf_cli_int(v, "--ffn", 1, 1 << 20, &ffn))
            return lmf_cli_fail("init-model", LMF_EINVAL);
    }
    if (!preset || !out) {
        fprintf(stderr, "lmforge init-model: error: --preset and --out are required\n");
        return usage(2);
    }
    lmf_arch arch;
    lmf_model_config cfg;
    int rc = lmf_arch_parse(arch_s, &arch);
    if (!rc) rc = lmf_model_preset(&cfg, arch, preset);
    if (!rc && ffn) cfg.ffn = (int)ffn; /* the preset's intermediate size replaced */
    if (!rc && strcmp(dtype, "float32") && strcmp(dtype, "bfloat16"))
        rc = lmf_errorf(LMF_EINVAL, "--dtype: expected float32 or bfloat16, got \"%s\"", dtype);
    cfg.file_dtype = strcmp(dtype, "bfloat16") ? LMF_F32 : LMF_BF16;
    if (!rc && tok) rc = fit_tokenizer(&cfg, tok);
    lmf_model *m = NULL;
    if (!rc) rc = lmf_model_create(&m, &cfg, lmf_backend_cpu());
    if (!rc) {
        lmf_model_init_random(m, (uint64_t)seed);
        rc = lmf_model_save(m, out);
    }
    if (!rc && tok) rc = lmf_tokenizer_copy_files(tok, out);
    if (!rc) {
        size_t n = 0;
        for (int i = 0; i < m->n_params; i++) n += m->table[i].numel;
        printf("wrote %s: %s, %s preset, %.2fM parameters, vocab %d%s\n", out,
               lmf_arch_hf_name(arch), preset, n / 1e6, cfg.vocab, tok ? " (from tokenizer)" : "");
    }
    lmf_model_free(m);
    return lmf_cli_fail("init-model", rc);
}
