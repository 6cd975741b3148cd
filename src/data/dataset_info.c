/* dataset_info.json: LLaMA-Factory's registry mapping a dataset name to its file, format,
 * column names and sharegpt role tags (its data/parser.py), with LLaMA-Factory's defaults. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/dataset.h"
#include "lmforge/json.h"

static void attr_free(lmf_dataset_attr *a) {
    char **fields[] = {&a->name,         &a->file_name, &a->prompt,        &a->query,
                       &a->response,     &a->history,   &a->messages,      &a->system,
                       &a->tools,        &a->images,    &a->videos,        &a->audios,
                       &a->chosen,       &a->rejected,  &a->kto_tag,       &a->role_tag,
                       &a->content_tag,  &a->user_tag,  &a->assistant_tag, &a->observation_tag,
                       &a->function_tag, &a->system_tag};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

void lmf_dataset_info_free(lmf_dataset_info *info) {
    for (int i = 0; i < info->n; i++) attr_free(&info->items[i]);
    free(info->items);
    free(info->path);
    memset(info, 0, sizeof *info);
}

/* Copies obj[key] (a string) into *dst, or def when absent/null (def may be NULL). */
static int take_str(const cJSON *obj, const char *key, const char *def, const char *where,
                    char **dst) {
    const char *v = def;
    int rc = lmf_json_get_str(obj, key, where, &v);
    if (rc < 0) return rc;
    if (!v) return 0;
    *dst = lmf_strdup(v);
    return *dst ? 0 : lmf_errorf(LMF_ENOMEM, "%s: out of memory", where);
}

static int parse_attr(const char *path, const char *name, const cJSON *e, lmf_dataset_attr *a) {
    char where[512];
    snprintf(where, sizeof where, "%s: dataset \"%s\"", path, name);
    if (!cJSON_IsObject(e)) return lmf_errorf(LMF_EFORMAT, "%s: expected an object", where);
    int rc;
    a->name = lmf_strdup(name);
    if (!a->name) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", where);
    if ((rc = take_str(e, "file_name", NULL, where, &a->file_name))) return rc;
    /* LLaMA-Factory prefers the hub entries when present (it may download); we only read local
     * files, so remember which remote key made this entry remote. */
    static const char *remote_keys[] = {"hf_hub_url", "ms_hub_url", "om_hub_url", "script_url",
                                        "cloud_file_name"};
    for (size_t i = 0; i < sizeof remote_keys / sizeof remote_keys[0]; i++) {
        const char *v = NULL;
        if ((rc = lmf_json_get_str(e, remote_keys[i], where, &v)) < 0) return rc;
        if (v && !a->remote) a->remote = remote_keys[i];
    }
    a->has_num_samples = cJSON_GetObjectItemCaseSensitive(e, "num_samples") != NULL;
    const char *fmt = "alpaca";
    if ((rc = lmf_json_get_str(e, "formatting", where, &fmt)) < 0) return rc;
    if (!strcmp(fmt, "alpaca")) {
        a->formatting = LMF_FORMAT_ALPACA;
    } else if (!strcmp(fmt, "sharegpt")) {
        a->formatting = LMF_FORMAT_SHAREGPT;
    } else {
        return lmf_errorf(LMF_EFORMAT, "%s: \"formatting\": \"%s\" is neither alpaca nor sharegpt",
                          where, fmt);
    }
    if ((rc = lmf_json_get_bool(e, "ranking", where, &a->ranking)) < 0) return rc;

    const cJSON *cols = cJSON_GetObjectItemCaseSensitive(e, "columns");
    if (cols && !cJSON_IsNull(cols) && !cJSON_IsObject(cols))
        return lmf_errorf(LMF_EFORMAT, "%s: \"columns\": expected an object", where);
    int alpaca = a->formatting == LMF_FORMAT_ALPACA;
    snprintf(where, sizeof where, "%s: dataset \"%s\": columns", path, name);
    if ((rc = take_str(cols, "prompt", alpaca ? "instruction" : NULL, where, &a->prompt)) ||
        (rc = take_str(cols, "query", alpaca ? "input" : NULL, where, &a->query)) ||
        (rc = take_str(cols, "response", alpaca ? "output" : NULL, where, &a->response)) ||
        (rc = take_str(cols, "history", NULL, where, &a->history)) ||
        (rc = take_str(cols, "messages", alpaca ? NULL : "conversations", where, &a->messages)) ||
        (rc = take_str(cols, "system", NULL, where, &a->system)) ||
        (rc = take_str(cols, "tools", NULL, where, &a->tools)) ||
        (rc = take_str(cols, "images", NULL, where, &a->images)) ||
        (rc = take_str(cols, "videos", NULL, where, &a->videos)) ||
        (rc = take_str(cols, "audios", NULL, where, &a->audios)) ||
        (rc = take_str(cols, "chosen", NULL, where, &a->chosen)) ||
        (rc = take_str(cols, "rejected", NULL, where, &a->rejected)) ||
        (rc = take_str(cols, "kto_tag", NULL, where, &a->kto_tag)))
        return rc;

    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(e, "tags");
    if (tags && !cJSON_IsNull(tags) && !cJSON_IsObject(tags))
        return lmf_errorf(LMF_EFORMAT, "%s: dataset \"%s\": \"tags\": expected an object", path,
                          name);
    snprintf(where, sizeof where, "%s: dataset \"%s\": tags", path, name);
    if ((rc = take_str(tags, "role_tag", "from", where, &a->role_tag)) ||
        (rc = take_str(tags, "content_tag", "value", where, &a->content_tag)) ||
        (rc = take_str(tags, "user_tag", "human", where, &a->user_tag)) ||
        (rc = take_str(tags, "assistant_tag", "gpt", where, &a->assistant_tag)) ||
        (rc = take_str(tags, "observation_tag", "observation", where, &a->observation_tag)) ||
        (rc = take_str(tags, "function_tag", "function_call", where, &a->function_tag)) ||
        (rc = take_str(tags, "system_tag", "system", where, &a->system_tag)))
        return rc;
    return 0;
}

int lmf_dataset_info_load(const char *dataset_dir, lmf_dataset_info *out) {
    memset(out, 0, sizeof *out);
    cJSON *root = NULL;
    int rc;
    out->path = lmf_path_join(dataset_dir ? dataset_dir : "data", "dataset_info.json");
    if (!out->path) return lmf_errorf(LMF_ENOMEM, "dataset_info.json: out of memory");
    if (!lmf_path_exists(out->path)) {
        rc = lmf_errorf(LMF_ENOENT, "%s: cannot open dataset_info.json (is dataset_dir right?)",
                        out->path);
        goto fail;
    }
    if ((rc = lmf_json_load(out->path, &root))) goto fail;
    if (!cJSON_IsObject(root)) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: expected an object of dataset entries", out->path);
        goto fail;
    }
    int n = cJSON_GetArraySize(root);
    out->items = calloc(n ? (size_t)n : 1, sizeof *out->items);
    if (!out->items) {
        rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", out->path);
        goto fail;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        rc = parse_attr(out->path, e->string, e, &out->items[out->n++]);
        if (rc) goto fail;
    }
    cJSON_Delete(root);
    return 0;
fail:
    cJSON_Delete(root);
    lmf_dataset_info_free(out);
    return rc;
}

const lmf_dataset_attr *lmf_dataset_info_find(const lmf_dataset_info *info, const char *name) {
    for (int i = 0; i < info->n; i++)
        if (!strcmp(info->items[i].name, name)) return &info->items[i];
    return NULL;
}
