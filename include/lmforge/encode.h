/* From dataset records to training examples: renders each conversation with the chat template,
 * tokenises every template piece on its own (as LLaMA-Factory does, so the ids at piece joins
 * match), fills the bos/eos slots with the tokenizer's ids (the template's eos override, e.g.
 * <|eot_id|>, replaces eos), and assembles ids and labels with lmf_sft_build; pre-training
 * text becomes eos-terminated documents cut into blocks. */
#ifndef LMFORGE_ENCODE_H
#define LMFORGE_ENCODE_H

#include <stdint.h>

#include "lmforge/dataset.h"
#include "lmforge/preprocess.h"
#include "lmforge/template.h"
#include "lmforge/tokenizer.h"

typedef struct lmf_encode_options {
    const lmf_tokenizer *tok;
    const lmf_template *tpl; /* sft only */
    int pt;                  /* stage pt: text documents */
    int cutoff_len;
    int train_on_prompt, mask_history, enable_thinking;
} lmf_encode_options;

typedef struct lmf_encode_stats {
    int64_t examples, truncated, skipped_no_label, tokens;
} lmf_encode_stats;

/* The eos id the template trains on (override or tokenizer eos); -1 if neither exists. */
int32_t lmf_encode_eos_id(const lmf_encode_options *o);
/* One sft record; errors name the record's dataset and index. */
int lmf_encode_sft(const lmf_encode_options *o, const lmf_record *rec, lmf_example *out,
                   int *truncated);
/* A whole record set: sft examples, or pt blocks of cutoff_len. Examples without any trained
 * label (everything cut away) are dropped and counted. *out is an array the caller frees
 * with lmf_examples_free. */
int lmf_encode_records(const lmf_encode_options *o, const lmf_record_set *recs, lmf_example **out,
                       int64_t *n_out, lmf_encode_stats *st);
void lmf_examples_free(lmf_example *ex, int64_t n);
/* Token ids of rendered template pieces (a generation prompt), malloc'd. */
int lmf_encode_pieces(const lmf_encode_options *o, const lmf_chat_pieces *p, int32_t **ids, int *n);

#endif
