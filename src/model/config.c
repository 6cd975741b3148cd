/* Model configuration: Hugging Face config.json in and out, presets, RoPE frequencies. */
#include "lmforge/json.h"
#include "lmforge/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *hf, *short_name, *model_type;
} archs[] = {
    [LMF_ARCH_LLAMA] = {"LlamaForCausalLM", "llama", "llama"},
    [LMF_ARCH_MISTRAL] = {"MistralForCausalLM", "mistral", "mistral"},
    [LMF_ARCH_QWEN2] = {"Qwen2ForCausalLM", "qwen2", "qwen2"},
    [LMF_ARCH_QWEN3] = {"Qwen3ForCausalLM", "qwen3", "qwen3"},
};
#define N_ARCH (int)(sizeof archs / sizeof archs[0])

const char *lmf_arch_hf_name(lmf_arch a) {
    return archs[a].hf;
}

int lmf_arch_parse(const char *name, lmf_arch *out) {
    for (int i = 0; i < N_ARCH; i++)
        if (!strcmp(name, archs[i].short_name) || !strcmp(name, archs[i].hf)) {
            *out = (lmf_arch)i;
            return 0;
        }
    return lmf_errorf(
        LMF_EINVAL, "unknown architecture \"%s\" (expected llama, mistral, qwen2 or qwen3)", name);
}

static void defaults_for(lmf_model_config *c, lmf_arch arch) {
    memset(c, 0, sizeof *c);
    c->arch = arch;
    c->rms_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->init_range = 0.02f;
    c->max_pos = 2048;
    c->attn_bias = arch == LMF_ARCH_QWEN2;
    c->qk_norm = arch == LMF_ARCH_QWEN3;
    c->rope_kind = LMF_ROPE_DEFAULT;
    c->file_dtype = LMF_F32;
    c->bos_id = -1;
    c->eos_id = -1;
}

int lmf_model_config_validate(const lmf_model_config *c, const char *what) {
#define NEED(cond, ...)                                                                            \
    if (!(cond)) return lmf_errorf(LMF_EINVAL, __VA_ARGS__)
    NEED(c->hidden > 0, "%s: hidden_size must be positive", what);
    NEED(c->layers > 0, "%s: num_hidden_layers must be positive", what);
    NEED(c->heads > 0, "%s: num_attention_heads must be positive", what);
    NEED(c->kv_heads > 0 && c->heads % c->kv_heads == 0,
         "%s: num_key_value_heads (%d) must divide num_attention_heads (%d)", what, c->kv_heads,
         c->heads);
    NEED(c->head_dim > 0 && c->head_dim % 2 == 0, "%s: head_dim (%d) must be positive and even",
         what, c->head_dim);
    NEED(c->ffn > 0, "%s: intermediate_size must be positive", what);
    NEED(c->vocab > 0, "%s: vocab_size must be positive", what);
    NEED(c->rms_eps > 0, "%s: rms_norm_eps must be positive", what);
    NEED(c->rope_theta > 0, "%s: rope_theta must be positive", what);
    NEED(c->max_pos > 0, "%s: max_position_embeddings must be positive", what);
    NEED((int64_t)c->hidden * c->vocab < ((int64_t)1 << 40), "%s: model too large", what);
    if (c->rope_kind != LMF_ROPE_DEFAULT)
        NEED(c->rope_factor > 0, "%s: rope_scaling.factor must be positive", what);
    if (c->rope_kind == LMF_ROPE_LLAMA3)
        NEED(c->rope_high_freq > c->rope_low_freq && c->rope_low_freq > 0 &&
                 c->rope_orig_max_pos > 0,
             "%s: rope_scaling (llama3) needs 0 < low_freq_factor < high_freq_factor and "
             "original_max_position_embeddings > 0",
             what);
#undef NEED
    return 0;
}

static int get_int_key(const cJSON *j, const char *key, const char *path, int *out, int required) {
    int64_t v;
    int rc = lmf_json_get_int(j, key, path, &v);
    if (rc < 0) return rc;
    if (rc == 0) {
        if (required) return lmf_errorf(LMF_EFORMAT, "%s: missing required key \"%s\"", path, key);
        return 0;
    }
    if (v < -1 || v > 1 << 30)
        return lmf_errorf(LMF_ERANGE, "%s: \"%s\": %lld out of range", path, key, (long long)v);
    *out = (int)v;
    return 0;
}

