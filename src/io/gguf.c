/* GGUF reader and writer (lmforge/gguf.h). The reader walks the file with a bounds-checked
 * cursor: every count is checked against the bytes left before anything is allocated for it,
 * every string and array against the end of the file, every tensor's span against the data
 * section, so that truncated or corrupted files give an error naming the field and its offset. */
#include "lmforge/gguf.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GGUF_MAGIC    0x46554747u /* "GGUF" read as a little-endian u32 */
#define DEFAULT_ALIGN 32
#define MAX_DIMS      4
#define MAX_NAME      65535

static const struct {
    const char *name;
    int block;
    int bytes;
} ggml_types[] = {
    [0] = {"F32", 1, 4},       [1] = {"F16", 1, 2},       [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},    [6] = {"Q5_0", 32, 22},    [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},    [9] = {"Q8_1", 32, 36},    [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110}, [12] = {"Q4_K", 256, 144}, [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210}, [15] = {"Q8_K", 256, 292}, [24] = {"I8", 1, 1},
    [25] = {"I16", 1, 2},      [26] = {"I32", 1, 4},      [27] = {"I64", 1, 8},
    [28] = {"F64", 1, 8},      [30] = {"BF16", 1, 2},
};
#define N_GGML_TYPES (int)(sizeof ggml_types / sizeof *ggml_types)

static const int value_size[LMF_GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *const value_name[LMF_GGUF_NTYPES] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64"};

const char *lmf_ggml_type_name(uint32_t type) {
    return type < (uint32_t)N_GGML_TYPES && ggml_types[type].name ? ggml_types[type].name : "?";
}

int lmf_ggml_to_qtype(uint32_t type, lmf_qtype *out) {
    switch (type) {
    case LMF_GGML_Q8_0:
        *out = LMF_Q8_0;
        return 0;
    case LMF_GGML_Q4_0:
        *out = LMF_Q4_0;
        return 0;
    case LMF_GGML_Q4_1:
        *out = LMF_Q4_1;
        return 0;
    case LMF_GGML_Q4_K:
        *out = LMF_Q4_K;
        return 0;
    default:
        return LMF_EUNSUPPORTED;
    }
}

int lmf_qtype_to_ggml(lmf_qtype q, uint32_t *out) {
    switch (q) {
    case LMF_Q8_0:
        *out = LMF_GGML_Q8_0;
        return 0;
    case LMF_Q4_0:
        *out = LMF_GGML_Q4_0;
        return 0;
    case LMF_Q4_1:
        *out = LMF_GGML_Q4_1;
        return 0;
    case LMF_Q4_K:
        *out = LMF_GGML_Q4_K;
        return 0;
    default:
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "GGUF has no tensor type for %s (use q8_0, q4_0, "
                          "q4_1 or q4_k)",
                          lmf_qtype_name(q));
    }
}

/* ---- reader ---- */

typedef struct cursor {
    const uint8_t *p;
    size_t size, off;
    const char *file;
} cursor;

static int truncated(const cursor *c, const char *what, size_t need) {
    return lmf_errorf(LMF_EFORMAT,
                      "%s: truncated at offset %zu reading %s (%zu bytes needed, %zu left)",
                      c->file, c->off, what, need, c->size - c->off);
}

static int rd(cursor *c, void *dst, size_t n, const char *what) {
    if (n > c->size - c->off) {
        memset(dst, 0, n);
        return truncated(c, what, n);
    }
    memcpy(dst, c->p + c->off, n);
    c->off += n;
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    return rd(c, v, 4, what);
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    return rd(c, v, 8, what);
}

/* A GGUF string: u64 length, bytes. *s points into the file. */
static int rd_str(cursor *c, const char **s, size_t *len, const char *what) {
    uint64_t n = 0;
    size_t at = c->off;
    int rc = rd_u64(c, &n, what);
    if (rc) return rc;
    if (n > c->size - c->off) {
        c->off = at;
        return lmf_errorf(LMF_EFORMAT,
                          "%s: %s at offset %zu: string length %llu exceeds the %zu bytes left",
                          c->file, what, at, (unsigned long long)n, c->size - c->off - 8);
    }
    *s = (const char *)c->p + c->off;
    *len = (size_t)n;
    c->off += (size_t)n;
    return 0;
}

