/* safetensors reader and writer. The reader maps files read-only and validates the whole header
 * (types, shapes, byte spans, overlaps) before handing out any pointer, because model files come
 * from users and a bad one must give an error naming the file and tensor, never a crash. It also
 * opens Hugging Face sharded folders through model.safetensors.index.json. The writer produces
 * files that Python's safetensors library loads. */
#include "lmforge/io.h"

#include "lmforge/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Same limit as the Rust implementation: a larger header is a corrupt length, not a model. */
#define MAX_HEADER_BYTES 100000000ull
/* Offsets and dims travel through cJSON as doubles; beyond 2^53 they are no longer exact. */
#define MAX_JSON_INT 9007199254740992.0

/* Spellings the safetensors format defines but lmforge cannot compute with: refused as
 * "unsupported" rather than "unknown" so the user knows the file is fine, just not for us. */
static const char *const foreign_dtypes[] = {
    "F64", "I64", "I32",  "I16",     "I8",      "U64",     "U32",     "U16",     "U8", "BOOL",
    "C64", "F4",  "E8M0", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", NULL};

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int n = *cap ? *cap : 8;
    while (n < need) n *= 2;
    void *q = realloc(*p, (size_t)n * elem);
    if (!q) return lmf_errorf(LMF_ENOMEM, "safetensors: out of memory");
    memset((char *)q + (size_t)*cap * elem, 0, (size_t)(n - *cap) * elem);
    *p = q;
    *cap = n;
    return 0;
}

/* A JSON number that is an exact non-negative integer cJSON can represent. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d) || d > MAX_JSON_INT) return 0;
    *out = (uint64_t)d;
    return 1;
}

static int is_json_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int parse_dtype(const cJSON *v, const char *path, const char *name, lmf_dtype *out) {
    if (!cJSON_IsString(v))
        return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\": \"dtype\": %s", path, name,
                          v ? "expected a string" : "missing");
    if (lmf_dtype_parse(v->valuestring, out) == 0) return 0;
    for (int i = 0; foreign_dtypes[i]; i++)
        if (!strcmp(v->valuestring, foreign_dtypes[i]))
            return lmf_errorf(LMF_EUNSUPPORTED, "%s: tensor \"%s\": unsupported dtype %s", path,
                              name, v->valuestring);
    return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\": unknown dtype \"%s\"", path, name,
                      v->valuestring);
}

/* Checks dims and returns the byte count, refusing products that overflow. */
static int shape_bytes(int ndim, const int64_t *shape, lmf_dtype dt, uint64_t *bytes) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return LMF_ERANGE;
        if (shape[i] && n > UINT64_MAX / (uint64_t)shape[i]) return LMF_ERANGE;
        n *= (uint64_t)shape[i];
    }
    uint64_t es = lmf_dtype_size(dt);
    if (n > (uint64_t)INT64_MAX / es) return LMF_ERANGE;
    *bytes = n * es;
    return 0;
}

static int parse_shape(const cJSON *v, const char *path, lmf_st_tensor *t, uint64_t *bytes) {
    if (!cJSON_IsArray(v))
        return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\": \"shape\": %s", path, t->name,
                          v ? "expected an array" : "missing");
    int n = cJSON_GetArraySize(v);
    if (n > LMF_MAX_DIMS)
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: tensor \"%s\": \"shape\": %d dims (at most %d)",
                          path, t->name, n, LMF_MAX_DIMS);
    const cJSON *d;
    int i = 0;
    cJSON_ArrayForEach(d, v) {
        uint64_t x;
        if (!json_uint(d, &x))
            return lmf_errorf(LMF_EFORMAT,
                              "%s: tensor \"%s\": \"shape\"[%d]: expected a non-negative integer",
                              path, t->name, i);
        t->shape[i++] = (int64_t)x;
    }
    t->ndim = n;
    if (shape_bytes(n, t->shape, t->dtype, bytes))
        return lmf_errorf(LMF_ERANGE, "%s: tensor \"%s\": \"shape\": element count overflows", path,
                          t->name);
    return 0;
}

