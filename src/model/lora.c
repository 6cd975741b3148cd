/* LoRA adapters: creation, PEFT-style initialisation, and PEFT's on-disk format
 * (adapter_config.json + adapter_model.safetensors) so Python users load them unchanged. */
#include "lmforge/io.h"
#include "lmforge/json.h"
#include "lmforge/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

int lmf_lora_parse_targets(const char *list, unsigned *targets) {
    *targets = 0;
    if (!strcmp(list, "all")) {
        *targets = (1u << LMF_N_LINEAR) - 1;
        return 0;
    }
    char *copy = lmf_strdup(list), *save = NULL;
    if (!copy) return lmf_errorf(LMF_ENOMEM, "out of memory");
    int rc = 0;
    for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        int found = -1;
        for (int id = 0; id < LMF_N_LINEAR; id++)
            if (!strcmp(tok, lmf_linear_name(id))) found = id;
        if (found < 0) {
            rc = lmf_errorf(LMF_EINVAL,
                            "lora target \"%s\" is not a linear layer of this model (expected all, "
                            "or a list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                            "down_proj)",
                            tok);
            break;
        }
        *targets |= 1u << found;
    }
    free(copy);
    if (!rc && !*targets) rc = lmf_errorf(LMF_EINVAL, "lora target list \"%s\" is empty", list);
    return rc;
}

int lmf_lora_create(lmf_lora **out, const lmf_model *m, int r, float alpha, float dropout,
                    unsigned targets) {
    if (r <= 0) return lmf_errorf(LMF_EINVAL, "lora_rank must be positive (got %d)", r);
    if (!(dropout >= 0 && dropout < 1))
        return lmf_errorf(LMF_EINVAL, "lora_dropout must be in [0, 1) (got %g)", dropout);
    if (!targets) return lmf_errorf(LMF_EINVAL, "lora: no target modules");
    const lmf_model_config *c = &m->cfg;
    lmf_lora *l = calloc(1, sizeof *l);
    int slots = c->layers * LMF_N_LINEAR, count = 0;

    if (!l) return lmf_errorf(LMF_ENOMEM, "lora: out of memory");
    l->r = r, l->alpha = alpha, l->dropout = dropout, l->targets = targets;
    l->n_slots = slots;
    l->scale = alpha / r;
    for (int id = 0; id < LMF_N_LINEAR; id++) count += (targets >> id) & 1;
    l->n_params = 2 * count * c->layers;
    l->table = calloc(l->n_params, sizeof *l->table);
    l->A = calloc(slots, sizeof(float *));
    l->B = calloc(slots, sizeof(float *));
    l->dA = calloc(slots, sizeof(float *));
    l->dB = calloc(slots, sizeof(float *));
    if (!l->table || !l->A || !l->B || !l->dA || !l->dB) goto oom;
    int k = 0;
    size_t off = 0;
    for (int layer = 0; layer < c->layers; layer++)
        for (int id = 0; id < LMF_N_LINEAR; id++) {
            if (!(targets & (1u << id))) continue;
            int o, in;
            lmf_linear_shape(c, id, &o, &in);
            for (int ab = 0; ab < 2; ab++) {
                lmf_param *p = &l->table[k++];
                snprintf(p->name, sizeof p->name,
                         "base_model.model.model.layers.%d.%s.lora_%c.weight", layer,
                         lmf_linear_hf_prefix(id), ab ? 'B' : 'A');
                p->ndim = 2;
                p->shape[0] = ab ? o : r;
                p->shape[1] = ab ? r : in;
                p->numel = (size_t)p->shape[0] * p->shape[1];
                p->offset = off;
                p->layer = layer;
                off += (p->numel + 15) & ~(size_t)15;
            }
        }
    l->numel = off;
    l->params = lmf_alloc(off * sizeof(float), "lora parameters");
    if (!l->params) {
        lmf_lora_free(l);
        return LMF_ENOMEM;
    }
    k = 0;
    for (int layer = 0; layer < c->layers; layer++)
        for (int id = 0; id < LMF_N_LINEAR; id++) {
            if (!(targets & (1u << id))) continue;
            l->A[layer * LMF_N_LINEAR + id] = l->params + l->table[k++].offset;
            l->B[layer * LMF_N_LINEAR + id] = l->params + l->table[k++].offset;
        }
    lmf_rng_seed(&l->dropout_rng, 0x10AD);
    *out = l;
    return 0;
oom:
    lmf_lora_free(l);
    return lmf_errorf(LMF_ENOMEM, "lora: out of memory");
}