/* A name (key or tensor name): a string without NUL bytes, copied NUL-terminated. */
static int rd_name(cursor *c, char **out, const char *what) {
    const char *s = NULL;
    size_t n = 0, at = c->off;
    int rc = rd_str(c, &s, &n, what);
    if (rc) return rc;
    if (n == 0 || n > MAX_NAME || memchr(s, 0, n))
        return lmf_errorf(LMF_EFORMAT, "%s: %s at offset %zu: %s", c->file, what, at,
                          n == 0         ? "empty"
                          : n > MAX_NAME ? "longer than 65535 bytes"
                                         : "contains a NUL byte");
    *out = malloc(n + 1);
    if (!*out) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", c->file);
    memcpy(*out, s, n);
    (*out)[n] = 0;
    return 0;
}

static uint64_t widen(const uint8_t *p, uint32_t type, double *f) {
    uint64_t u = 0;
    *f = 0;
    switch (type) {
    case LMF_GGUF_UINT8:
    case LMF_GGUF_BOOL:
        u = p[0];
        *f = (double)u;
        break;
    case LMF_GGUF_INT8:
        u = (uint64_t)(int64_t)(int8_t)p[0];
        *f = (int8_t)p[0];
        break;
    case LMF_GGUF_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        u = v, *f = v;
        break;
    }
    case LMF_GGUF_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        u = (uint64_t)(int64_t)v, *f = v;
        break;
    }
    case LMF_GGUF_UINT32: {
        uint32_t v;
        memcpy(&v, p, 4);
        u = v, *f = v;
        break;
    }
    case LMF_GGUF_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        u = (uint64_t)(int64_t)v, *f = v;
        break;
    }
    case LMF_GGUF_FLOAT32: {
        float v;
        memcpy(&v, p, 4);
        *f = v;
        break;
    }
    case LMF_GGUF_UINT64:
        memcpy(&u, p, 8);
        *f = (double)u;
        break;
    case LMF_GGUF_INT64: {
        int64_t v;
        memcpy(&v, p, 8);
        u = (uint64_t)v, *f = (double)v;
        break;
    }
    case LMF_GGUF_FLOAT64:
        memcpy(f, p, 8);
        break;
    }
    return u;
}

static int rd_value(cursor *c, lmf_gguf_value *v, const char *key) {
    size_t at = c->off;
    int rc = rd_u32(c, &v->type, "a metadata value type");
    if (rc) return lmf_error_prefix(rc, "key \"%s\"", key);
    if (v->type >= LMF_GGUF_NTYPES)
        return lmf_errorf(LMF_EFORMAT, "%s: key \"%s\": unknown value type %u at offset %zu",
                          c->file, key, v->type, at);
    v->n = 1;
    if (v->type == LMF_GGUF_STRING) {
        if ((rc = rd_str(c, &v->str, &v->len, "a string value")))
            return lmf_error_prefix(rc, "key \"%s\"", key);
        return 0;
    }
    if (v->type != LMF_GGUF_ARRAY) {
        uint8_t buf[8];
        if ((rc = rd(c, buf, (size_t)value_size[v->type], value_name[v->type])))
            return lmf_error_prefix(rc, "key \"%s\"", key);
        double f;
        v->num.u = widen(buf, v->type, &f);
        if (v->type == LMF_GGUF_FLOAT32 || v->type == LMF_GGUF_FLOAT64) v->num.f = f;
        if (v->type == LMF_GGUF_BOOL && buf[0] > 1)
            return lmf_errorf(LMF_EFORMAT, "%s: key \"%s\": bool value %u at offset %zu", c->file,
                              key, buf[0], c->off - 1);
        return 0;
    }
    at = c->off;
    if ((rc = rd_u32(c, &v->arr_type, "an array element type")) ||
        (rc = rd_u64(c, &v->n, "an array length")))
        return lmf_error_prefix(rc, "key \"%s\"", key);
    if (v->arr_type >= LMF_GGUF_NTYPES || v->arr_type == LMF_GGUF_ARRAY)
        return lmf_errorf(LMF_EFORMAT, "%s: key \"%s\": %s element type %u at offset %zu", c->file,
                          key,
                          v->arr_type == LMF_GGUF_ARRAY ? "unsupported nested array" : "unknown",
                          v->arr_type, at);
    size_t left = c->size - c->off;
    if (v->arr_type == LMF_GGUF_STRING) {
        if (v->n > left / 8)
            return lmf_errorf(LMF_EFORMAT,
                              "%s: key \"%s\": array of %llu strings at offset %zu cannot fit in "
                              "the %zu bytes left",
                              c->file, key, (unsigned long long)v->n, at, left);
        v->strs = malloc(sizeof *v->strs * (size_t)(v->n ? v->n : 1));
        v->lens = malloc(sizeof *v->lens * (size_t)(v->n ? v->n : 1));
        if (!v->strs || !v->lens) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", c->file);
        for (uint64_t i = 0; i < v->n; i++)
            if ((rc = rd_str(c, &v->strs[i], &v->lens[i], "an array string")))
                return lmf_error_prefix(rc, "key \"%s\"[%llu]", key, (unsigned long long)i);
        return 0;
    }
    size_t es = (size_t)value_size[v->arr_type];
    if (v->n > left / es)
        return lmf_errorf(
            LMF_EFORMAT,
            "%s: key \"%s\": array of %llu %s at offset %zu exceeds the %zu bytes left", c->file,
            key, (unsigned long long)v->n, value_name[v->arr_type], at, left);
    v->data = c->p + c->off;
    c->off += (size_t)v->n * es;
    if (v->arr_type == LMF_GGUF_BOOL)
        for (uint64_t i = 0; i < v->n; i++)
            if (v->data[i] > 1)
                return lmf_errorf(LMF_EFORMAT, "%s: key \"%s\"[%llu]: bool value %u", c->file, key,
                                  (unsigned long long)i, v->data[i]);
    return 0;
}