/* Fills t from one header entry; data_len is the size of the data buffer after the header. */
static int parse_entry(const cJSON *e, const char *path, const uint8_t *data, uint64_t data_len,
                       lmf_st_tensor *t) {
    if (!cJSON_IsObject(e))
        return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\": expected an object", path, t->name);
    int rc = parse_dtype(cJSON_GetObjectItemCaseSensitive(e, "dtype"), path, t->name, &t->dtype);
    if (rc) return rc;
    uint64_t nbytes = 0;
    rc = parse_shape(cJSON_GetObjectItemCaseSensitive(e, "shape"), path, t, &nbytes);
    if (rc) return rc;
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    uint64_t begin, end;
    if (!off)
        return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\": \"data_offsets\": missing", path,
                          t->name);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !json_uint(cJSON_GetArrayItem(off, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(off, 1), &end))
        return lmf_errorf(LMF_EFORMAT,
                          "%s: tensor \"%s\": \"data_offsets\": expected two non-negative integers",
                          path, t->name);
    if (begin > end)
        return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\": \"data_offsets\": begin %llu > end %llu",
                          path, t->name, (unsigned long long)begin, (unsigned long long)end);
    if (end - begin != nbytes)
        return lmf_errorf(LMF_EFORMAT,
                          "%s: tensor \"%s\": \"data_offsets\": span of %llu bytes, but shape and "
                          "dtype need %llu",
                          path, t->name, (unsigned long long)(end - begin),
                          (unsigned long long)nbytes);
    if (end > data_len)
        return lmf_errorf(LMF_EFORMAT,
                          "%s: tensor \"%s\": \"data_offsets\": end %llu is past the end of the "
                          "data (%llu bytes; file truncated?)",
                          path, t->name, (unsigned long long)end, (unsigned long long)data_len);
    t->data = data + begin;
    t->nbytes = (size_t)nbytes;
    return 0;
}

