/* Preprocessing of tokenised examples into training rows, as LLaMA-Factory does it:
 * supervised (sft) assembly of (prompt, response) turns with label masks and cutoff_len
 * truncation shared between prompt and response; pre-training (pt) blocks; packing of several
 * examples into one row with segment ids (attention never crosses examples). */
#ifndef LMFORGE_PREPROCESS_H
#define LMFORGE_PREPROCESS_H

#include <stdint.h>

#define LMF_IGNORE_INDEX (-100)

/* One example: token ids and labels (LMF_IGNORE_INDEX where not trained), n tokens. */
typedef struct lmf_example {
    int32_t *ids, *labels;
    int n;
} lmf_example;
void lmf_example_free(lmf_example *e);

/* One turn of a conversation already tokenised: the prompt (source) and the response
 * (target, including its end-of-turn/eos tokens). Borrowed arrays. */
typedef struct lmf_turn_ids {
    const int32_t *source, *target;
    int source_len, target_len;
} lmf_turn_ids;

typedef struct lmf_sft_options {
    int cutoff_len;      /* > 0 */
    int train_on_prompt; /* label the prompts too */
    int mask_history;    /* train on the last turn only; turns kept newest first */
    int efficient_eos;   /* the template puts eos at the start of the next prompt */
    int32_t eos_id;      /* used with efficient_eos */
} lmf_sft_options;

/* LLaMA-Factory's infer_seqlen: how much of a source and a target fit in cutoff tokens. */
void lmf_infer_seqlen(int source_len, int target_len, int cutoff, int *new_source, int *new_target);
/* Assembles a supervised example; *truncated (may be NULL) is set when anything was cut. */
int lmf_sft_build(const lmf_turn_ids *turns, int n_turns, const lmf_sft_options *o,
                  lmf_example *out, int *truncated);

/* Pre-training: concatenates docs (each already ending in eos), cuts into blocks of block
 * tokens and drops the remainder; with bos_id >= 0 the first token of every block becomes
 * bos (LLaMA-Factory's packed pt with add_bos_token). Labels equal ids. */
int lmf_pt_blocks(const lmf_example *docs, int n_docs, int block, int32_t bos_id,
                  lmf_example **blocks, int *n_blocks);

/* Packing: groups examples (each at most cutoff tokens) into rows of at most cutoff tokens,
 * first-fit decreasing by length; a row's tokens carry the segment id of their example
 * (1, 2, ... in the row) and restarted position ids. */
typedef struct lmf_packed_row {
    int32_t *ids, *labels, *pos, *seg;
    int n;
} lmf_packed_row;
int lmf_pack(const lmf_example *ex, int n_ex, int cutoff, lmf_packed_row **rows, int *n_rows);
void lmf_packed_rows_free(lmf_packed_row *rows, int n_rows);

#endif