int64_t lmf_gguf_arr_int(const lmf_gguf_value *v, uint64_t i) {
    double f;
    return (int64_t)widen(v->data + i * (uint64_t)value_size[v->arr_type], v->arr_type, &f);
}

double lmf_gguf_arr_float(const lmf_gguf_value *v, uint64_t i) {
    double f;
    widen(v->data + i * (uint64_t)value_size[v->arr_type], v->arr_type, &f);
    return f;
}

static int cmp_kv(const void *a, const void *b) {
    return strcmp(((const lmf_gguf_kv *)a)->key, ((const lmf_gguf_kv *)b)->key);
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const lmf_gguf_tensor *)a)->name, ((const lmf_gguf_tensor *)b)->name);
}

int64_t lmf_gguf_tensor_numel(const lmf_gguf_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->ne[d];
    return n;
}

static int rd_tensor_info(cursor *c, lmf_gguf_tensor *t, int64_t idx) {
    size_t at = c->off;
    uint32_t nd;
    int rc = rd_name(c, &t->name, "a tensor name");
    if (rc) return lmf_error_prefix(rc, "tensor %lld", (long long)idx);
    if ((rc = rd_u32(c, &nd, "n_dims"))) return lmf_error_prefix(rc, "tensor \"%s\"", t->name);
    if (nd < 1 || nd > MAX_DIMS)
        return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\" (offset %zu): n_dims %u, expected 1..4",
                          c->file, t->name, at, nd);
    t->n_dims = (int)nd;
    uint64_t numel = 1;
    for (int d = 0; d < MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if ((rc = rd_u64(c, &ne, "a dimension")))
            return lmf_error_prefix(rc, "tensor \"%s\"", t->name);
        if (ne == 0 || ne > ((uint64_t)1 << 40) || numel > ((uint64_t)1 << 50) / ne)
            return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\": ne[%u] = %llu out of range", c->file,
                              t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        numel *= ne;
    }
    size_t type_at = c->off;
    if ((rc = rd_u32(c, &t->type, "a tensor type")) ||
        (rc = rd_u64(c, &t->offset, "a tensor data offset")))
        return lmf_error_prefix(rc, "tensor \"%s\"", t->name);
    if (t->type >= (uint32_t)N_GGML_TYPES || !ggml_types[t->type].name)
        return lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\": unknown ggml type %u at offset %zu",
                          c->file, t->name, t->type, type_at);
    int bs = ggml_types[t->type].block;
    if (t->ne[0] % bs)
        return lmf_errorf(LMF_EFORMAT,
                          "%s: tensor \"%s\": row length ne[0] = %lld is not a multiple of the %s "
                          "block (%d)",
                          c->file, t->name, (long long)t->ne[0], ggml_types[t->type].name, bs);
    t->nbytes = (size_t)(numel / (uint64_t)bs) * (size_t)ggml_types[t->type].bytes;
    return 0;
}