void lmf_lora_init(lmf_lora *l, const lmf_model *m, uint64_t seed) {
    (void)m;
    lmf_rng rng;
    lmf_rng_seed(&rng, seed);
    for (int i = 0; i < l->n_params; i++) {
        lmf_param *p = &l->table[i];
        float *x = l->params + p->offset;
        int is_a = strstr(p->name, "lora_A") != NULL;
        /* kaiming_uniform_(a=sqrt(5)) on (r, in): bound = 1/sqrt(in) */
        float bound = 1.0f / sqrtf((float)p->shape[1]);
        for (size_t k = 0; k < p->numel; k++)
            x[k] = is_a ? bound * (2.0f * lmf_rng_uniform(&rng) - 1.0f) : 0.0f;
    }
    lmf_rng_seed(&l->dropout_rng, seed ^ 0xD50F);
}

int lmf_lora_enable_grads(lmf_lora *l) {
    if (l->grads) return 0;
    l->grads = lmf_alloc(l->numel * sizeof(float), "lora gradients");
    if (!l->grads) return LMF_ENOMEM;
    /* A gradient sits at the same offset in its buffer as its parameter. */
    for (int k = 0; k < l->n_slots; k++) {
        if (!l->A[k]) continue;
        l->dA[k] = l->grads + (l->A[k] - l->params);
        l->dB[k] = l->grads + (l->B[k] - l->params);
    }
    return 0;
}

void lmf_lora_zero_grads(lmf_lora *l) {
    if (l->grads) memset(l->grads, 0, l->numel * sizeof(float));
}

void lmf_lora_free(lmf_lora *l) {
    if (!l) return;
    lmf_free(l->params);
    lmf_free(l->grads);
    free(l->table);
    free(l->A);
    free(l->B);
    free(l->dA);
    free(l->dB);
    free(l);
}

/* The module a parameter belongs to: its name without the last component (".weight"). */
static int module_matches(const char *param, const char *entry) {
    const char *dot = strrchr(param, '.');
    size_t mlen = dot ? (size_t)(dot - param) : strlen(param), elen = strlen(entry);
    if (elen == 0 || elen > mlen) return 0;
    if (memcmp(param + mlen - elen, entry, elen)) return 0;
    return elen == mlen || param[mlen - elen - 1] == '.';
}

int lmf_lora_match_modules(const lmf_model *m, const char *list, uint8_t *mask) {
    memset(mask, 0, (size_t)m->n_params);
    char *copy = lmf_strdup(list), *save = NULL;
    int rc = copy ? 0 : lmf_errorf(LMF_ENOMEM, "out of memory");
    for (char *e = copy ? strtok_r(copy, ", ", &save) : NULL; e && !rc;
         e = strtok_r(NULL, ", ", &save)) {
        int hit = 0;
        for (int i = 0; i < m->n_params; i++)
            if (module_matches(m->table[i].name, e)) mask[i] = 1, hit = 1;
        if (!hit)
            rc = lmf_errorf(LMF_EINVAL,
                            "additional_target / modules_to_save: \"%s\" names no module of "
                            "the model (e.g. embed_tokens, lm_head, norm)",
                            e);
    }
    free(copy);
    return rc;
}

static unsigned mask_count(unsigned t) {
    unsigned n = 0;
    for (; t; t >>= 1) n += t & 1;
    return n;
}