static int get_float_key(const cJSON *j, const char *key, const char *path, float *out) {
    double v;
    int rc = lmf_json_get_num(j, key, path, &v);
    if (rc < 0) return rc;
    if (rc > 0) *out = (float)v;
    return 0;
}

static int parse_rope_scaling(lmf_model_config *c, const cJSON *rs, const char *path) {
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs))
        return lmf_errorf(LMF_EFORMAT, "%s: \"rope_scaling\": expected an object or null", path);
    const char *type = NULL;
    int rc = lmf_json_get_str(rs, "rope_type", path, &type);
    if (rc == 0) rc = lmf_json_get_str(rs, "type", path, &type);
    if (rc < 0) return rc;
    if (!type) return lmf_errorf(LMF_EFORMAT, "%s: \"rope_scaling\": missing \"rope_type\"", path);
    if (!strcmp(type, "default")) return 0;
    if (!strcmp(type, "linear"))
        c->rope_kind = LMF_ROPE_LINEAR;
    else if (!strcmp(type, "llama3"))
        c->rope_kind = LMF_ROPE_LLAMA3;
    else
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: \"rope_scaling\": rope_type \"%s\" is not supported (supported: "
                          "default, linear, llama3)",
                          path, type);
    if ((rc = get_float_key(rs, "factor", path, &c->rope_factor))) return rc;
    if (c->rope_kind == LMF_ROPE_LLAMA3) {
        c->rope_low_freq = 1.0f;
        c->rope_high_freq = 4.0f;
        if ((rc = get_float_key(rs, "low_freq_factor", path, &c->rope_low_freq))) return rc;
        if ((rc = get_float_key(rs, "high_freq_factor", path, &c->rope_high_freq))) return rc;
        if ((rc = get_int_key(rs, "original_max_position_embeddings", path, &c->rope_orig_max_pos,
                              1)))
            return rc;
    }
    return 0;
}