/* Parses the image at data into g, whose name is set (and mapping, if any) already. */
static int parse_image(lmf_gguf *g, const void *data, size_t size) {
    int rc;
    g->base = data;
    g->size = size;
    g->alignment = DEFAULT_ALIGN;
    cursor c = {data, size, 0, g->name};
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u32(&c, &magic, "the magic"))) goto fail;
    if (magic != GGUF_MAGIC) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: not a GGUF file (magic at offset 0 is not \"GGUF\")",
                        g->name);
        goto fail;
    }
    if ((rc = rd_u32(&c, &g->version, "the version"))) goto fail;
    if (g->version != 2 && g->version != 3) {
        rc = lmf_errorf(g->version == 1 ? LMF_EUNSUPPORTED : LMF_EFORMAT,
                        "%s: GGUF version %u at offset 4: only versions 2 and 3 are supported%s",
                        g->name, g->version, g->version > 0xffff ? " (a big-endian file?)" : "");
        goto fail;
    }
    if ((rc = rd_u64(&c, &n_tensors, "the tensor count")) ||
        (rc = rd_u64(&c, &n_kv, "the metadata count")))
        goto fail;
    /* A key-value pair takes at least 13 bytes, a tensor info at least 29. */
    if (n_kv > (size - c.off) / 13 || n_tensors > (size - c.off) / 29) {
        rc = lmf_errorf(LMF_EFORMAT,
                        "%s: header claims %llu tensors and %llu metadata keys (offsets 8 and 16), "
                        "more than a %zu-byte file can hold",
                        g->name, (unsigned long long)n_tensors, (unsigned long long)n_kv, size);
        goto fail;
    }
    g->kv = calloc((size_t)n_kv + 1, sizeof *g->kv);
    g->tensors = calloc((size_t)n_tensors + 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) {
        rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", g->name);
        goto fail;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        lmf_gguf_kv *kv = &g->kv[i];
        kv->offset = c.off;
        g->n_kv = (int64_t)i + 1;
        if ((rc = rd_name(&c, &kv->key, "a metadata key"))) {
            rc = lmf_error_prefix(rc, "metadata %llu", (unsigned long long)i);
            goto fail;
        }
        if ((rc = rd_value(&c, &kv->v, kv->key))) goto fail;
    }
    qsort(g->kv, (size_t)g->n_kv, sizeof *g->kv, cmp_kv);
    for (int64_t i = 1; i < g->n_kv; i++)
        if (!strcmp(g->kv[i - 1].key, g->kv[i].key)) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: metadata key \"%s\" appears twice", g->name,
                            g->kv[i].key);
            goto fail;
        }
    const lmf_gguf_kv *al = lmf_gguf_find(g, "general.alignment");
    if (al) {
        if (al->v.type != LMF_GGUF_UINT32 || al->v.num.u == 0 ||
            (al->v.num.u & (al->v.num.u - 1))) {
            rc = lmf_errorf(LMF_EFORMAT,
                            "%s: general.alignment (offset %zu): expected a power-of-two uint32",
                            g->name, al->offset);
            goto fail;
        }
        g->alignment = (size_t)al->v.num.u;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors = (int64_t)i + 1;
        if ((rc = rd_tensor_info(&c, &g->tensors[i], (int64_t)i))) goto fail;
    }
    size_t pad = (g->alignment - c.off % g->alignment) % g->alignment;
    g->data_offset = c.off + pad;
    if (g->n_tensors && g->data_offset > size) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: data section at offset %zu lies past the end (%zu bytes)",
                        g->name, g->data_offset, size);
        goto fail;
    }
    size_t data_size = g->n_tensors ? size - g->data_offset : 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        lmf_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment || t->offset > data_size ||
            t->nbytes > data_size - t->offset) {
            rc = lmf_errorf(LMF_EFORMAT,
                            "%s: tensor \"%s\": data at offset %llu + %zu bytes %s (data section "
                            "of %zu bytes at file offset %zu, alignment %zu)",
                            g->name, t->name, (unsigned long long)t->offset, t->nbytes,
                            t->offset % g->alignment ? "is misaligned" : "runs past the end",
                            data_size, g->data_offset, g->alignment);
            goto fail;
        }
        t->data = g->base + g->data_offset + t->offset;
        /* Blocks hold f16 / f32 fields read in place: a file with general.alignment 1 or 2 could
         * place them at odd addresses (undefined behaviour in C), so such files are refused. */
        if ((uintptr_t)t->data % 4) {
            rc = lmf_errorf(LMF_EUNSUPPORTED,
                            "%s: tensor \"%s\": data at file offset %zu is not 4-byte aligned "
                            "(general.alignment %zu)",
                            g->name, t->name, g->data_offset + (size_t)t->offset, g->alignment);
            goto fail;
        }
    }
    qsort(g->tensors, (size_t)g->n_tensors, sizeof *g->tensors, cmp_tensor);
    for (int64_t i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i - 1].name, g->tensors[i].name)) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: tensor \"%s\" appears twice", g->name,
                            g->tensors[i].name);
            goto fail;
        }
    return 0;