static int cmp_data(const void *a, const void *b) {
    const lmf_st_tensor *x = *(const lmf_st_tensor *const *)a,
                        *y = *(const lmf_st_tensor *const *)b;
    if (x->data != y->data) return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* Two tensors sharing bytes would alias silently when one is written (e.g. an optimizer update),
 * so overlapping spans are an error. Empty tensors hold no bytes and cannot overlap. */
static int check_overlaps(lmf_st_tensor *ts, int n, const char *path) {
    if (n < 2) return 0;
    const lmf_st_tensor **order = malloc((size_t)n * sizeof *order);
    if (!order) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", path);
    int m = 0, rc = 0;
    for (int i = 0; i < n; i++)
        if (ts[i].nbytes) order[m++] = &ts[i];
    qsort(order, (size_t)m, sizeof *order, cmp_data);
    for (int i = 1; i < m && !rc; i++) {
        const uint8_t *prev_end = (const uint8_t *)order[i - 1]->data + order[i - 1]->nbytes;
        if (prev_end > (const uint8_t *)order[i]->data)
            rc = lmf_errorf(LMF_EFORMAT, "%s: tensors \"%s\" and \"%s\": data_offsets overlap",
                            path, order[i - 1]->name, order[i]->name);
    }
    free(order);
    return rc;
}

static int check_metadata(const cJSON *m, const char *path) {
    if (!cJSON_IsObject(m))
        return lmf_errorf(LMF_EFORMAT, "%s: \"__metadata__\": expected an object", path);
    const cJSON *v;
    cJSON_ArrayForEach(v, m) {
        if (!cJSON_IsString(v))
            return lmf_errorf(LMF_EFORMAT, "%s: \"__metadata__\": \"%s\": expected a string", path,
                              v->string);
    }
    return 0;
}

/* Maps path, validates its header and appends its tensors to st (unsorted). On failure st holds
 * whatever was added so far, all of it released by lmf_safetensors_close. */
static int add_file(lmf_safetensors *st, const char *path, int *tensor_cap) {
    char *header = NULL;
    cJSON *root = NULL;
    int rc, fi = st->n_files, first = st->n_tensors;
    lmf_mapped_file *files = realloc(st->files, (size_t)(fi + 1) * sizeof *files);
    if (files) st->files = files;
    char **paths = realloc(st->paths, (size_t)(fi + 1) * sizeof *paths);
    if (paths) st->paths = paths;
    if (!files || !paths || !(st->paths[fi] = lmf_strdup(path))) {
        rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    rc = lmf_file_map(&st->files[fi], path);
    if (rc) {
        free(st->paths[fi]);
        goto fail;
    }
    st->n_files++;
    const uint8_t *buf = st->files[fi].data;
    uint64_t size = st->files[fi].size;
    if (size < 8) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: %llu bytes, too short for a safetensors file", path,
                        (unsigned long long)size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i]; /* little-endian on any host */
    if (hlen == 0 || hlen > MAX_HEADER_BYTES || hlen > size - 8) {
        rc = lmf_errorf(LMF_EFORMAT,
                        "%s: header length %llu is invalid (file has %llu bytes after the length, "
                        "limit %llu)",
                        path, (unsigned long long)hlen, (unsigned long long)(size - 8),
                        MAX_HEADER_BYTES);
        goto fail;
    }
    /* A private NUL-terminated copy keeps the JSON parser inside the header whatever it does
     * with the bytes, and lets the sanitizer build see any stray read. */
    header = malloc(hlen + 1);
    if (!header) {
        rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory for a %llu-byte header", path,
                        (unsigned long long)hlen);
        goto fail;
    }
    memcpy(header, buf + 8, hlen);
    header[hlen] = 0;
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(header, hlen, &end, 0);
    if (!root) {
        rc = lmf_json_parse(header, hlen, path, &root); /* again, for a line/column message */
        if (!rc) rc = lmf_errorf(LMF_EFORMAT, "%s: header: invalid JSON", path);
        goto fail;
    }
    /* The format allows space padding after the JSON; anything else is a corrupt header that
     * other readers (serde in the reference implementation) refuse too. */
    for (const char *p = end; p < header + hlen; p++) {
        if (!is_json_space(*p)) {
            rc = lmf_errorf(LMF_EFORMAT,
                            "%s: header: unexpected bytes after the JSON object at offset %zu",
                            path, (size_t)(p - header));
            goto fail;
        }
    }
    if (!cJSON_IsObject(root)) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: header: expected a JSON object", path);
        goto fail;
    }
    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_len = size - 8 - hlen;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if ((rc = check_metadata(e, path))) goto fail;
            if (!st->metadata_json && !(st->metadata_json = cJSON_PrintUnformatted(e))) {
                rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", path);
                goto fail;
            }
            continue;
        }
        if ((rc = grow((void **)&st->tensors, tensor_cap, st->n_tensors + 1, sizeof *st->tensors)))
            goto fail;
        lmf_st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof *t);
        if (!(t->name = lmf_strdup(e->string))) {
            rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        st->n_tensors++;
        t->file_index = fi;
        if ((rc = parse_entry(e, path, data, data_len, t))) goto fail;
    }
    rc = check_overlaps(st->tensors + first, st->n_tensors - first, path);
fail:
    cJSON_Delete(root);
    free(header);
    return rc;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const lmf_st_tensor *)a)->name, ((const lmf_st_tensor *)b)->name);
}

/* Sorts for lmf_safetensors_find; a name seen twice (repeated JSON key, or in two shards) is an
 * error because which copy a lookup returns would be arbitrary. */
static int sort_and_check(lmf_safetensors *st) {
    if (st->n_tensors) qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_name);
    for (int i = 1; i < st->n_tensors; i++) {
        const lmf_st_tensor *a = &st->tensors[i - 1], *b = &st->tensors[i];
        if (strcmp(a->name, b->name)) continue;
        if (a->file_index == b->file_index)
            return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\" appears twice",
                              st->paths[a->file_index], a->name);
        return lmf_errorf(LMF_EFORMAT, "tensor \"%s\" is in two shards: %s and %s", a->name,
                          st->paths[a->file_index], st->paths[b->file_index]);
    }
    return 0;
}

