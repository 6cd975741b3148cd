/* tokenized_path: the tokenised training (and eval) examples in one versioned binary file, so
 * preprocessing runs once and later runs (and every rank) read ids and labels back directly.
 *
 * Layout (little-endian): "LMFTOKC\0", u32 version (1), u32 description length, the
 * description (key=value lines naming what made the examples: tokenizer, template, datasets,
 * cutoff_len, ...), u64 example counts of the train and eval sets, then per example u32 n and
 * n ids then n labels (i32), and a trailing u64 hash of everything before it. */
#ifndef LMFORGE_TOKEN_CACHE_H
#define LMFORGE_TOKEN_CACHE_H

#include <stdint.h>

#include "lmforge/preprocess.h"

#define LMF_TOKEN_CACHE_FILE "lmforge_tokens.bin"

/* Writes the file atomically (a crash leaves no torn cache). */
int lmf_token_cache_save(const char *path, const char *description, const lmf_example *train,
                         int64_t n_train, const lmf_example *eval, int64_t n_eval);

/* Reads the file. LMF_ENOENT when it does not exist; LMF_EINVAL naming the first differing
 * key when it was made from other settings than `description`; LMF_EFORMAT when it is not a
 * cache of this version or is truncated or corrupt. The caller frees both arrays with
 * lmf_examples_free. */
int lmf_token_cache_load(const char *path, const char *description, lmf_example **train,
                         int64_t *n_train, lmf_example **eval, int64_t *n_eval);

#endif