int lmf_lora_save(const lmf_lora *l, const lmf_model *m, const char *dir) {
    int rc = lmf_mkdir_p(dir);
    if (rc) return rc;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddObjectToObject(j, "alpha_pattern");
    cJSON_AddNullToObject(j, "auto_mapping");
    cJSON_AddNullToObject(j, "base_model_name_or_path");
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(j, "inference_mode", 1);
    cJSON_AddBoolToObject(j, "init_lora_weights", 1);
    cJSON_AddNullToObject(j, "layers_pattern");
    cJSON_AddNullToObject(j, "layers_to_transform");
    cJSON_AddNumberToObject(j, "lora_alpha", l->alpha);
    cJSON_AddNumberToObject(j, "lora_dropout", l->dropout);
    if (l->modules_to_save[0]) {
        cJSON *ms = cJSON_AddArrayToObject(j, "modules_to_save");
        char copy[sizeof l->modules_to_save], *save = NULL;
        memcpy(copy, l->modules_to_save, sizeof copy);
        for (char *e = strtok_r(copy, ", ", &save); e; e = strtok_r(NULL, ", ", &save))
            cJSON_AddItemToArray(ms, cJSON_CreateString(e));
    } else {
        cJSON_AddNullToObject(j, "modules_to_save");
    }
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddNumberToObject(j, "r", l->r);
    cJSON_AddObjectToObject(j, "rank_pattern");
    cJSON_AddNullToObject(j, "revision");
    cJSON *tm = cJSON_AddArrayToObject(j, "target_modules");
    for (int id = 0; id < LMF_N_LINEAR; id++)
        if (l->targets & (1u << id))
            cJSON_AddItemToArray(tm, cJSON_CreateString(lmf_linear_name(id)));
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    cJSON_AddBoolToObject(j, "use_dora", 0);
    cJSON_AddBoolToObject(j, "use_rslora", l->use_rslora);
    char *json = cJSON_Print(j);
    cJSON_Delete(j);
    lmf_st_writer w;
    lmf_st_writer_init(&w);
    for (int i = 0; i < l->n_params && !rc; i++)
        rc = lmf_st_writer_add(&w, l->table[i].name, LMF_F32, 2, l->table[i].shape,
                               l->params + l->table[i].offset);
    uint8_t *mask = l->modules_to_save[0] ? malloc((size_t)m->n_params) : NULL;
    char(*names)[128] = mask ? calloc((size_t)m->n_params, sizeof *names) : NULL;
    if (!rc && l->modules_to_save[0] && (!mask || !names))
        rc = lmf_errorf(LMF_ENOMEM, "out of memory");
    if (!rc && mask) rc = lmf_lora_match_modules(m, l->modules_to_save, mask);
    for (int i = 0; mask && i < m->n_params && !rc; i++) {
        if (!mask[i]) continue;
        snprintf(names[i], sizeof names[i], "base_model.model.%s", m->table[i].name);
        rc = lmf_st_writer_add(&w, names[i], LMF_F32, m->table[i].ndim, m->table[i].shape,
                               m->params + m->table[i].offset);
    }
    char *st_path = lmf_path_join(dir, "adapter_model.safetensors");
    char *cfg_path = lmf_path_join(dir, "adapter_config.json");
    if (!rc && (!json || !st_path || !cfg_path))
        rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", dir);
    if (!rc) rc = lmf_st_writer_write(&w, st_path);
    if (!rc) rc = lmf_file_write_atomic(cfg_path, json, strlen(json));
    lmf_st_writer_free(&w);
    free(names), free(mask);
    free(json);
    free(st_path);
    free(cfg_path);
    return rc;
}

