/* lmforge export CFG.yaml [key=value ...]: LLaMA-Factory's merge config (model_name_or_path,
 * adapter_name_or_path, export_dir, export_size in GB) -> a Hugging Face folder with the LoRA
 * adapter folded into the base weights, sharded by export_size, tokenizer files copied; or, with
 * an export_dir ending in .gguf, one GGUF file (export_quantization_bit 8 or 4: Q8_0 / Q4_K
 * weights) with the tokenizer embedded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "lmforge/error.h"
#include "lmforge/gguf_model.h"
#include "lmforge/model.h"
#include "lmforge/tokenizer.h"

static int export_gguf(const lmf_config *c, const lmf_model *m, const char *model_dir,
                       const char *out) {
    lmf_gguf_save_opts o = {.weight_type = m->cfg.file_dtype == LMF_F16    ? LMF_GGML_F16
                                           : m->cfg.file_dtype == LMF_BF16 ? LMF_GGML_BF16
                                                                           : LMF_GGML_F32};
    if (lmf_config_is_set(c, "export_quantization_bit")) {
        int64_t bits = lmf_config_int(c, "export_quantization_bit");
        if (bits != 4 && bits != 8)
            return lmf_errorf(LMF_EINVAL, "%s: export_quantization_bit: expected 4 or 8, got %lld",
                              c->path, (long long)bits);
        o.weight_type = bits == 8 ? LMF_GGML_Q8_0 : LMF_GGML_Q4_K;
    }
    char *tj = lmf_path_join(model_dir, "tokenizer.json");
    if (!tj) return lmf_errorf(LMF_ENOMEM, "out of memory");
    if (lmf_path_exists(tj) || lmf_path_is_gguf(model_dir))
        o.tokenizer_dir = model_dir;
    else
        fprintf(stderr, "lmforge export: no tokenizer in %s; the GGUF file gets none\n", model_dir);
    free(tj);
    return lmf_model_save_gguf(m, out, &o);
}

static int run_export(const lmf_config *c) {
    const char *model_dir = lmf_config_str(c, "model_name_or_path"),
               *adapter = lmf_config_str(c, "adapter_name_or_path");
    const char *out = lmf_config_str(c, "export_dir");
    if (!model_dir) return lmf_errorf(LMF_EINVAL, "%s: model_name_or_path is required", c->path);
    if (!out) return lmf_errorf(LMF_EINVAL, "%s: export_dir is required", c->path);
    if (lmf_config_bool(c, "export_legacy_format"))
        return lmf_errorf(
            LMF_EUNSUPPORTED,
            "%s: export_legacy_format (.bin files) is not supported; safetensors only", c->path);
    if (lmf_config_is_set(c, "quantization_bit"))
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: quantization_bit is not available in this build yet", c->path);
    if (adapter && strcmp(lmf_config_str(c, "finetuning_type"), "lora"))
        return lmf_errorf(LMF_EINVAL, "%s: adapter_name_or_path needs finetuning_type: lora",
                          c->path);
    lmf_model *m = NULL;
    lmf_lora *l = NULL;
    int rc = lmf_model_load(&m, model_dir, lmf_backend_cpu());
    if (!rc && adapter && !(rc = lmf_lora_load(&l, m, adapter))) lmf_lora_merge(l, m);
    size_t shard = (size_t)lmf_config_int(c, "export_size") << 30;
    size_t olen = strlen(out);
    if (!rc && olen > 5 && !strcmp(out + olen - 5, ".gguf"))
        rc = export_gguf(c, m, model_dir, out);
    else if (!rc && lmf_config_is_set(c, "export_quantization_bit"))
        rc = lmf_errorf(LMF_EUNSUPPORTED,
                        "%s: export_quantization_bit needs an export_dir ending in .gguf", c->path);
    else if (!rc && !(rc = lmf_model_save_sharded(m, out, shard)))
        rc = lmf_tokenizer_copy_files(model_dir, out);
    if (!rc)
        printf("exported %s%s%s to %s\n", model_dir, adapter ? " + " : "", adapter ? adapter : "",
               out);
    lmf_lora_free(l);
    lmf_model_free(m);
    return rc;
}

int lmf_cmd_export(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout, "usage: lmforge export CONFIG.yaml [key=value ...]\n");
        return argc < 2 ? 2 : 0;
    }
    lmf_config c;
    int rc = lmf_config_load(&c, argv[1], argv + 2, argc - 2);
    if (rc) return lmf_cli_fail("export", rc);
    lmf_cli_threads_from_config(&c);
    rc = run_export(&c);
    lmf_config_free(&c);
    return lmf_cli_fail("export", rc);
}
