/* The Llama-family transformer: configuration (from Hugging Face config.json), weights in one
 * contiguous float32 buffer carved by a parameter table (llm.c style), forward and backward
 * passes, and LoRA adapters. Layouts follow Hugging Face: a linear weight is (out, in). */
#ifndef LMFORGE_MODEL_H
#define LMFORGE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "lmforge/core.h"
#include "lmforge/tensor.h"

typedef enum lmf_arch { LMF_ARCH_LLAMA, LMF_ARCH_MISTRAL, LMF_ARCH_QWEN2, LMF_ARCH_QWEN3 } lmf_arch;
typedef enum lmf_rope_kind { LMF_ROPE_DEFAULT, LMF_ROPE_LINEAR, LMF_ROPE_LLAMA3 } lmf_rope_kind;

typedef struct lmf_model_config {
    lmf_arch arch;
    int hidden;   /* C */
    int layers;   /* L */
    int heads;    /* H */
    int kv_heads; /* KVH, divides H */
    int head_dim; /* D */
    int ffn;      /* F, intermediate_size */
    int vocab;    /* V */
    int max_pos;
    float rms_eps, rope_theta, init_range;
    int tied;           /* lm_head shares the embedding */
    int attn_bias;      /* q/k/v biases (Qwen2) */
    int qk_norm;        /* per-head RMSNorm of q and k before RoPE (Qwen3) */
    int sliding_window; /* 0 = none */
    lmf_rope_kind rope_kind;
    float rope_factor, rope_low_freq, rope_high_freq;
    int rope_orig_max_pos;
    lmf_dtype file_dtype; /* torch_dtype: what save writes */
    int bos_id, eos_id;   /* -1 when absent */
} lmf_model_config;

const char *lmf_arch_hf_name(lmf_arch a); /* "LlamaForCausalLM" ... */
/* Parses a config.json text / file; errors name the file and key. */
int lmf_model_config_load(lmf_model_config *cfg, const char *path);
int lmf_model_config_validate(const lmf_model_config *cfg, const char *what);
/* Renders config.json (caller frees). */
char *lmf_model_config_to_json(const lmf_model_config *cfg);
/* Fills a named preset ("tiny", "llama-110m", "smollm-135m") for arch. */
int lmf_model_preset(lmf_model_config *cfg, lmf_arch arch, const char *preset);
int lmf_arch_parse(const char *name, lmf_arch *out); /* "llama", "mistral", "qwen2", "qwen3" */
/* inv_freq[i] for i < D/2, with rope scaling applied as transformers does. */
void lmf_rope_inv_freq(const lmf_model_config *cfg, float *inv_freq);

/* The seven linear layers of a block, as PEFT's target_modules name them. */
typedef enum lmf_linear_id {
    LMF_Q,
    LMF_K,
    LMF_V,
    LMF_O,
    LMF_GATE,
    LMF_UP,
    LMF_DOWN,
    LMF_N_LINEAR
} lmf_linear_id;
const char *lmf_linear_name(lmf_linear_id id);      /* "q_proj" ... */
const char *lmf_linear_hf_prefix(lmf_linear_id id); /* "self_attn.q_proj" ... */

/* One entry of the parameter table: a named slice of the flat parameter buffer. */
typedef struct lmf_param {
    char name[96]; /* Hugging Face name, e.g. model.layers.3.mlp.up_proj.weight */
    int ndim;
    int64_t shape[2];
    size_t offset, numel; /* in floats */
    int layer;            /* -1 for embedding / final norm / lm_head */
    int is_norm_or_bias;  /* no weight decay */
} lmf_param;

typedef struct lmf_layer_weights {
    float *attn_norm;       /* (C) */
    float *w[LMF_N_LINEAR]; /* q (H*D, C), k/v (KVH*D, C), o (C, H*D),
                               gate/up (F, C), down (C, F) */
    float *bq, *bk, *bv;    /* (H*D), (KVH*D), (KVH*D); NULL unless attn_bias */
    float *q_norm, *k_norm; /* (D); NULL unless qk_norm */
    float *mlp_norm;        /* (C) */
} lmf_layer_weights;

