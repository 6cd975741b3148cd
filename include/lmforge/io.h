/* io layer: safetensors files (single and sharded through model.safetensors.index.json) and
 * Hugging Face config.json. Readers validate everything before use: a malformed or truncated
 * file gets an error naming the file and tensor, never a crash or an out-of-bounds read. */
#ifndef LMFORGE_IO_H
#define LMFORGE_IO_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "lmforge/core.h"
#include "lmforge/tensor.h"

#define LMF_MAX_DIMS 8

typedef struct lmf_st_tensor {
    char *name;
    lmf_dtype dtype;
    int ndim;
    int64_t shape[LMF_MAX_DIMS];
    const void *data; /* points into the mapped file */
    size_t nbytes;
    int file_index; /* which shard holds it */
} lmf_st_tensor;

/* A set of safetensors files opened read-only (mmap). */
typedef struct lmf_safetensors {
    int n_files;
    lmf_mapped_file *files;
    char **paths;
    int n_tensors;
    lmf_st_tensor *tensors; /* sorted by name */
    char *metadata_json;    /* "__metadata__" object as JSON text, or NULL */
} lmf_safetensors;

/* Opens one .safetensors file. */
int lmf_safetensors_open(lmf_safetensors *st, const char *path);
/* Opens a model folder: model.safetensors, or every shard named by
 * model.safetensors.index.json (its weight_map must name only tensors its shards hold). */
int lmf_safetensors_open_dir(lmf_safetensors *st, const char *dir);
void lmf_safetensors_close(lmf_safetensors *st);
/* NULL when absent. */
const lmf_st_tensor *lmf_safetensors_find(const lmf_safetensors *st, const char *name);
int64_t lmf_st_numel(const lmf_st_tensor *t);

/* Writer: collect tensors (borrowed pointers, kept until write), then write atomically. */
typedef struct lmf_st_entry {
    char *name;
    lmf_dtype dtype;
    int ndim;
    int64_t shape[LMF_MAX_DIMS];
    const void *data; /* borrowed: data in dtype already */
    size_t nbytes;
} lmf_st_entry;

typedef struct lmf_st_writer {
    int n, cap;
    lmf_st_entry *entries;
    cJSON *metadata; /* string -> string map, written as __metadata__ */
} lmf_st_writer;

void lmf_st_writer_init(lmf_st_writer *w);
/* Adds a tensor whose bytes (already in dtype) stay valid until lmf_st_writer_write. */
int lmf_st_writer_add(lmf_st_writer *w, const char *name, lmf_dtype dtype, int ndim,
                      const int64_t *shape, const void *data);
int lmf_st_writer_set_metadata(lmf_st_writer *w, const char *key, const char *value);
/* Writes path atomically (temp file, fsync, rename). Tensors are laid out sorted by name. */
int lmf_st_writer_write(lmf_st_writer *w, const char *path);
void lmf_st_writer_free(lmf_st_writer *w);

#endif
