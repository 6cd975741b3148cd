/* GGUF files (llama.cpp's model format, versions 2 and 3): a reader that maps the file and
 * validates every count, length, offset and size before handing out a pointer (a malformed
 * file gets an error naming the file, the field and its byte offset, never an out-of-bounds
 * read), and a writer for the same subset so tests and `export` make their own files.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; then the
 * metadata (string key, u32 value type, value; strings are u64 length + bytes, arrays are u32
 * element type + u64 count + elements); then per tensor: name, u32 n_dims, u64 ne[n_dims]
 * (ne[0] the row length, i.e. HF's last dimension), u32 ggml type, u64 offset relative to the
 * data section, which starts at the next multiple of general.alignment (default 32). */
#ifndef LMFORGE_GGUF_H
#define LMFORGE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "lmforge/core.h"
#include "lmforge/quant.h"
#include "lmforge/tensor.h"

/* Metadata value types. */
enum {
    LMF_GGUF_UINT8 = 0,
    LMF_GGUF_INT8 = 1,
    LMF_GGUF_UINT16 = 2,
    LMF_GGUF_INT16 = 3,
    LMF_GGUF_UINT32 = 4,
    LMF_GGUF_INT32 = 5,
    LMF_GGUF_FLOAT32 = 6,
    LMF_GGUF_BOOL = 7,
    LMF_GGUF_STRING = 8,
    LMF_GGUF_ARRAY = 9,
    LMF_GGUF_UINT64 = 10,
    LMF_GGUF_INT64 = 11,
    LMF_GGUF_FLOAT64 = 12,
    LMF_GGUF_NTYPES
};

/* ggml tensor types lmforge computes with (others are parsed, and refused on use). */
enum {
    LMF_GGML_F32 = 0,
    LMF_GGML_F16 = 1,
    LMF_GGML_Q4_0 = 2,
    LMF_GGML_Q4_1 = 3,
    LMF_GGML_Q8_0 = 8,
    LMF_GGML_Q4_K = 12,
    LMF_GGML_Q6_K = 14, /* read (dequantized) only */
    LMF_GGML_BF16 = 30
};

typedef struct lmf_gguf_value {
    uint32_t type;     /* LMF_GGUF_* */
    uint32_t arr_type; /* element type when type is ARRAY */
    uint64_t n;        /* array length; 1 for a scalar */
    union {
        uint64_t u;
        int64_t i;
        double f;
    } num;           /* a numeric or bool scalar (integers widened, floats as double) */
    const char *str; /* STRING scalar: bytes in the file (not NUL-terminated) */
    size_t len;
    const uint8_t *data; /* ARRAY of fixed-size elements: the elements in the file */
    const char **strs;   /* ARRAY of STRING: each string's bytes in the file (owned index) */
    size_t *lens;
} lmf_gguf_value;

typedef struct lmf_gguf_kv {
    char *key;
    lmf_gguf_value v;
    size_t offset; /* of the key in the file */
} lmf_gguf_kv;

typedef struct lmf_gguf_tensor {
    char *name;
    int n_dims;
    int64_t ne[4];   /* ne[0] = row length */
    uint32_t type;   /* LMF_GGML_* */
    uint64_t offset; /* relative to the data section */
    const uint8_t *data;
    size_t nbytes;
} lmf_gguf_tensor;

typedef struct lmf_gguf {
    char *name; /* the path, or the name given to lmf_gguf_parse */
    lmf_mapped_file file;
    int mapped;
    const uint8_t *base;
    size_t size;
    uint32_t version;
    size_t alignment, data_offset;
    int64_t n_kv, n_tensors;
    lmf_gguf_kv *kv;
    lmf_gguf_tensor *tensors;
} lmf_gguf;

/* Non-zero when path names a regular file ending in ".gguf" (model_name_or_path may be one). */
int lmf_path_is_gguf(const char *path);
/* Opens and validates a GGUF file (mapped read-only). */
int lmf_gguf_open(lmf_gguf *g, const char *path);
/* Parses a GGUF image in memory (borrowed: it must outlive g); name labels errors. */
int lmf_gguf_parse(lmf_gguf *g, const void *data, size_t size, const char *name);
void lmf_gguf_close(lmf_gguf *g);