typedef struct lmf_weights {
    float *embed;      /* (V, C) */
    float *final_norm; /* (C) */
    float *lm_head;    /* (V, C); == embed when tied */
    lmf_layer_weights *layers;
} lmf_weights;

/* LoRA adapter on a subset of the linears of every layer: y += (alpha/r) B A dropout(x). */
typedef struct lmf_lora {
    int r;
    float alpha, dropout;
    float scale; /* alpha / r, or alpha / sqrt(r) with use_rslora */
    int use_rslora;
    unsigned targets; /* bit (1 << lmf_linear_id) */
    int n_params;
    lmf_param
        *table; /* PEFT names: base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight */
    size_t numel;
    float *params, *grads; /* flat; grads NULL until lmf_lora_enable_grads */
    int n_slots;           /* layers * LMF_N_LINEAR */
    float **A, **B; /* [layer * LMF_N_LINEAR + id]: A (r, in), B (out, r); NULL if untargeted */
    float **dA, **dB;
    lmf_rng dropout_rng;
    /* PEFT's modules_to_save (LLaMA-Factory's additional_target): whole base modules, e.g.
     * "embed_tokens,lm_head", trained in full beside the adapter and saved inside it as
     * base_model.model.<parameter name>. Comma list; "" for none. */
    char modules_to_save[256];
} lmf_lora;

typedef struct lmf_acts lmf_acts; /* saved activations, model.c private */

typedef struct lmf_model {
    lmf_model_config cfg;
    const lmf_backend *be;
    int n_params;
    lmf_param *table;
    size_t numel;
    float *params;      /* flat, be->alloc'd */
    float *grads;       /* same layout; NULL unless lmf_model_enable_grads */
    uint8_t *trainable; /* per table entry; grads only computed for these */
    lmf_weights w, g;   /* pointers into params / grads */
    float *inv_freq;    /* (D/2) */
    lmf_lora *lora;     /* borrowed; NULL for none */
    lmf_acts *acts;
    double loss_denom; /* > 0: gradients are of sum(token losses) / loss_denom instead of the
                          batch mean, so accumulated micro-batches average over all their tokens */
    void *step_block;  /* inference scratch, grown on demand */
    size_t step_bytes;
    /* Called once by each lmf_model_step: inside its parallel region when it has one (by one
     * thread, whose items the others take over if it is held up), else before the step's work.
     * The server wakes its HTTP threads there: woken on the engine thread between steps they
     * preempted it while the other compute thread spun idle. NULL: none. */
    void (*step_hook)(void *arg);
    void *step_hook_arg;
    uint16_t *infer_bf16; /* bf16 copy of params read by lmf_model_step (same offsets); NULL: f32 */
    /* Compute mode (lmf_model_set_compute). bf16 is the effective mode: 0 after a fallback. */
    int bf16, grad_ckpt;
    uint16_t *wbf;      /* bf16 copies of every layer's seven linears and of lm_head, one block */
    uint16_t **wbf_lin; /* [layer * LMF_N_LINEAR + id] -> (out, in) slice of wbf */
    uint16_t *wbf_head; /* (V, C) */
    int wbf_stale;      /* copies out of date: refreshed by the next forward */
    /* Called by lmf_model_backward after layer l's gradients (base and LoRA) are complete,
     * layers descending (DDP starts all-reducing their buckets meanwhile); NULL: none. */
    void (*grad_hook)(void *user, int layer);
    void *grad_hook_user;
    /* Called around every use of the weights in lmf_model_forward / lmf_model_backward (see
     * lmf_weight_event), so that weights sharded across ranks (ZeRO-3 / FSDP FULL_SHARD) are
     * gathered right before they are read and released right after; NULL: none. */
    void (*weight_hook)(void *user, int layer, int event);
    void *weight_hook_user;
    /* QLoRA (lmf_model_quantize_base): the frozen linears, lm_head and embedding kept only as
     * block-quantized rows of type qtype; their float32 pages are given back. */
    int quantized;
    int qtype;       /* lmf_qtype */
    uint8_t *qblock; /* every quantized tensor, one allocation */
    size_t qbytes;
    const uint8_t **qlin;          /* [layer * LMF_N_LINEAR + id] */
    const uint8_t *qhead, *qembed; /* (V, C) rows; the same block when tied */
    float *qtmp;                   /* backward scratch for dx through a quantized matrix */
    size_t qtmp_floats;
    /* Tensor parallelism (tensor_parallel.h): this model is one rank's shard and cfg its own
     * shape; NULL for a whole model. Owned. */
    struct lmf_tp *tp;
} lmf_model;