/* Reads adapter_config.json; refuses PEFT features lmforge does not implement. */
static int read_adapter_config(const char *path, int *r, float *alpha, float *dropout,
                               unsigned *targets, int *rslora, char *modules, size_t modules_cap) {
    cJSON *j;
    int rc = lmf_json_load(path, &j);
    if (rc) return rc;
    int64_t ri = 0;
    double a = 0, d = 0;
    const char *s = NULL;
    int b = 0;
    *rslora = 0;
    if ((rc = lmf_json_get_int(j, "r", path, &ri)) <= 0 || ri <= 0) {
        if (rc >= 0) rc = lmf_errorf(LMF_EFORMAT, "%s: \"r\": expected a positive integer", path);
        goto done;
    }
    *r = (int)ri;
    *alpha = (float)ri;
    if ((rc = lmf_json_get_num(j, "lora_alpha", path, &a)) < 0) goto done;
    if (rc > 0) *alpha = (float)a;
    *dropout = 0;
    if ((rc = lmf_json_get_num(j, "lora_dropout", path, &d)) < 0) goto done;
    if (rc > 0) *dropout = (float)d;
    if ((rc = lmf_json_get_str(j, "peft_type", path, &s)) < 0) goto done;
    if (s && strcmp(s, "LORA")) {
        rc = lmf_errorf(LMF_EUNSUPPORTED, "%s: \"peft_type\": %s is not supported (expected LORA)",
                        path, s);
        goto done;
    }
    s = NULL;
    if ((rc = lmf_json_get_str(j, "bias", path, &s)) < 0) goto done;
    if (s && strcmp(s, "none")) {
        rc = lmf_errorf(LMF_EUNSUPPORTED, "%s: \"bias\": \"%s\" is not supported (expected none)",
                        path, s);
        goto done;
    }
    const char *flags[] = {"use_dora", "fan_in_fan_out"};
    for (int i = 0; i < 2; i++) {
        if ((rc = lmf_json_get_bool(j, flags[i], path, &b)) < 0) goto done;
        if (rc > 0 && b) {
            rc = lmf_errorf(LMF_EUNSUPPORTED, "%s: \"%s\": true is not supported", path, flags[i]);
            goto done;
        }
    }
    if ((rc = lmf_json_get_bool(j, "use_rslora", path, rslora)) < 0) goto done;
    const char *maps[] = {"rank_pattern", "alpha_pattern"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, maps[i]);
        if (v && !cJSON_IsNull(v) && cJSON_GetArraySize(v) > 0) {
            rc = lmf_errorf(LMF_EUNSUPPORTED,
                            "%s: \"%s\": per-module ranks/alphas are not supported", path, maps[i]);
            goto done;
        }
    }
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(j, "layers_to_transform");
    if (lt && !cJSON_IsNull(lt)) {
        rc = lmf_errorf(LMF_EUNSUPPORTED, "%s: \"layers_to_transform\" is not supported yet", path);
        goto done;
    }
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(j, "modules_to_save"), *it;
    modules[0] = 0;
    if (ms && !cJSON_IsNull(ms)) {
        if (!cJSON_IsArray(ms)) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: \"modules_to_save\": expected a list of names", path);
            goto done;
        }
        cJSON_ArrayForEach(it, ms) {
            size_t used = strlen(modules);
            if (!cJSON_IsString(it) || used + strlen(it->valuestring) + 2 > modules_cap) {
                rc = lmf_errorf(LMF_EFORMAT,
                                "%s: \"modules_to_save\": expected a short list of names", path);
                goto done;
            }
            if (used) modules[used++] = ',';
            memcpy(modules + used, it->valuestring, strlen(it->valuestring) + 1);
        }
    }
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    *targets = 0;
    if (cJSON_IsString(tm)) {
        rc = lmf_lora_parse_targets(tm->valuestring, targets);
    } else if (cJSON_IsArray(tm)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, tm) {
            unsigned one;
            if (!cJSON_IsString(it)) {
                rc = lmf_errorf(LMF_EFORMAT, "%s: \"target_modules\": expected strings", path);
                goto done;
            }
            if ((rc = lmf_lora_parse_targets(it->valuestring, &one))) {
                lmf_error_prefix(rc, "%s: \"target_modules\"", path);
                goto done;
            }
            *targets |= one;
        }
    } else {
        rc = lmf_errorf(LMF_EFORMAT, "%s: \"target_modules\": expected a list of module names",
                        path);
        goto done;
    }
    if (!rc && !*targets) rc = lmf_errorf(LMF_EFORMAT, "%s: \"target_modules\" is empty", path);
done:
    cJSON_Delete(j);
    return rc > 0 ? 0 : rc;
}

