/* Tokenizers loaded from Hugging Face tokenizer.json (+ tokenizer_config.json): byte-level BPE
 * (GPT-2, Llama-3, Qwen2, SmolLM) and SentencePiece-style BPE with byte fallback (Llama-2,
 * TinyLlama, Mistral). Token ids equal Hugging Face tokenizers' for every input. */
#ifndef LMFORGE_TOKENIZER_H
#define LMFORGE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct lmf_tokenizer lmf_tokenizer;

/* Loads dir/tokenizer.json and, when present, dir/tokenizer_config.json (bos/eos/pad,
 * add_bos_token/add_eos_token, chat_template). Errors name the file and JSON path. */
int lmf_tokenizer_load(lmf_tokenizer **out, const char *dir);
void lmf_tokenizer_free(lmf_tokenizer *t);
/* Copies the tokenizer files a Hugging Face folder may hold (tokenizer.json,
 * tokenizer_config.json, special_tokens_map.json, tokenizer.model, vocab.json, merges.txt,
 * chat_template.jinja, and generation_config.json, which travels with them) from src_dir to
 * dst_dir; absent ones are skipped. */
int lmf_tokenizer_copy_files(const char *src_dir, const char *dst_dir);

/* Encodes len bytes of UTF-8 text. add_special: apply the post-processor as Hugging Face's
 * add_special_tokens=True does (e.g. prepend <s> / <|begin_of_text|>). Special and added
 * tokens written in the text are always matched (as HF does by default).
 * *ids is malloc'd (caller frees), *n its length. */
int lmf_tokenizer_encode(const lmf_tokenizer *t, const char *text, size_t len, int add_special,
                         int32_t **ids, int *n);
/* Decodes ids to UTF-8 (malloc'd, NUL-terminated); skip_special drops special tokens.
 * Matches HF's decode(ids, skip_special_tokens=...) for these tokenizers. */
int lmf_tokenizer_decode(const lmf_tokenizer *t, const int32_t *ids, int n, int skip_special,
                         char **text, size_t *len);

int lmf_tokenizer_vocab_size(const lmf_tokenizer *t);                         /* largest id + 1 */
int32_t lmf_tokenizer_token_to_id(const lmf_tokenizer *t, const char *token); /* -1 if none */
const char *lmf_tokenizer_id_to_token(const lmf_tokenizer *t, int32_t id);    /* NULL if none */
int32_t lmf_tokenizer_bos(const lmf_tokenizer *t); /* -1 when the tokenizer has none */
int32_t lmf_tokenizer_eos(const lmf_tokenizer *t);
int32_t lmf_tokenizer_pad(const lmf_tokenizer *t);
int lmf_tokenizer_is_special(const lmf_tokenizer *t, int32_t id);
/* tokenizer_config.json's chat_template string, or NULL. */
const char *lmf_tokenizer_chat_template(const lmf_tokenizer *t);

/* Streaming decode for generation: feed ids one at a time; out receives only complete UTF-8
 * text (never half a character), the rest is held until later ids complete it. */
typedef struct lmf_detok_stream {
    const lmf_tokenizer *t;
    int32_t *ids;
    int n, cap;
    /* The window decoded on each push: ids[prefix ..]. Text up to the end of decode(ids[..
     * read)) has been returned; ids[prefix .. read) are decoded again only as context. */
    int prefix, read;
} lmf_detok_stream;
void lmf_detok_stream_init(lmf_detok_stream *s, const lmf_tokenizer *t);
/* Appends id; *out (malloc'd, may be "") gets the newly completed text. */
int lmf_detok_stream_push(lmf_detok_stream *s, int32_t id, char **out);
/* At the end of generation: *out (malloc'd, may be "") gets whatever push held back (a trailing
 * incomplete character, decoded as HF does, i.e. as U+FFFD), so that everything returned by
 * push and finish concatenates to lmf_tokenizer_decode(all ids). */
int lmf_detok_stream_finish(lmf_detok_stream *s, char **out);
void lmf_detok_stream_free(lmf_detok_stream *s);

#endif