/* Events of m->weight_hook. layer is -1 for the tensors outside the layers (embedding, final
 * norm, lm_head). */
typedef enum lmf_weight_event {
    LMF_WEIGHTS_FWD_BEGIN,      /* layer -1: forward starts (the embedding is read next) */
    LMF_WEIGHTS_LAYER_FWD,      /* layer l's forward starts */
    LMF_WEIGHTS_LAYER_FWD_DONE, /* layer l's forward is over */
    LMF_WEIGHTS_FWD_END,        /* layer -1: the logits are computed */
    LMF_WEIGHTS_LAYER_BWD,      /* layer l's backward (and its recompute) starts; grad_hook ends
                                   it */
    LMF_WEIGHTS_BWD_END,        /* layer -1: backward is over (the embedding's gradient too) */
} lmf_weight_event;

/* A batch of B rows of T tokens. labels follow Hugging Face (unshifted, -100 ignored): the
 * prediction at token t is scored against labels[t+1] when t+1 is in the same row and
 * segment. pos and seg may be NULL (0..T-1 and one segment per row). */
typedef struct lmf_batch {
    int B, T;
    const int32_t *ids, *labels, *pos, *seg;
} lmf_batch;

/* Creation: from a Hugging Face folder (config.json + safetensors), or random init. */
int lmf_model_load(lmf_model **out, const char *dir, const lmf_backend *be);
int lmf_model_create(lmf_model **out, const lmf_model_config *cfg, const lmf_backend *be);
void lmf_model_init_random(lmf_model *m, uint64_t seed); /* as transformers initialises */
void lmf_model_free(lmf_model *m);
/* Writes config.json + model.safetensors (in cfg.file_dtype) into dir. */
int lmf_model_save(const lmf_model *m, const char *dir);
/* The same, split into model-0000K-of-0000N.safetensors files of at most max_shard_bytes each
 * (a larger single tensor gets a shard of its own) plus model.safetensors.index.json, as
 * transformers' save_pretrained shards; one shard is written as model.safetensors. */
int lmf_model_save_sharded(const lmf_model *m, const char *dir, size_t max_shard_bytes);
const lmf_param *lmf_model_find_param(const lmf_model *m, const char *name);

/* Gradients: allocates the gradient buffer and marks every parameter trainable (full
 * fine-tuning); lmf_model_set_trainable narrows it. With no grads enabled (e.g. LoRA) the
 * base is frozen and no base gradient is computed or stored. */
int lmf_model_enable_grads(lmf_model *m);
void lmf_model_zero_grads(lmf_model *m);

/* Forward: writes the mean loss over labelled targets to *loss (NaN-free; 0 targets -> 0)
 * and, when logits is non-NULL, copies the (B*T, V) logits there. With want_grad the pass
 * keeps what backward needs. n_targets (may be NULL) gets the number of scored tokens.
 * per_token_logprob (may be NULL) gets log p(target) per token (0 where no target). */
int lmf_model_forward(lmf_model *m, const lmf_batch *b, int want_grad, double *loss,
                      int64_t *n_targets, float *logits, float *per_token_logprob);
/* Backward for the last forward (want_grad): adds d(loss)/d(param) into the enabled
 * gradients (base and/or LoRA). */
int lmf_model_backward(lmf_model *m);

/* ---- compute options: mixed precision and activation checkpointing (training passes) ---- */