int lmf_safetensors_open(lmf_safetensors *st, const char *path) {
    int cap = 0;
    memset(st, 0, sizeof *st);
    int rc = add_file(st, path, &cap);
    if (!rc) rc = sort_and_check(st);
    if (rc) lmf_safetensors_close(st);
    return rc;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Shard names come from a downloaded file; one with a '/' or ".." could point outside the
 * folder, so only plain names are accepted. */
static int plain_file_name(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

/* Opens every distinct shard named in the index's weight_map, then checks each mapping against
 * what the shards hold. metadata_json comes from the first shard that has one: the index's own
 * "metadata" (total_size) is not a string map and describes the folder, not the tensors. */
static int open_sharded(lmf_safetensors *st, const char *dir, const char *index_path) {
    cJSON *index = NULL;
    char *shard_path = NULL;
    int cap = 0;
    int rc = lmf_json_load(index_path, &index);
    if (rc) goto fail;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
    if (!cJSON_IsObject(index) || !cJSON_IsObject(map)) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: \"weight_map\": expected an object", index_path);
        goto fail;
    }
    const cJSON *w;
    cJSON_ArrayForEach(w, map) {
        if (!cJSON_IsString(w) || !plain_file_name(w->valuestring)) {
            rc = lmf_errorf(LMF_EFORMAT,
                            "%s: \"weight_map\": \"%s\": expected a file name in this folder",
                            index_path, w->string);
            goto fail;
        }
        int seen = 0;
        for (int i = 0; i < st->n_files && !seen; i++)
            seen = !strcmp(base_name(st->paths[i]), w->valuestring);
        if (seen) continue;
        if (!(shard_path = lmf_path_join(dir, w->valuestring))) {
            rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", index_path);
            goto fail;
        }
        if ((rc = add_file(st, shard_path, &cap))) goto fail;
        free(shard_path);
        shard_path = NULL;
    }
    if (st->n_files == 0) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: \"weight_map\" is empty", index_path);
        goto fail;
    }
    if ((rc = sort_and_check(st))) goto fail;
    cJSON_ArrayForEach(w, map) {
        const lmf_st_tensor *t = lmf_safetensors_find(st, w->string);
        if (!t) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: \"weight_map\": tensor \"%s\" is not in shard %s",
                            index_path, w->string, w->valuestring);
            goto fail;
        }
        const char *holder = base_name(st->paths[t->file_index]);
        if (strcmp(holder, w->valuestring)) {
            rc = lmf_errorf(LMF_EFORMAT,
                            "%s: \"weight_map\": tensor \"%s\" is in shard %s, not in %s",
                            index_path, w->string, holder, w->valuestring);
            goto fail;
        }
    }
fail:
    free(shard_path);
    cJSON_Delete(index);
    return rc;
}

int lmf_safetensors_open_dir(lmf_safetensors *st, const char *dir) {
    memset(st, 0, sizeof *st);
    char *index = lmf_path_join(dir, "model.safetensors.index.json");
    char *single = lmf_path_join(dir, "model.safetensors");
    int rc;
    if (!index || !single) {
        rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", dir);
        goto done;
    }
    if (lmf_path_exists(index)) {
        rc = open_sharded(st, dir, index);
        if (rc) lmf_safetensors_close(st);
    } else if (lmf_path_exists(single)) {
        rc = lmf_safetensors_open(st, single);
    } else {
        rc = lmf_errorf(LMF_ENOENT, "no model.safetensors or model.safetensors.index.json in %s",
                        dir);
    }
done:
    free(index);
    free(single);
    return rc;
}

void lmf_safetensors_close(lmf_safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        lmf_file_unmap(&st->files[i]);
        free(st->paths[i]);
    }
    free(st->files);
    free(st->paths);
    cJSON_free(st->metadata_json);
    memset(st, 0, sizeof *st);
}