fail:
    lmf_gguf_close(g);
    return rc;
}

int lmf_path_is_gguf(const char *path) {
    size_t n = path ? strlen(path) : 0;
    struct stat st;
    return n > 5 && !strcmp(path + n - 5, ".gguf") && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int lmf_gguf_open(lmf_gguf *g, const char *path) {
    memset(g, 0, sizeof *g);
    int rc = lmf_file_map(&g->file, path);
    if (rc) return rc;
    g->mapped = 1;
    if (!(g->name = lmf_strdup(path))) {
        lmf_gguf_close(g);
        return lmf_errorf(LMF_ENOMEM, "gguf: out of memory");
    }
    return parse_image(g, g->file.data, g->file.size);
}

int lmf_gguf_parse(lmf_gguf *g, const void *data, size_t size, const char *name) {
    memset(g, 0, sizeof *g);
    if (!(g->name = lmf_strdup(name ? name : "gguf")))
        return lmf_errorf(LMF_ENOMEM, "gguf: out of memory");
    return parse_image(g, data, size);
}

void lmf_gguf_close(lmf_gguf *g) {
    for (int64_t i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].v.strs);
        free(g->kv[i].v.lens);
    }
    for (int64_t i = 0; g->tensors && i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(g->name);
    if (g->mapped) lmf_file_unmap(&g->file);
    memset(g, 0, sizeof *g);
}

const lmf_gguf_kv *lmf_gguf_find(const lmf_gguf *g, const char *key) {
    lmf_gguf_kv k = {.key = (char *)key};
    return g->n_kv ? bsearch(&k, g->kv, (size_t)g->n_kv, sizeof *g->kv, cmp_kv) : NULL;
}

const lmf_gguf_tensor *lmf_gguf_find_tensor(const lmf_gguf *g, const char *name) {
    lmf_gguf_tensor k = {.name = (char *)name};
    return g->n_tensors
               ? bsearch(&k, g->tensors, (size_t)g->n_tensors, sizeof *g->tensors, cmp_tensor)
               : NULL;
}

static int is_int_type(uint32_t t) {
    return t <= LMF_GGUF_INT32 || t == LMF_GGUF_UINT64 || t == LMF_GGUF_INT64;
}

static int wrong_type(const lmf_gguf *g, const lmf_gguf_kv *kv, const char *want) {
    return lmf_errorf(LMF_EFORMAT, "%s: metadata \"%s\" (offset %zu): expected %s, found %s",
                      g->name, kv->key, kv->offset, want, value_name[kv->v.type]);
}

int lmf_gguf_get_int(const lmf_gguf *g, const char *key, int64_t *out) {
    const lmf_gguf_kv *kv = lmf_gguf_find(g, key);
    if (!kv) return LMF_ENOENT;
    if (!is_int_type(kv->v.type)) return wrong_type(g, kv, "an integer");
    if (kv->v.type == LMF_GGUF_UINT64 && kv->v.num.u > (uint64_t)INT64_MAX)
        return lmf_errorf(LMF_EFORMAT, "%s: metadata \"%s\": %llu out of range", g->name, key,
                          (unsigned long long)kv->v.num.u);
    *out = kv->v.num.i;
    return 0;
}

int lmf_gguf_get_float(const lmf_gguf *g, const char *key, double *out) {
    const lmf_gguf_kv *kv = lmf_gguf_find(g, key);
    if (!kv) return LMF_ENOENT;
    if (kv->v.type == LMF_GGUF_FLOAT32 || kv->v.type == LMF_GGUF_FLOAT64)
        *out = kv->v.num.f;
    else if (is_int_type(kv->v.type))
        *out = kv->v.type == LMF_GGUF_UINT64 ? (double)kv->v.num.u : (double)kv->v.num.i;
    else
        return wrong_type(g, kv, "a number");
    return 0;
}

int lmf_gguf_get_bool(const lmf_gguf *g, const char *key, int *out) {
    const lmf_gguf_kv *kv = lmf_gguf_find(g, key);
    if (!kv) return LMF_ENOENT;
    if (kv->v.type != LMF_GGUF_BOOL) return wrong_type(g, kv, "a bool");
    *out = (int)kv->v.num.u;
    return 0;
}