typedef struct lmf_compute_options {
    /* bf16 mixed precision (HF `bf16: true`): in lmf_model_forward/backward the big matmuls
     * (the seven linears of every layer forward and backward, and lm_head) take bfloat16
     * inputs and accumulate in float32. Master weights, gradients, optimizer state, LoRA
     * weights and the LoRA matmuls, norms, attention and the loss stay float32. The frozen
     * weights' bf16 copies are made once and reused; see lmf_model_weights_changed. */
    int bf16;
    /* Per-layer activation checkpointing (HF `gradient_checkpointing: true`): forward keeps
     * only each layer's input; backward recomputes a layer's forward (with the same LoRA
     * dropout masks) right before its backward. Gradients are bit-identical to the plain
     * path; activation memory drops from ~L layer sets to one set plus L inputs, for about
     * one extra forward of compute. */
    int grad_ckpt;
} lmf_compute_options;

/* Sets the compute mode for the following training passes (the inference step,
 * lmf_model_step, stays float32). When bf16 is asked for but the backend cannot do it
 * natively here (a CPU without AVX-512 BF16, an OpenBLAS build, or LMF_NO_BF16=1) the model
 * computes in float32 and one notice saying why is logged; m->bf16 tells the mode in effect.
 * A change of mode drops the kept activations (a pending backward then fails cleanly).
 * Returns 0, or LMF_ENOMEM when the bf16 weight copies cannot be allocated. */
int lmf_model_set_compute(lmf_model *m, const lmf_compute_options *o);
/* Tells the model its float32 weights changed (after each optimizer step of full or freeze
 * fine-tuning, after loading weights into m->params, after editing them by hand;
 * lmf_lora_merge calls it itself), so the next forward refreshes the bf16 copies (all of
 * them: ~0.2 GB written for llama-110m). Cheap to call; a no-op outside bf16 mode. */
void lmf_model_weights_changed(lmf_model *m);
/* Bytes of the activation block the last forward used (0 before any forward). */
size_t lmf_model_activation_bytes(const lmf_model *m);

/* ---- inference: a decode step over a paged KV cache ---- */

/* KV storage for inference: n_blocks blocks of block_size token slots for every layer, from
 * the model's backend, with values of type dtype (float32, bfloat16, or int8 rows with a float32
 * scale each: lmf_kv_dtype). A block is contiguous and self-contained: layers one after the
 * other, layer_bytes apart; a layer's part holds its (block_size, kv_dim) values, kv_dim =
 * KVH*D, then with INT8, scale_off bytes from them, its (block_size, KVH) scales. Which block
 * belongs to which sequence (and prefix sharing) is the serving layer's business; the model only
 * reads and writes through block tables. */
typedef struct lmf_kv_pool {
    int block_size, n_blocks, layers, kv_dim, kv_heads;
    lmf_kv_dtype dtype;
    size_t layer_bytes; /* from one layer's part of a block to the next's */
    size_t block_bytes; /* from one block to the next: layers * layer_bytes */
    size_t scale_off;   /* INT8: from a layer's values to its scales; 0 otherwise */
    uint8_t *kbuf, *vbuf;
    const lmf_backend *be;
} lmf_kv_pool;
/* Bytes of one block of block_size tokens (keys and values, every layer) with values of type t. */
size_t lmf_kv_bytes_per_block(const lmf_model_config *cfg, int block_size, lmf_kv_dtype t);
/* A float32 pool (lmf_kv_pool_create_dtype with LMF_KV_F32). */
int lmf_kv_pool_create(lmf_kv_pool *p, const lmf_model *m, int block_size, int n_blocks);
int lmf_kv_pool_create_dtype(lmf_kv_pool *p, const lmf_model *m, int block_size, int n_blocks,
                             lmf_kv_dtype t);
/* kv_cache_dtype auto: the cache type for the weights m's steps read (as vLLM's auto follows the
 * model's dtype): bfloat16 for a bfloat16 copy, float32 for float32 and quantized weights
 * (whose products take float32 inputs). */
lmf_kv_dtype lmf_kv_dtype_auto(const lmf_model *m);
void lmf_kv_pool_free(lmf_kv_pool *p);