const lmf_st_tensor *lmf_safetensors_find(const lmf_safetensors *st, const char *name) {
    lmf_st_tensor key = {.name = (char *)name};
    if (!st->n_tensors) return NULL;
    return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof key, cmp_name);
}

int64_t lmf_st_numel(const lmf_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* ---- writer ---- */

void lmf_st_writer_init(lmf_st_writer *w) {
    memset(w, 0, sizeof *w);
}

int lmf_st_writer_add(lmf_st_writer *w, const char *name, lmf_dtype dtype, int ndim,
                      const int64_t *shape, const void *data) {
    if (!name || !name[0] || !strcmp(name, "__metadata__"))
        return lmf_errorf(LMF_EINVAL, "safetensors writer: invalid tensor name \"%s\"",
                          name ? name : "(null)");
    if ((unsigned)dtype >= LMF_DTYPE_COUNT || ndim < 0 || ndim > LMF_MAX_DIMS || (ndim && !shape))
        return lmf_errorf(LMF_EINVAL, "safetensors writer: tensor \"%s\": bad dtype or ndim %d",
                          name, ndim);
    uint64_t bytes;
    if (shape_bytes(ndim, shape, dtype, &bytes) || bytes > (uint64_t)MAX_JSON_INT)
        return lmf_errorf(LMF_ERANGE, "safetensors writer: tensor \"%s\": bad shape", name);
    if (bytes && !data)
        return lmf_errorf(LMF_EINVAL, "safetensors writer: tensor \"%s\": no data", name);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->entries[i].name, name))
            return lmf_errorf(LMF_EINVAL, "safetensors writer: tensor \"%s\" added twice", name);
    int rc = grow((void **)&w->entries, &w->cap, w->n + 1, sizeof *w->entries);
    if (rc) return rc;
    lmf_st_entry *e = &w->entries[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = lmf_strdup(name)))
        return lmf_errorf(LMF_ENOMEM, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    if (ndim) memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    e->data = data;
    e->nbytes = (size_t)bytes;
    w->n++;
    return 0;
}

int lmf_st_writer_set_metadata(lmf_st_writer *w, const char *key, const char *value) {
    if (!key || !value) return lmf_errorf(LMF_EINVAL, "safetensors writer: NULL metadata");
    if (!w->metadata && !(w->metadata = cJSON_CreateObject()))
        return lmf_errorf(LMF_ENOMEM, "safetensors writer: out of memory");
    cJSON *v = cJSON_CreateString(value);
    if (!v) return lmf_errorf(LMF_ENOMEM, "safetensors writer: out of memory");
    if (cJSON_GetObjectItemCaseSensitive(w->metadata, key)) {
        cJSON_ReplaceItemInObjectCaseSensitive(w->metadata, key, v);
    } else if (!cJSON_AddItemToObject(w->metadata, key, v)) {
        cJSON_Delete(v);
        return lmf_errorf(LMF_ENOMEM, "safetensors writer: out of memory");
    }
    return 0;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const lmf_st_entry *)a)->name, ((const lmf_st_entry *)b)->name);
}

/* Data order: wider element types first, then by name. The reference loader demands the spans
 * tile the data buffer with no gaps, so padding between tensors is not allowed; this order (the
 * one Hugging Face's serializer uses) still starts every tensor at a multiple of its element
 * size, keeping mapped pointers naturally aligned. Tensors of one dtype are in name order. */