int lmf_gguf_get_str(const lmf_gguf *g, const char *key, const char **s, size_t *len) {
    const lmf_gguf_kv *kv = lmf_gguf_find(g, key);
    if (!kv) return LMF_ENOENT;
    if (kv->v.type != LMF_GGUF_STRING) return wrong_type(g, kv, "a string");
    *s = kv->v.str;
    *len = kv->v.len;
    return 0;
}

/* GGML's Q6_K (llama.cpp's Q4_K_M / Q5_K_M files keep some tensors in it), decoded only:
 * 256 values in 210 bytes, u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), int8 scales[16]
 * (one per 16 values), f16 d last; value v = d * scales[v / 16] * (q6 - 32). Within each half of
 * 128 values, value 32k + l (k = 0..3) takes its low bits from the low (k < 2) or high (k >= 2)
 * nibble of ql[l + 32 * (k % 2)] and its high bits from bits 2k..2k+1 of qh[l]. */
static void dequant_q6_k(float *y, const uint8_t *blocks, int64_t n) {
    for (int64_t b = 0; b < n / 256; b++) {
        const uint8_t *blk = blocks + b * 210, *ql = blk, *qh = blk + 128;
        const int8_t *sc = (const int8_t *)(blk + 192);
        uint16_t dh;
        memcpy(&dh, blk + 208, 2);
        float d = lmf_f16_to_f32(dh);
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128)
            for (int l = 0; l < 32; l++)
                for (int k = 0; k < 4; k++) {
                    int byte = ql[l + 32 * (k % 2)], lo = k / 2 ? byte >> 4 : byte & 0xF;
                    int q = (lo | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
                    y[32 * k + l] = d * sc[2 * k + l / 16] * q;
                }
    }
}

int lmf_gguf_tensor_to_f32(const lmf_gguf *g, const lmf_gguf_tensor *t, float *dst) {
    int64_t n = lmf_gguf_tensor_numel(t);
    lmf_qtype q;
    switch (t->type) {
    case LMF_GGML_F32:
        memcpy(dst, t->data, (size_t)n * 4);
        return 0;
    case LMF_GGML_F16:
        lmf_convert_to_f32(dst, t->data, LMF_F16, (size_t)n);
        return 0;
    case LMF_GGML_BF16:
        lmf_convert_to_f32(dst, t->data, LMF_BF16, (size_t)n);
        return 0;
    case LMF_GGML_Q6_K:
        dequant_q6_k(dst, t->data, n);
        return 0;
    default:
        if (lmf_ggml_to_qtype(t->type, &q))
            return lmf_errorf(LMF_EUNSUPPORTED,
                              "%s: tensor \"%s\": ggml type %s is not supported (F32, F16, BF16, "
                              "Q8_0, Q4_0, Q4_1, Q4_K, Q6_K are)",
                              g->name, t->name, lmf_ggml_type_name(t->type));
        lmf_dequantize(q, dst, t->data, n / t->ne[0], t->ne[0]);
        return 0;
    }
}

/* ---- writer ---- */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
    int oom;
} buf;

static void put(buf *b, const void *data, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_u32(buf *b, uint32_t v) {
    put(b, &v, 4);
}

static void put_u64(buf *b, uint64_t v) {
    put(b, &v, 8);
}

static void put_str(buf *b, const char *s, size_t n) {
    put_u64(b, n);
    put(b, s, n);
}

void lmf_gguf_writer_init(lmf_gguf_writer *w) {
    memset(w, 0, sizeof *w);
    w->alignment = DEFAULT_ALIGN;
}

void lmf_gguf_writer_free(lmf_gguf_writer *w) {
    for (int i = 0; i < w->n_kv; i++) free(w->kv[i].key), free(w->kv[i].val);
    for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->kv);
    free(w->tensors);
    memset(w, 0, sizeof *w);
}

/* Takes ownership of b's bytes as the value of key (replacing an earlier value). */
static int set_raw(lmf_gguf_writer *w, const char *key, buf *b) {
    if (b->oom) {
        free(b->p);
        return lmf_errorf(LMF_ENOMEM, "gguf writer: out of memory");
    }
    for (int i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].val = b->p, w->kv[i].len = b->len;
            return 0;
        }
    if (w->n_kv == w->cap_kv) {
        int cap = w->cap_kv ? 2 * w->cap_kv : 16;
        lmf_gguf_wkv *q = realloc(w->kv, sizeof *q * (size_t)cap);
        if (!q) {
            free(b->p);
            return lmf_errorf(LMF_ENOMEM, "gguf writer: out of memory");
        }
        w->kv = q, w->cap_kv = cap;
    }
    char *k = lmf_strdup(key);
    if (!k) {
        free(b->p);
        return lmf_errorf(LMF_ENOMEM, "gguf writer: out of memory");
    }
    w->kv[w->n_kv++] = (lmf_gguf_wkv){k, b->p, b->len};
    return 0;
}