/* Copies the adapter's saved modules_to_save weights into the base model. */
static int load_modules(lmf_model *m, const char *modules, const lmf_safetensors *st,
                        const char *st_path, int *used) {
    uint8_t *mask = malloc((size_t)m->n_params);
    if (!mask) return lmf_errorf(LMF_ENOMEM, "out of memory");
    int rc = lmf_lora_match_modules(m, modules, mask);
    if (rc) lmf_error_prefix(rc, "%s", st_path);
    for (int i = 0; i < m->n_params && !rc; i++) {
        if (!mask[i]) continue;
        const lmf_param *p = &m->table[i];
        char name[160];
        snprintf(name, sizeof name, "base_model.model.%s", p->name);
        const lmf_st_tensor *t = lmf_safetensors_find(st, name);
        int64_t numel = 1;
        for (int d = 0; t && d < t->ndim; d++) numel *= t->shape[d];
        if (!t)
            rc = lmf_errorf(LMF_EFORMAT, "%s: missing tensor \"%s\" (modules_to_save)", st_path,
                            name);
        else if (t->ndim != p->ndim || (size_t)numel != p->numel)
            rc = lmf_errorf(LMF_ESHAPE, "%s: tensor \"%s\" does not have the model's shape",
                            st_path, name);
        else
            lmf_convert_to_f32(m->params + p->offset, t->data, t->dtype, p->numel), (*used)++;
    }
    free(mask);
    return rc;
}

int lmf_lora_load(lmf_lora **out, lmf_model *m, const char *dir) {
    char *cfg_path = lmf_path_join(dir, "adapter_config.json");
    char *st_path = lmf_path_join(dir, "adapter_model.safetensors");
    int r = 0, rslora = 0, rc;
    float alpha = 0, dropout = 0;
    unsigned targets = 0;
    lmf_lora *l = NULL;
    lmf_safetensors st = {0};
    int st_open = 0;
    if (!cfg_path || !st_path) {
        rc = lmf_errorf(LMF_ENOMEM, "out of memory");
        goto done;
    }
    char modules[sizeof l->modules_to_save];
    int used = 0;
    if ((rc = read_adapter_config(cfg_path, &r, &alpha, &dropout, &targets, &rslora, modules,
                                  sizeof modules)))
        goto done;
    if ((rc = lmf_lora_create(&l, m, r, alpha, dropout, targets))) goto done;
    memcpy(l->modules_to_save, modules, sizeof modules);
    l->use_rslora = rslora;
    l->scale = rslora ? alpha / sqrtf((float)r) : alpha / r;
    if ((rc = lmf_safetensors_open(&st, st_path))) goto done;
    st_open = 1;
    for (int i = 0; i < l->n_params; i++) {
        const lmf_param *p = &l->table[i];
        const lmf_st_tensor *t = lmf_safetensors_find(&st, p->name);
        if (!t) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: missing tensor \"%s\"", st_path, p->name);
            goto done;
        }
        if (t->ndim != 2 || t->shape[0] != p->shape[0] || t->shape[1] != p->shape[1]) {
            rc = lmf_errorf(LMF_ESHAPE, "%s: tensor \"%s\" should have shape [%lld, %lld]", st_path,
                            p->name, (long long)p->shape[0], (long long)p->shape[1]);
            goto done;
        }
        lmf_convert_to_f32(l->params + p->offset, t->data, t->dtype, p->numel);
    }
    if (modules[0] && (rc = load_modules(m, modules, &st, st_path, &used))) goto done;
    if ((unsigned)st.n_tensors != (unsigned)(l->n_params + used))
        lmf_warn("%s: %d tensors, %d used (%u target modules x %d layers x 2)", st_path,
                 st.n_tensors, l->n_params, mask_count(targets), m->cfg.layers);
done:
    if (st_open) lmf_safetensors_close(&st);
    free(cfg_path);
    free(st_path);
    if (rc) {
        lmf_lora_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

void lmf_lora_merge(const lmf_lora *l, lmf_model *m) {
    for (int layer = 0; layer < m->cfg.layers; layer++)
        for (int id = 0; id < LMF_N_LINEAR; id++) {
            int k = layer * LMF_N_LINEAR + id, out, in;
            if (!l->A[k]) continue;
            lmf_linear_shape(&m->cfg, (lmf_linear_id)id, &out, &in);
            m->be->gemm(0, 0, out, in, l->r, l->scale, l->B[k], l->r, l->A[k], in, 1.0f,
                        m->w.layers[layer].w[id], in);
        }
    lmf_model_weights_changed(m);
}
