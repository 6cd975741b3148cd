/* Llama-family models in GGUF files (src/model/gguf_model.c): llama.* metadata to and from
 * lmf_model_config, llama.cpp's tensor names to and from Hugging Face's, with the q/k row
 * permutation llama.cpp's converter applies for its rope undone on load and applied on save.
 * The embedded tokenizer is src/text/tokenizer_gguf.c's (lmforge/tokenizer.h). */
#ifndef LMFORGE_GGUF_MODEL_H
#define LMFORGE_GGUF_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "lmforge/gguf.h"
#include "lmforge/model.h"
#include "lmforge/quant.h"

/* llama.cpp's name of a Hugging Face parameter ("model.layers.3.self_attn.q_proj.weight" ->
 * "blk.3.attn_q.weight"); LMF_ENOENT (no message) for names without one. */
int lmf_gguf_name_from_hf(const char *hf, char *out, size_t n);
/* The row permutation of q (n_head = heads) or k (n_head = kv_heads) weights: GGUF row
 * perm[r] holds Hugging Face row r. Within a head of D rows, HF row s * D/2 + i (rotate-half
 * pairs) is GGUF row 2i + s (interleaved pairs). */
void lmf_gguf_rope_perm(int n_head, int head_dim, int32_t *perm);

/* general.architecture "llama" and llama.* keys to a config (errors name the file and key). */
int lmf_model_config_from_gguf(lmf_model_config *cfg, const lmf_gguf *g);
/* A model from an open GGUF file, every tensor converted / dequantized to float32 (the
 * quantized blocks stay in g for a quantized path: find them with lmf_gguf_name_from_hf and
 * lmf_gguf_find_tensor; q and k rows are in GGUF order, see lmf_gguf_rope_perm). */
int lmf_model_from_gguf(lmf_model **out, const lmf_gguf *g, const lmf_backend *be);
int lmf_model_load_gguf(lmf_model **out, const char *path, const lmf_backend *be);

typedef struct lmf_gguf_save_opts {
    /* Type of the 2-D weights (embedding, linears, lm_head): LMF_GGML_F32, F16, BF16, Q8_0,
     * Q4_0, Q4_1 or Q4_K; a weight whose row length is not a multiple of the block falls back
     * to Q4_0 (4-bit requests) or F32, as llama.cpp's quantizer falls back. Norms stay F32. */
    uint32_t weight_type;
    const char *tokenizer_dir; /* tokenizer.json (+ tokenizer_config.json) to embed; NULL: none */
    const char *name;          /* general.name; NULL: "lmforge" */
} lmf_gguf_save_opts;
int lmf_model_save_gguf(const lmf_model *m, const char *path, const lmf_gguf_save_opts *o);

#endif