static void put_scalar(buf *b, uint32_t type, int64_t i, double f) {
    uint8_t u8 = (uint8_t)i;
    uint16_t u16 = (uint16_t)i;
    uint32_t u32 = (uint32_t)i;
    float f32 = (float)f;
    switch (type) {
    case LMF_GGUF_UINT8:
    case LMF_GGUF_INT8:
    case LMF_GGUF_BOOL:
        put(b, &u8, 1);
        break;
    case LMF_GGUF_UINT16:
    case LMF_GGUF_INT16:
        put(b, &u16, 2);
        break;
    case LMF_GGUF_UINT32:
    case LMF_GGUF_INT32:
        put(b, &u32, 4);
        break;
    case LMF_GGUF_FLOAT32:
        put(b, &f32, 4);
        break;
    case LMF_GGUF_FLOAT64:
        put(b, &f, 8);
        break;
    default:
        put(b, &i, 8);
    }
}

static int scalar_type_ok(uint32_t type, const char *key) {
    if (type >= LMF_GGUF_NTYPES || type == LMF_GGUF_STRING || type == LMF_GGUF_ARRAY)
        return lmf_errorf(LMF_EINVAL, "gguf writer: key \"%s\": %u is not a scalar type", key,
                          type);
    return 0;
}

int lmf_gguf_set_int(lmf_gguf_writer *w, const char *key, uint32_t type, int64_t v) {
    int rc = scalar_type_ok(type, key);
    if (rc) return rc;
    buf b = {0};
    put_u32(&b, type);
    put_scalar(&b, type, v, (double)v);
    return set_raw(w, key, &b);
}

int lmf_gguf_set_float(lmf_gguf_writer *w, const char *key, uint32_t type, double v) {
    int rc = scalar_type_ok(type, key);
    if (rc) return rc;
    buf b = {0};
    put_u32(&b, type);
    put_scalar(&b, type, (int64_t)v, v);
    return set_raw(w, key, &b);
}

int lmf_gguf_set_str(lmf_gguf_writer *w, const char *key, const char *s) {
    buf b = {0};
    put_u32(&b, LMF_GGUF_STRING);
    put_str(&b, s, strlen(s));
    return set_raw(w, key, &b);
}

int lmf_gguf_set_arr(lmf_gguf_writer *w, const char *key, uint32_t elem_type, const void *data,
                     uint64_t n) {
    int rc = scalar_type_ok(elem_type, key);
    if (rc) return rc;
    buf b = {0};
    put_u32(&b, LMF_GGUF_ARRAY);
    put_u32(&b, elem_type);
    put_u64(&b, n);
    put(&b, data, (size_t)n * (size_t)value_size[elem_type]);
    return set_raw(w, key, &b);
}

int lmf_gguf_set_str_arr(lmf_gguf_writer *w, const char *key, const char *const *s, uint64_t n) {
    buf b = {0};
    put_u32(&b, LMF_GGUF_ARRAY);
    put_u32(&b, LMF_GGUF_STRING);
    put_u64(&b, n);
    for (uint64_t i = 0; i < n; i++) put_str(&b, s[i], strlen(s[i]));
    return set_raw(w, key, &b);
}