static int cmp_entry_layout(const void *a, const void *b) {
    const lmf_st_entry *x = *(const lmf_st_entry *const *)a, *y = *(const lmf_st_entry *const *)b;
    size_t sx = lmf_dtype_size(x->dtype), sy = lmf_dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static cJSON *int_array(const int64_t *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *x = cJSON_CreateNumber((double)v[i]);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

/* Builds the header text; fills offsets[i] (begin of entry i in the data buffer). */
static char *build_header(lmf_st_writer *w, const lmf_st_entry **layout, int64_t *offsets) {
    char *text = NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = w->metadata ? cJSON_Duplicate(w->metadata, 1) : cJSON_CreateObject();
    /* Hugging Face writes {"format": "pt"} and some loaders (transformers) check for it. */
    if (!root || !meta || !cJSON_AddItemToObject(root, "__metadata__", meta)) {
        cJSON_Delete(meta);
        goto done;
    }
    if (!w->metadata && !cJSON_AddStringToObject(meta, "format", "pt")) goto done;
    int64_t pos = 0;
    for (int i = 0; i < w->n; i++) {
        offsets[layout[i] - w->entries] = pos;
        pos += (int64_t)layout[i]->nbytes;
    }
    for (int i = 0; i < w->n; i++) {
        const lmf_st_entry *e = &w->entries[i];
        int64_t span[2] = {offsets[i], offsets[i] + (int64_t)e->nbytes};
        cJSON *o = cJSON_CreateObject(), *shape = int_array(e->shape, e->ndim),
              *off = int_array(span, 2);
        int ok = o && shape && off && cJSON_AddStringToObject(o, "dtype", lmf_dtype_name(e->dtype));
        if (ok) ok = cJSON_AddItemToObject(o, "shape", shape) ? (shape = NULL, 1) : 0;
        if (ok) ok = cJSON_AddItemToObject(o, "data_offsets", off) ? (off = NULL, 1) : 0;
        if (ok) ok = cJSON_AddItemToObject(root, e->name, o) ? (o = NULL, 1) : 0;
        cJSON_Delete(o);
        cJSON_Delete(shape);
        cJSON_Delete(off);
        if (!ok) goto done;
    }
    text = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    return text;
}

int lmf_st_writer_write(lmf_st_writer *w, const char *path) {
    const lmf_st_entry **layout = NULL;
    int64_t *offsets = NULL;
    char *header = NULL;
    lmf_atomic_file f = {0};
    int rc = 0, open = 0;
    if (w->n) qsort(w->entries, (size_t)w->n, sizeof *w->entries, cmp_entry_name);
    layout = malloc(((size_t)w->n + 1) * sizeof *layout);
    offsets = malloc(((size_t)w->n + 1) * sizeof *offsets);
    uint64_t total = 0;
    for (int i = 0; layout && i < w->n; i++) {
        layout[i] = &w->entries[i];
        /* each entry is <= 2^53 bytes, so checking after every add cannot miss a wrap */
        if ((total += w->entries[i].nbytes) > (uint64_t)MAX_JSON_INT) {
            rc = lmf_errorf(LMF_ERANGE, "%s: tensors total more than 2^53 bytes", path);
            goto fail;
        }
    }
    if (layout && w->n) qsort(layout, (size_t)w->n, sizeof *layout, cmp_entry_layout);
    if (!layout || !offsets || !(header = build_header(w, layout, offsets))) {
        rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory building the header", path);
        goto fail;
    }
    /* Pad with spaces so the data buffer starts 8-byte aligned in the file (and the mapping). */
    size_t hlen = strlen(header), padded = (hlen + 8 + 7) / 8 * 8 - 8;
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    char spaces[8];
    memset(spaces, ' ', sizeof spaces);
    if ((rc = lmf_atomic_open(&f, path))) goto fail;
    open = 1;
    if ((rc = lmf_atomic_write(&f, len_le, 8)) || (rc = lmf_atomic_write(&f, header, hlen)) ||
        (rc = lmf_atomic_write(&f, spaces, padded - hlen)))
        goto fail;
    for (int i = 0; i < w->n; i++)
        if ((rc = lmf_atomic_write(&f, layout[i]->data, layout[i]->nbytes))) goto fail;
    open = 0;
    rc = lmf_atomic_commit(&f);
fail:
    if (open) lmf_atomic_abort(&f);
    cJSON_free(header);
    free(layout);
    free(offsets);
    return rc;
}

void lmf_st_writer_free(lmf_st_writer *w) {
    for (int i = 0; i < w->n; i++) free(w->entries[i].name);
    free(w->entries);
    cJSON_Delete(w->metadata);
    memset(w, 0, sizeof *w);
}