/* One sequence's part of a step: n_new tokens at positions start.. (a prefill chunk, or one
 * decode token), whose K/V are written into the cache; table maps the sequence's logical
 * blocks to pool blocks and must cover start + n_new tokens. want_logits: the step returns
 * this sequence's next-token logits (for its last new token). */
typedef struct lmf_seq_step {
    const int32_t *tokens;
    int n_new, start;
    const int32_t *table;
    int n_table;
    int want_logits;
    const lmf_lora *lora; /* this sequence's adapter; NULL: the model's (m->lora, maybe none) */
} lmf_seq_step;

/* Runs one step for all sequences together (their tokens batched through every GEMM; each
 * sequence's adapter applied to its rows, consecutive sequences sharing an adapter in one
 * GEMM). logits receives (number of sequences with want_logits, V) rows in sequence order. */
int lmf_model_step(lmf_model *m, lmf_kv_pool *kv, const lmf_seq_step *seqs, int n_seqs,
                   float *logits);
/* The weight type lmf_model_step reads: LMF_F32 (the parameters themselves) or LMF_BF16 (a bf16
 * copy made now, half the bytes per token; products accumulate in f32). Inference only: the
 * copy does not follow later changes of the parameters; call again after changing them. */
int lmf_model_set_infer_dtype(lmf_model *m, lmf_dtype t);
/* The vocabulary token ids and the step's logits rows span: cfg.vocab, or for a tensor-parallel
 * shard the whole model's (its cfg.vocab is its own block of rows). */
int lmf_model_vocab(const lmf_model *m);

/* QLoRA and quantized inference: quantizes the frozen base (the seven linears of every layer,
 * lm_head and the embedding) to qtype (an lmf_qtype) and gives their float32
 * pages back; forward and backward then multiply through the quantized rows (inputs' gradients
 * flow through the dequantized matrices; the quantized tensors get no gradient). Refused when
 * any of those tensors is trainable, or a row length is not a multiple of the format's block
 * (the message names the tensor). lmf_model_step multiplies through the same rows (the decode
 * step streams the quantized bytes; activations stay float32); lmf_model_set_infer_dtype then
 * refuses bf16. */
int lmf_model_quantize_base(lmf_model *m, int qtype);
/* Bytes the base model's parameters hold now: the quantized blocks plus the float32 pages still
 * resident (norms, biases); *f32_bytes gets what the whole model takes in float32. */
size_t lmf_model_base_bytes(const lmf_model *m, size_t *f32_bytes);

/* LoRA */
int lmf_lora_parse_targets(const char *list, unsigned *targets); /* "q_proj,v_proj" or "all" */
int lmf_lora_create(lmf_lora **out, const lmf_model *m, int r, float alpha, float dropout,
                    unsigned targets);
/* PEFT's initialisation: A Kaiming-uniform (a = sqrt 5), B zero. */
void lmf_lora_init(lmf_lora *l, const lmf_model *m, uint64_t seed);
int lmf_lora_enable_grads(lmf_lora *l);
void lmf_lora_zero_grads(lmf_lora *l);
void lmf_lora_free(lmf_lora *l);
/* PEFT format: adapter_config.json + adapter_model.safetensors. With modules_to_save, save
 * also writes those modules' current base weights, and load copies them into m (as PEFT
 * replaces the modules by their trained copies). */
int lmf_lora_save(const lmf_lora *l, const lmf_model *m, const char *dir);
int lmf_lora_load(lmf_lora **out, lmf_model *m, const char *dir);
/* Marks in mask (one byte per m->table entry) the parameters of the modules named in list
 * ("embed_tokens,lm_head,norm": a module matches when its name is the entry or ends with
 * "." + entry, as PEFT matches modules_to_save). Every entry must match something; the error
 * names the one that does not. */
int lmf_lora_match_modules(const lmf_model *m, const char *list, uint8_t *mask);
/* Folds the adapter into the base weights: W += scale * B A for every targeted linear. */
void lmf_lora_merge(const lmf_lora *l, lmf_model *m);

#endif