int lmf_gguf_add_tensor(lmf_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                        const int64_t *ne, const void *data) {
    if (type >= (uint32_t)N_GGML_TYPES || !ggml_types[type].name)
        return lmf_errorf(LMF_EINVAL, "gguf writer: tensor \"%s\": unknown ggml type %u", name,
                          type);
    if (n_dims < 1 || n_dims > MAX_DIMS)
        return lmf_errorf(LMF_EINVAL, "gguf writer: tensor \"%s\": %d dims, expected 1..4", name,
                          n_dims);
    int64_t numel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0)
            return lmf_errorf(LMF_EINVAL, "gguf writer: tensor \"%s\": ne[%d] = %lld", name, d,
                              (long long)ne[d]);
        numel *= ne[d];
    }
    if (ne[0] % ggml_types[type].block)
        return lmf_errorf(LMF_ESHAPE,
                          "gguf writer: tensor \"%s\": row length %lld is not a multiple of the %s "
                          "block (%d)",
                          name, (long long)ne[0], ggml_types[type].name, ggml_types[type].block);
    for (int i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name))
            return lmf_errorf(LMF_EINVAL, "gguf writer: tensor \"%s\" added twice", name);
    if (w->n_tensors == w->cap_tensors) {
        int cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        lmf_gguf_wtensor *q = realloc(w->tensors, sizeof *q * (size_t)cap);
        if (!q) return lmf_errorf(LMF_ENOMEM, "gguf writer: out of memory");
        w->tensors = q, w->cap_tensors = cap;
    }
    lmf_gguf_wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = lmf_strdup(name))) return lmf_errorf(LMF_ENOMEM, "gguf writer: out of memory");
    t->n_dims = n_dims;
    for (int d = 0; d < MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->type = type;
    t->data = data;
    t->nbytes = (size_t)(numel / ggml_types[type].block) * (size_t)ggml_types[type].bytes;
    w->n_tensors++;
    return 0;
}

static size_t align_up(size_t x, size_t a) {
    return (x + a - 1) / a * a;
}

static void put_zeros(buf *b, size_t n) {
    static const uint8_t zeros[64] = {0};
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        put(b, zeros, k);
        n -= k;
    }
}

/* Everything before the tensor data (padded to the alignment); *align gets the alignment. */
static int header_bytes(const lmf_gguf_writer *w, buf *b, size_t *align) {
    *align = w->alignment;
    for (int i = 0; i < w->n_kv; i++) /* general.alignment set by the caller wins */
        if (!strcmp(w->kv[i].key, "general.alignment") && w->kv[i].len == 8) {
            uint32_t a;
            memcpy(&a, w->kv[i].val + 4, 4);
            if (a && !(a & (a - 1))) *align = a;
        }
    put_u32(b, GGUF_MAGIC);
    put_u32(b, 3);
    put_u64(b, (uint64_t)w->n_tensors);
    put_u64(b, (uint64_t)w->n_kv);
    for (int i = 0; i < w->n_kv; i++) {
        put_str(b, w->kv[i].key, strlen(w->kv[i].key));
        put(b, w->kv[i].val, w->kv[i].len);
    }
    size_t off = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        const lmf_gguf_wtensor *t = &w->tensors[i];
        put_str(b, t->name, strlen(t->name));
        put_u32(b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(b, (uint64_t)t->ne[d]);
        put_u32(b, t->type);
        put_u64(b, off);
        off = align_up(off + t->nbytes, *align);
    }
    put_zeros(b, align_up(b->len, *align) - b->len);
    if (b->oom) {
        free(b->p);
        b->p = NULL;
        return lmf_errorf(LMF_ENOMEM, "gguf writer: out of memory");
    }
    return 0;
}

int lmf_gguf_writer_to_buffer(const lmf_gguf_writer *w, uint8_t **out, size_t *len) {
    buf b = {0};
    size_t align;
    int rc = header_bytes(w, &b, &align);
    if (rc) return rc;
    for (int i = 0; i < w->n_tensors; i++) {
        put(&b, w->tensors[i].data, w->tensors[i].nbytes);
        put_zeros(&b, align_up(w->tensors[i].nbytes, align) - w->tensors[i].nbytes);
    }
    if (b.oom) {
        free(b.p);
        return lmf_errorf(LMF_ENOMEM, "gguf writer: out of memory");
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* Streams the file (tensor data is written from the caller's buffers, never copied whole). */
int lmf_gguf_writer_write(const lmf_gguf_writer *w, const char *path) {
    buf b = {0};
    size_t align;
    int rc = header_bytes(w, &b, &align);
    if (rc) return rc;
    lmf_atomic_file f;
    if ((rc = lmf_atomic_open(&f, path))) {
        free(b.p);
        return rc;
    }
    static const uint8_t zeros[256] = {0};
    rc = lmf_atomic_write(&f, b.p, b.len);
    for (int i = 0; !rc && i < w->n_tensors; i++) {
        rc = lmf_atomic_write(&f, w->tensors[i].data, w->tensors[i].nbytes);
        size_t pad = align_up(w->tensors[i].nbytes, align) - w->tensors[i].nbytes;
        while (!rc && pad) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            rc = lmf_atomic_write(&f, zeros, k);
            pad -= k;
        }
    }
    free(b.p);
    if (rc) {
        lmf_atomic_abort(&f);
        return rc;
    }
    return lmf_atomic_commit(&f);
}