static int parse_config(lmf_model_config *c, const cJSON *j, const char *path) {
    if (!cJSON_IsObject(j)) return lmf_errorf(LMF_EFORMAT, "%s: expected a JSON object", path);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "architectures");
    const char *arch_name = NULL;
    if (cJSON_IsArray(arr) && cJSON_GetArraySize(arr) >= 1 &&
        cJSON_IsString(cJSON_GetArrayItem(arr, 0)))
        arch_name = cJSON_GetArrayItem(arr, 0)->valuestring;
    if (!arch_name)
        return lmf_errorf(LMF_EFORMAT,
                          "%s: \"architectures\": expected a list with the model class name", path);
    int found = -1;
    for (int i = 0; i < N_ARCH; i++)
        if (!strcmp(arch_name, archs[i].hf)) found = i;
    if (found < 0)
        return lmf_errorf(
            LMF_EUNSUPPORTED,
            "%s: \"architectures\": %s is not supported (supported: LlamaForCausalLM, "
            "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)",
            path, arch_name);
    defaults_for(c, (lmf_arch)found);
    int rc;
    if ((rc = get_int_key(j, "hidden_size", path, &c->hidden, 1)) ||
        (rc = get_int_key(j, "num_hidden_layers", path, &c->layers, 1)) ||
        (rc = get_int_key(j, "num_attention_heads", path, &c->heads, 1)) ||
        (rc = get_int_key(j, "intermediate_size", path, &c->ffn, 1)) ||
        (rc = get_int_key(j, "vocab_size", path, &c->vocab, 1)))
        return rc;
    c->kv_heads = c->heads;
    if ((rc = get_int_key(j, "num_key_value_heads", path, &c->kv_heads, 0))) return rc;
    c->head_dim = c->heads > 0 ? c->hidden / c->heads : 0;
    if ((rc = get_int_key(j, "head_dim", path, &c->head_dim, 0))) return rc;
    if ((rc = get_int_key(j, "max_position_embeddings", path, &c->max_pos, 0))) return rc;
    if ((rc = get_float_key(j, "rms_norm_eps", path, &c->rms_eps)) ||
        (rc = get_float_key(j, "rope_theta", path, &c->rope_theta)) ||
        (rc = get_float_key(j, "initializer_range", path, &c->init_range)))
        return rc;
    int b = 0;
    c->tied = 0;
    if ((rc = lmf_json_get_bool(j, "tie_word_embeddings", path, &b)) < 0) return rc;
    c->tied = rc > 0 ? b : 0; /* transformers' default for these classes */
    if (c->arch != LMF_ARCH_QWEN2) {
        /* Llama/Mistral/Qwen3 put that bias on o_proj too, which lmforge does not implement. */
        if ((rc = lmf_json_get_bool(j, "attention_bias", path, &b)) < 0) return rc;
        if (rc > 0 && b)
            return lmf_errorf(LMF_EUNSUPPORTED,
                              "%s: \"attention_bias\": true is not supported for %s (biases on "
                              "q/k/v/o projections)",
                              path, arch_name);
    }
    if ((rc = lmf_json_get_bool(j, "mlp_bias", path, &b)) < 0) return rc;
    if (rc > 0 && b)
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: \"mlp_bias\": true is not supported", path);
    const char *act = NULL;
    if ((rc = lmf_json_get_str(j, "hidden_act", path, &act)) < 0) return rc;
    if (act && strcmp(act, "silu"))
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: \"hidden_act\": \"%s\" is not supported (expected silu)", path, act);
    /* transformers' MistralConfig defaults sliding_window to 4096 when the key is absent. */
    if (c->arch == LMF_ARCH_MISTRAL && !cJSON_GetObjectItemCaseSensitive(j, "sliding_window"))
        c->sliding_window = 4096;
    if ((rc = get_int_key(j, "sliding_window", path, &c->sliding_window, 0))) return rc;
    if (c->arch == LMF_ARCH_QWEN2 || c->arch == LMF_ARCH_QWEN3) {
        /* Qwen configs carry a sliding_window that only applies with use_sliding_window. */
        int use = 0;
        if ((rc = lmf_json_get_bool(j, "use_sliding_window", path, &use)) < 0) return rc;
        if (!use) c->sliding_window = 0;
    }
    if ((rc = parse_rope_scaling(c, cJSON_GetObjectItemCaseSensitive(j, "rope_scaling"), path)))
        return rc;
    const char *dt = NULL;
    if ((rc = lmf_json_get_str(j, "torch_dtype", path, &dt)) < 0) return rc;
    if (dt) {
        if (!strcmp(dt, "bfloat16"))
            c->file_dtype = LMF_BF16;
        else if (!strcmp(dt, "float16"))
            c->file_dtype = LMF_F16;
        else if (!strcmp(dt, "float32"))
            c->file_dtype = LMF_F32;
    }
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(j, "eos_token_id");
    if (cJSON_IsArray(eos)) eos = cJSON_GetArrayItem(eos, 0);
    if (cJSON_IsNumber(eos)) c->eos_id = eos->valueint;
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(j, "bos_token_id");
    if (cJSON_IsNumber(bos)) c->bos_id = bos->valueint;
    return lmf_model_config_validate(c, path);
}

int lmf_model_config_load(lmf_model_config *c, const char *path) {
    cJSON *j;
    int rc = lmf_json_load(path, &j);
    if (rc) return rc;
    rc = parse_config(c, j, path);
    cJSON_Delete(j);
    return rc;
}

