/* Internal layout of lmf_tokenizer shared by the loader, the encoder pieces (normalizer,
 * pre-tokenizer, BPE) and the decoder. Mirrors the tokenizer.json pipeline of HF tokenizers. */
#ifndef LMF_TEXT_TOKENIZER_INTERNAL_H
#define LMF_TEXT_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "text/unicode.h"

/* ---- BPE model (bpe.c) ---- */
typedef struct lmf_bpe {
    int32_t n_ids;   /* largest model id + 1 */
    char **tok;      /* (n_ids) token text, NULL for unused ids */
    uint32_t *tlen;  /* (n_ids) */
    int32_t *slots;  /* open-addressing string -> id table, -1 empty */
    uint32_t mask;   /* slots size - 1 */
    uint64_t *mkeys; /* merge table: (left id << 32 | right id), UINT64_MAX empty */
    uint32_t *mrank; /* rank = position in the merges list */
    int32_t *mnew;   /* id of the merged token */
    uint32_t mmask;
    int32_t unk; /* -1 when none */
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_tok[256]; /* id of "<0xXX>", -1 when absent */
} lmf_bpe;

/* Builds the model from tokenizer.json's "model" object (file names the file in errors). */
struct cJSON;
int lmf_bpe_init(lmf_bpe *m, const struct cJSON *model, const char *file);
void lmf_bpe_free(lmf_bpe *m);
int32_t lmf_bpe_lookup(const lmf_bpe *m, const char *s, size_t n); /* -1 if absent */

/* Growable id list. */
typedef struct lmf_ids {
    int32_t *v;
    size_t n, cap;
} lmf_ids;
int lmf_ids_push(lmf_ids *a, int32_t id);

/* Scratch space for BPE on one word, reused across words of one encode call; also holds a
 * word -> ids cache (natural text repeats words, and the cache makes encode several times faster).
 */
typedef struct lmf_bpe_scratch {
    int32_t *sym, *prev, *next;
    size_t sym_cap;
    struct bpe_heap_ent *heap;
    size_t heap_cap;
    /* cache: open addressing over (word, ids) stored in the pools below */
    uint32_t *c_word_off, *c_word_len, *c_ids_off, *c_ids_len;
    uint32_t c_mask, c_used;
    lmf_sbuf c_words;
    lmf_ids c_ids;
} lmf_bpe_scratch;
void lmf_bpe_scratch_free(lmf_bpe_scratch *s);
/* Appends the ids of one pre-tokenized word. */
int lmf_bpe_word(const lmf_bpe *m, lmf_bpe_scratch *s, const char *w, size_t n, lmf_ids *out);

/* ---- normalizers and pre-tokenizers (pretokenize.c) ---- */
enum { NORM_PREPEND = 1, NORM_REPLACE, NORM_NFC };
typedef struct lmf_norm_step {
    int kind;
    char *a, *b; /* Prepend: a; Replace: a -> b */
    size_t alen, blen;
} lmf_norm_step;

enum { RX_GPT2 = 1, RX_LLAMA3, RX_QWEN2 };
enum { PT_BYTELEVEL = 1, PT_SPLIT, PT_METASPACE };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct lmf_pretok_step {
    int kind;
    int regex;            /* RX_*, 0 for none (ByteLevel use_regex false) */
    int add_prefix_space; /* ByteLevel */
    int prepend_scheme;   /* Metaspace */
    int split;            /* Metaspace */
    char repl[8];         /* Metaspace replacement (UTF-8) */
    size_t repl_len;
} lmf_pretok_step;

/* Returns RX_* for a known Split/ByteLevel pattern, 0 otherwise. */
int lmf_regex_lookup(const char *pattern);
/* End of the regex match that starts at byte i of s[0..n) (the patterns match every input). */
size_t lmf_regex_next(int rx, const uint8_t *s, size_t n, size_t i);

/* Pieces of text during pre-tokenization: spans into buf. */
typedef struct lmf_pieces {
    lmf_sbuf buf;
    size_t *off, *len;
    size_t n, cap;
    int *first; /* 1 when the piece begins at the start of the original input */
} lmf_pieces;
int lmf_pieces_add(lmf_pieces *p, const char *s, size_t n, int first);
void lmf_pieces_clear(lmf_pieces *p);
void lmf_pieces_free(lmf_pieces *p);

/* ---- decoders (decode.c) ---- */
enum { DEC_BYTELEVEL = 1, DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE };
typedef struct lmf_dec_step {
    int kind;
    char *a, *b; /* Replace a -> b; Strip content a; Metaspace replacement a */
    size_t alen, blen;
    int start, stop;    /* Strip */
    int prepend_scheme; /* Metaspace */
} lmf_dec_step;

typedef struct lmf_added_token {
    char *content;
    size_t len;
    char *pat; /* what is matched: content, or normalize(content) for "normalized" tokens */
    size_t plen;
    int32_t id;
    int special, lstrip, rstrip, single_word, normalized;
} lmf_added_token;

struct lmf_tokenizer {
    lmf_bpe bpe;
    lmf_norm_step *norm;
    int n_norm;
    lmf_pretok_step *pretok;
    int n_pretok;
    lmf_dec_step *dec;
    int n_dec, has_decoder;
    lmf_added_token *added; /* sorted by pattern length, longest first */
    int n_added;
    uint8_t added_first[256]; /* 1 when some added token starts with this byte */
    int32_t *added_of_id;     /* (vocab_size) index into added, -1 when none */
    int32_t *post_single;     /* template ids, with -1 standing for the sequence $A */
    int n_post_single;
    int32_t bos, eos, pad;
    int vocab_size;
    char *chat_template;
    int split_at_marker;  /* see marker_split_ok() in tokenizer.c */
    char bl_utf8[256][2]; /* byte-level alphabet: each byte's code point as UTF-8 (1-2 bytes) */
    uint8_t bl_len[256];
};

/* Builds the model, added tokens and pipeline of t (calloc'd, bos/eos/pad -1) from a parsed
 * tokenizer.json (file names it in errors): everything lmf_tokenizer_load does before reading
 * tokenizer_config.json. Also used to build a tokenizer from a GGUF file's metadata. */
int lmf_tok_build(struct lmf_tokenizer *t, const struct cJSON *root, const char *file);
/* Applies the normalizer steps to s[0..n), writing out (cleared first). */
int lmf_tok_normalize(const struct lmf_tokenizer *t, const char *s, size_t n, lmf_sbuf *out);
/* Splits normalized text into pre-tokenized words (the pre-tokenizer steps) in out. */
int lmf_tok_pretokenize(const struct lmf_tokenizer *t, const char *s, size_t n, int first,
                        lmf_pieces *out, lmf_pieces *tmp);
/* Parses normalizer / pre_tokenizer / decoder JSON into t (pipeline_load.c). */
int lmf_tok_load_pipeline(struct lmf_tokenizer *t, const struct cJSON *root, const char *file);
void lmf_tok_free_pipeline(struct lmf_tokenizer *t);
/* Decodes ids to bytes (raw: no lossy conversion of the final UTF-8, for streaming). */
int lmf_tok_decode_bytes(const struct lmf_tokenizer *t, const int32_t *ids, int n, int skip_special,
                         int raw, lmf_sbuf *out);

#endif