const lmf_gguf_kv *lmf_gguf_find(const lmf_gguf *g, const char *key); /* NULL when absent */
/* Typed getters: 0, LMF_ENOENT when the key is absent (no message set), LMF_EFORMAT naming the
 * file and key when the value has another type or does not fit. get_int takes any integer
 * type; get_float any float or integer; get_bool a bool. */
int lmf_gguf_get_int(const lmf_gguf *g, const char *key, int64_t *out);
int lmf_gguf_get_float(const lmf_gguf *g, const char *key, double *out);
int lmf_gguf_get_bool(const lmf_gguf *g, const char *key, int *out);
int lmf_gguf_get_str(const lmf_gguf *g, const char *key, const char **s, size_t *len);
/* Element i of a numeric array as int64 / double (the caller checks i < n). */
int64_t lmf_gguf_arr_int(const lmf_gguf_value *v, uint64_t i);
double lmf_gguf_arr_float(const lmf_gguf_value *v, uint64_t i);

const lmf_gguf_tensor *lmf_gguf_find_tensor(const lmf_gguf *g, const char *name);
/* "F32", "Q4_K" ... ("?" when unknown). */
const char *lmf_ggml_type_name(uint32_t type);
/* The lmforge quantized type of a ggml type (Q8_0, Q4_0, Q4_1, Q4_K); LMF_EUNSUPPORTED else. */
int lmf_ggml_to_qtype(uint32_t type, lmf_qtype *out);
int lmf_qtype_to_ggml(lmf_qtype q, uint32_t *out);
/* Converts / dequantizes a whole tensor to float32 (numel floats at dst); LMF_EUNSUPPORTED
 * (naming the tensor and type) for types lmforge cannot decode. */
int lmf_gguf_tensor_to_f32(const lmf_gguf *g, const lmf_gguf_tensor *t, float *dst);
int64_t lmf_gguf_tensor_numel(const lmf_gguf_tensor *t);

/* ---- writer ---- */
typedef struct lmf_gguf_wkv {
    char *key;
    uint8_t *val; /* serialized value type + value */
    size_t len;
} lmf_gguf_wkv;

typedef struct lmf_gguf_wtensor {
    char *name;
    int n_dims;
    int64_t ne[4];
    uint32_t type;
    const void *data; /* borrowed until write */
    size_t nbytes;
} lmf_gguf_wtensor;

typedef struct lmf_gguf_writer {
    int n_kv, cap_kv, n_tensors, cap_tensors;
    lmf_gguf_wkv *kv;
    lmf_gguf_wtensor *tensors;
    uint32_t alignment; /* 32 unless general.alignment is set */
} lmf_gguf_writer;

void lmf_gguf_writer_init(lmf_gguf_writer *w);
void lmf_gguf_writer_free(lmf_gguf_writer *w);
/* Scalars (type one of LMF_GGUF_UINT8..FLOAT64 but STRING / ARRAY); value passed widened. */
int lmf_gguf_set_int(lmf_gguf_writer *w, const char *key, uint32_t type, int64_t v);
int lmf_gguf_set_float(lmf_gguf_writer *w, const char *key, uint32_t type, double v);
int lmf_gguf_set_str(lmf_gguf_writer *w, const char *key, const char *s);
/* Arrays: numeric (elements already in the element type's bytes) or strings. */
int lmf_gguf_set_arr(lmf_gguf_writer *w, const char *key, uint32_t elem_type, const void *data,
                     uint64_t n);
int lmf_gguf_set_str_arr(lmf_gguf_writer *w, const char *key, const char *const *s, uint64_t n);
/* A tensor (data borrowed, in the ggml type's layout; ne[0] = row length). */
int lmf_gguf_add_tensor(lmf_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                        const int64_t *ne, const void *data);
/* The whole file image (malloc'd), or written atomically to path. */
int lmf_gguf_writer_to_buffer(const lmf_gguf_writer *w, uint8_t **buf, size_t *len);
int lmf_gguf_writer_write(const lmf_gguf_writer *w, const char *path);

#endif
