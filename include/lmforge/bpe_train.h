/* Byte-level BPE training (GPT-2 style): learns merges from text files and writes a Hugging Face
 * tokenizer folder (tokenizer.json + tokenizer_config.json) that `tokenizers` and transformers
 * load directly.
 *
 * Id layout of the result: ids 0..255 are the single bytes (id == byte value, written with
 * GPT-2's byte-to-unicode alphabet), 256.. the merged tokens in the order they were learned, and
 * the special tokens take the last ids in the order given (GPT-2 keeps <|endoftext|> last too).
 * Ties between equally frequent pairs go to the pair whose left token string, then right token
 * string (byte-level form, compared bytewise), is smallest, so training is deterministic. */
#ifndef LMFORGE_BPE_TRAIN_H
#define LMFORGE_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

typedef struct lmf_bpe_train_opts {
    int vocab_size;    /* total, including the 256 bytes and the special tokens */
    int min_frequency; /* a pair seen fewer times than this is never merged (training stops) */
    const char *const *special_tokens; /* borrowed; the first is also eos/pad in the config */
    int n_special;
} lmf_bpe_train_opts;

typedef struct lmf_bpe_trainer lmf_bpe_trainer;

/* Validates opts (vocab_size >= 256 + n_special, distinct non-empty special tokens) and returns
 * an empty trainer in *out. */
int lmf_bpe_trainer_create(lmf_bpe_trainer **out, const lmf_bpe_train_opts *opts);
void lmf_bpe_trainer_free(lmf_bpe_trainer *t);

/* Pre-tokenizes text (GPT-2 split, special tokens cut out) and counts its words. */
int lmf_bpe_trainer_add_text(lmf_bpe_trainer *t, const char *text, size_t len);
/* Same for a whole file; errors name the file. */
int lmf_bpe_trainer_add_file(lmf_bpe_trainer *t, const char *path);

/* Learns merges until the vocabulary is full or no pair reaches min_frequency. Fails with
 * LMF_EINVAL when no text was added. Call once. */
int lmf_bpe_trainer_train(lmf_bpe_trainer *t);

/* Creates dir if needed and writes dir/tokenizer.json and dir/tokenizer_config.json. */
int lmf_bpe_trainer_save(const lmf_bpe_trainer *t, const char *dir);

/* After training: final vocabulary size (specials included) and the learned merges; *left and
 * *right point into the trainer (byte-level strings, e.g. "Ġ" for a space). */
int lmf_bpe_trainer_vocab_size(const lmf_bpe_trainer *t);
int lmf_bpe_trainer_n_merges(const lmf_bpe_trainer *t);
int lmf_bpe_trainer_merge(const lmf_bpe_trainer *t, int i, const char **left, const char **right);

#endif