char *lmf_model_config_to_json(const lmf_model_config *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arr, cJSON_CreateString(archs[c->arch].hf));
    cJSON_AddStringToObject(j, "model_type", archs[c->arch].model_type);
    cJSON_AddNumberToObject(j, "hidden_size", c->hidden);
    cJSON_AddNumberToObject(j, "intermediate_size", c->ffn);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->heads);
    cJSON_AddNumberToObject(j, "num_key_value_heads", c->kv_heads);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_pos);
    cJSON_AddNumberToObject(j, "initializer_range", c->init_range);
    cJSON_AddNumberToObject(j, "rms_norm_eps", c->rms_eps);
    cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
    if (c->rope_kind == LMF_ROPE_DEFAULT) {
        cJSON_AddNullToObject(j, "rope_scaling");
    } else {
        cJSON *rs = cJSON_AddObjectToObject(j, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type",
                                c->rope_kind == LMF_ROPE_LINEAR ? "linear" : "llama3");
        cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
        if (c->rope_kind == LMF_ROPE_LLAMA3) {
            cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq);
            cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq);
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope_orig_max_pos);
        }
    }
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tied);
    if (c->arch != LMF_ARCH_QWEN2) cJSON_AddBoolToObject(j, "attention_bias", 0);
    cJSON_AddBoolToObject(j, "mlp_bias", 0);
    if (c->arch == LMF_ARCH_QWEN2 || c->arch == LMF_ARCH_QWEN3) {
        cJSON_AddBoolToObject(j, "use_sliding_window", 0);
        cJSON_AddNullToObject(j, "sliding_window");
        cJSON_AddNumberToObject(j, "max_window_layers", c->layers);
    } else if (c->arch == LMF_ARCH_MISTRAL) {
        if (c->sliding_window)
            cJSON_AddNumberToObject(j, "sliding_window", c->sliding_window);
        else
            cJSON_AddNullToObject(j, "sliding_window");
    }
    cJSON_AddNumberToObject(j, "attention_dropout", 0.0);
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab);
    if (c->bos_id >= 0) cJSON_AddNumberToObject(j, "bos_token_id", c->bos_id);
    if (c->eos_id >= 0) cJSON_AddNumberToObject(j, "eos_token_id", c->eos_id);
    cJSON_AddStringToObject(j, "torch_dtype",
                            c->file_dtype == LMF_BF16  ? "bfloat16"
                            : c->file_dtype == LMF_F16 ? "float16"
                                                       : "float32");
    cJSON_AddBoolToObject(j, "use_cache", 1);
    cJSON_AddStringToObject(j, "transformers_version", "4.46.3");
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

int lmf_model_preset(lmf_model_config *c, lmf_arch arch, const char *preset) {
    defaults_for(c, arch);
    c->rms_eps = arch == LMF_ARCH_LLAMA || arch == LMF_ARCH_MISTRAL ? 1e-5f : 1e-6f;
    c->bos_id = 1;
    c->eos_id = 2;
    if (!strcmp(preset, "tiny")) {
        /* 0.5M parameters: fast enough for every test, with GQA and a head_dim of 32. */
        c->hidden = 128, c->layers = 2, c->heads = 4, c->kv_heads = 2, c->ffn = 352;
        c->vocab = 512, c->max_pos = 1024;
    } else if (!strcmp(preset, "llama-110m")) {
        c->hidden = 768, c->layers = 12, c->heads = 12, c->kv_heads = 12, c->ffn = 2048;
        c->vocab = 32000, c->max_pos = 1024;
    } else if (!strcmp(preset, "smollm-135m")) {
        c->hidden = 576, c->layers = 30, c->heads = 9, c->kv_heads = 3, c->ffn = 1536;
        c->vocab = 49152, c->max_pos = 2048, c->tied = 1;
        c->rope_theta = 10000.0f;
        c->bos_id = 0, c->eos_id = 0;
    } else {
        return lmf_errorf(
            LMF_EINVAL, "unknown preset \"%s\" (expected tiny, llama-110m or smollm-135m)", preset);
    }
    c->head_dim = c->hidden / c->heads;
    if (arch == LMF_ARCH_QWEN2 || arch == LMF_ARCH_QWEN3) c->rope_theta = 1000000.0f;
    return lmf_model_config_validate(c, preset);
}

void lmf_rope_inv_freq(const lmf_model_config *c, float *inv_freq) {
    int D = c->head_dim;
    for (int i = 0; i < D / 2; i++) {
        /* transformers computes base ** (arange(0, D, 2) / D) in float32 */
        float expo = (float)(2 * i) / (float)D;
        float f = (float)(1.0 / pow((double)c->rope_theta, (double)expo));
        if (c->rope_kind == LMF_ROPE_LINEAR) f /= c->rope_factor;
        if (c->rope_kind == LMF_ROPE_LLAMA3) {
            double wavelen = 2 * M_PI / f;
            double low_wl = c->rope_orig_max_pos / c->rope_low_freq;
            double high_wl = c->rope_orig_max_pos / c->rope_high_freq;
            if (wavelen > low_wl) {
                f = f / c->rope_factor;
            } else if (wavelen >= high_wl) {
                double smooth = (c->rope_orig_max_pos / wavelen - c->rope_low_freq) /
                                (c->rope_high_freq - c->rope_low_freq);
                f = (float)((1 - smooth) * f / c->rope_factor + smooth * f);
            }
        }
        inv_freq[i] = f;
    }
}
