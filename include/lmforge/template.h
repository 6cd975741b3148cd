/* Chat templates as LLaMA-Factory (src/llamafactory/data/template.py) defines them, rendered at
 * the string level into pieces that a later tokenisation step turns into token ids and label
 * masks. Nothing here tokenizes: bos/eos are slots (LMF_CHAT_PIECE_BOS / LMF_CHAT_PIECE_EOS) that
 * the tokenizer step replaces with its own ids, while literal special strings such as
 * "<|im_start|>" stay text (the tokenizer matches them as added tokens).
 *
 * Each TEXT piece is one LLaMA-Factory "element": LLaMA-Factory encodes every element on its own
 * (tokenizer.encode(elem, add_special_tokens=False)), so the tokenizer step must encode pieces
 * one by one, never their concatenation (SentencePiece's dummy prefix and BPE merges would
 * differ at the joins). See docs/templates.md for every template's rendering. */
#ifndef LMFORGE_TEMPLATE_H
#define LMFORGE_TEMPLATE_H

typedef struct lmf_template lmf_template;

typedef struct lmf_message {
    const char *role; /* "system" (first only), "user", "assistant"; "observation"/"function"
                         are recognised but rejected with LMF_EUNSUPPORTED for now */
    const char *content;
} lmf_message;

enum { LMF_CHAT_PIECE_TEXT = 0, LMF_CHAT_PIECE_BOS = 1, LMF_CHAT_PIECE_EOS = 2 };

typedef struct lmf_chat_piece {
    int kind;   /* LMF_CHAT_PIECE_* */
    char *text; /* owned, non-empty for TEXT; NULL for BOS/EOS */
} lmf_chat_piece;

typedef struct lmf_chat_pieces {
    lmf_chat_piece *v;
    int n, cap;
} lmf_chat_pieces;

/* One user/assistant exchange: LLaMA-Factory's encode_multiturn pair. Labels: response pieces
 * (and their eos) are trained, prompt pieces masked unless train_on_prompt. efficient_eos
 * templates carry no eos between turns; the supervised step (lmf_sft_build with
 * efficient_eos = lmf_template_efficient_eos(t)) adds the eos labels and the final eos. */
typedef struct lmf_turn {
    lmf_chat_pieces prompt;
    lmf_chat_pieces response;
} lmf_turn;

typedef struct lmf_template_opts {
    /* Reasoning templates (qwen3) only; LLaMA-Factory's enable_thinking, default 1. 1: an
     * assistant message without <think> gets an empty "<think>\n\n</think>\n\n" at the start of
     * its response (trained). 0: thoughts are removed from assistant messages and the empty
     * block goes at the end of the prompt (masked). */
    int enable_thinking;
} lmf_template_opts;

/* The template named name (LLaMA-Factory's spelling), or NULL with an LMF_ENOENT message that
 * lists the valid names. */
const lmf_template *lmf_template_find(const char *name);
/* All template names (NULL-terminated); *n gets their count. */
const char *const *lmf_template_names(int *n);

const char *lmf_template_name(const lmf_template *t);
/* "" when the template has none. */
const char *lmf_template_default_system(const lmf_template *t);
/* Strings that end generation besides the tokenizer's eos (NULL-terminated list, *n count). */
const char *const *lmf_template_stop_words(const lmf_template *t, int *n);
/* With replace_eos the tokenizer's eos token must become this string (stop_words[0]) before
 * EOS pieces are resolved, as LLaMA-Factory's fix_special_tokens does; NULL otherwise. */
const char *lmf_template_eos_override(const lmf_template *t);
/* 1 when the template writes no eos after responses: the supervised step labels the first
 * token of each later prompt with eos and appends one eos at the end (LLaMA-Factory's
 * supervised processor); LLaMA-Factory rejects train_on_prompt for these templates. */
int lmf_template_efficient_eos(const lmf_template *t);

/* Encodes a conversation for training: msgs is an optional leading system message, then
 * user/assistant alternating, ending with assistant. The system text is the leading system
 * message if present, else system; when that is NULL or "" the template's default system is
 * used. opts may be NULL (defaults). On success *turns (n_turns entries) is owned by the caller:
 * free with lmf_turns_free. Errors: LMF_EINVAL naming the message index, LMF_EUNSUPPORTED for
 * tool roles, LMF_ENOMEM. */
int lmf_template_encode_multiturn(const lmf_template *t, const lmf_message *msgs, int n,
                                  const char *system, const lmf_template_opts *opts,
                                  lmf_turn **turns, int *n_turns);
void lmf_turns_free(lmf_turn *turns, int n_turns);

/* The inference prompt for msgs ending with a user message: the whole history followed by the
 * open assistant header (LLaMA-Factory's encode_oneturn with an empty final assistant message).
 * *out is initialised here; free with lmf_chat_pieces_free. Stop on eos or lmf_template_stop_words.
 */
int lmf_template_render_generation_prompt(const lmf_template *t, const lmf_message *msgs, int n,
                                          const char *system, const lmf_template_opts *opts,
                                          lmf_chat_pieces *out);

void lmf_chat_pieces_free(lmf_chat_pieces *p);

/* Concatenates pieces into a malloc'd display string, writing bos/eos for BOS/EOS pieces
 * (e.g. "<s>", "</s>"; NULL writes nothing). For tests and `data preview`. */
int lmf_chat_pieces_to_string(const lmf_chat_pieces *p, const char *bos, const char *eos,
                              char **out);
/* Same for a whole encoded conversation: prompt + response of every turn. */
int lmf_turns_to_string(const lmf_turn *turns, int n_turns, const char *bos, const char *eos,
                        char **out);

#endif
