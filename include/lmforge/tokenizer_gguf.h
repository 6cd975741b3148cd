/* Tokenizers embedded in GGUF files (src/text/tokenizer_gguf.c): tokenizer.ggml.model "gpt2"
 * (byte-level BPE: tokens, merges, token_type, bos/eos/padding ids, add_bos/add_eos,
 * tokenizer.ggml.pre choosing the pre-tokenizer regex, tokenizer.chat_template) read as an
 * lmf_tokenizer, and a byte-level tokenizer.json written as that metadata. */
#ifndef LMFORGE_TOKENIZER_GGUF_H
#define LMFORGE_TOKENIZER_GGUF_H

#include "lmforge/gguf.h"
#include "lmforge/tokenizer.h"

/* Builds the tokenizer a GGUF file embeds. Errors name the file and key; SentencePiece-style
 * ("llama") and other tokenizer models are LMF_EUNSUPPORTED. */
int lmf_tokenizer_from_gguf(lmf_tokenizer **out, const lmf_gguf *g);
/* Adds the tokenizer.ggml.* metadata (and tokenizer.chat_template) of the tokenizer in dir
 * (tokenizer.json + tokenizer_config.json) to w. Byte-level BPE tokenizers only. */
int lmf_tokenizer_gguf_metadata(lmf_gguf_writer *w, const char *dir);

#endif
