/* Dataset files: JSON arrays and JSON lines, read into one cJSON array of record objects.
 * Hugging Face's "json" builder (what LLaMA-Factory uses for .json and .jsonl) accepts both
 * layouts under either extension, so the first non-blank byte decides, not the extension. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset_internal.h"
#include "lmforge/core.h"
#include "lmforge/json.h"

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* One object per non-blank line; errors give the file's line number, not the line's. */
static int parse_lines(const char *name, const char *path, const char *text, size_t len,
                       cJSON *arr) {
    size_t pos = 0;
    for (int64_t line = 1; pos < len; line++) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        size_t k = 0;
        while (k < n && (start[k] == ' ' || start[k] == '\t' || start[k] == '\r')) k++;
        if (k == n) continue;
        const char *end = NULL;
        cJSON *obj = cJSON_ParseWithLengthOpts(start, n, &end, 0);
        if (!obj) {
            size_t col = end && end >= start ? (size_t)(end - start) + 1 : 1;
            return lmf_errorf(LMF_EFORMAT,
                              "dataset \"%s\": %s: line %lld: invalid JSON at column %zu", name,
                              path, (long long)line, col);
        }
        if (!cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            return lmf_errorf(LMF_EFORMAT, "dataset \"%s\": %s: line %lld: expected a JSON object",
                              name, path, (long long)line);
        }
        cJSON_AddItemToArray(arr, obj);
    }
    return 0;
}

int dataset_read_file(const char *name, const char *path, cJSON **records) {
    *records = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return lmf_errorf(LMF_ENOENT, "dataset \"%s\": file not found: %s", name, path);
    if (S_ISDIR(st.st_mode))
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "dataset \"%s\": %s is a directory; directory datasets are not "
                          "supported yet (point file_name at one .json or .jsonl file)",
                          name, path);
    if (!has_suffix(path, ".json") && !has_suffix(path, ".jsonl"))
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "dataset \"%s\": %s: only .json and .jsonl files are supported", name,
                          path);
    char *text = NULL;
    size_t len = 0;
    int rc = lmf_file_read_all(path, &text, &len);
    if (rc) return lmf_error_prefix(rc, "dataset \"%s\"", name);
    size_t k = 0;
    while (k < len && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r' || text[k] == '\n'))
        k++;
    cJSON *arr = NULL;
    if (k < len && text[k] == '[') {
        if ((rc = lmf_json_parse(text, len, path, &arr))) {
            rc = lmf_error_prefix(rc, "dataset \"%s\"", name);
            goto fail;
        }
        int i = 0;
        for (const cJSON *e = arr->child; e; e = e->next, i++) {
            if (!cJSON_IsObject(e)) {
                rc =
                    lmf_errorf(LMF_EFORMAT, "dataset \"%s\": %s: record %d: expected a JSON object",
                               name, path, i);
                goto fail;
            }
        }
    } else {
        arr = cJSON_CreateArray();
        if (!arr) {
            rc = lmf_errorf(LMF_ENOMEM, "dataset \"%s\": out of memory", name);
            goto fail;
        }
        if ((rc = parse_lines(name, path, text, len, arr))) goto fail;
    }
    free(text);
    *records = arr;
    return 0;
fail:
    free(text);
    cJSON_Delete(arr);
    return rc;
}
