/* JSON helpers over cJSON: parse errors with line/column, typed getters naming file and key. */
#include "lmforge/json.h"

#include "lmforge/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int lmf_json_parse(const char *text, size_t len, const char *file, cJSON **out) {
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*out) return 0;
    size_t off = end && end >= text ? (size_t)(end - text) : 0, line = 1, col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return lmf_errorf(LMF_EFORMAT, "%s: invalid JSON at line %zu, column %zu", file, line, col);
}

int lmf_json_load(const char *path, cJSON **out) {
    char *text;
    size_t len;
    *out = NULL;
    int rc = lmf_file_read_all(path, &text, &len);
    if (rc) return rc;
    rc = lmf_json_parse(text, len, path, out);
    free(text);
    return rc;
}

int lmf_json_save(const char *dir, const char *name, const cJSON *j) {
    char *text = cJSON_Print(j), *path = lmf_path_join(dir, name);
    int rc = text && path ? lmf_file_write_atomic(path, text, strlen(text))
                          : lmf_errorf(LMF_ENOMEM, "%s/%s: out of memory", dir, name);
    cJSON_free(text);
    free(path);
    return rc;
}

static const cJSON *get(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

int lmf_json_get_int(const cJSON *obj, const char *key, const char *file, int64_t *out) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > 9007199254740992.0)
        return lmf_errorf(LMF_EFORMAT, "%s: \"%s\": expected an integer", file, key);
    *out = (int64_t)v->valuedouble;
    return 1;
}

int lmf_json_get_num(const cJSON *obj, const char *key, const char *file, double *out) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v))
        return lmf_errorf(LMF_EFORMAT, "%s: \"%s\": expected a number", file, key);
    *out = v->valuedouble;
    return 1;
}

int lmf_json_get_bool(const cJSON *obj, const char *key, const char *file, int *out) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v))
        return lmf_errorf(LMF_EFORMAT, "%s: \"%s\": expected true or false", file, key);
    *out = cJSON_IsTrue(v);
    return 1;
}

int lmf_json_get_str(const cJSON *obj, const char *key, const char *file, const char **out) {
    const cJSON *v = get(obj, key);
    if (!v) return 0;
    if (!cJSON_IsString(v))
        return lmf_errorf(LMF_EFORMAT, "%s: \"%s\": expected a string", file, key);
    *out = v->valuestring;
    return 1;
}
