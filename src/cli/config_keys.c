/* The table of configuration keys: LLaMA-Factory's names and defaults (the defaults of its
 * dataclasses and of Hugging Face's TrainingArguments), plus lmforge's own. */
#include <stddef.h>

#include "config.h"

#define S LMF_CFG_STR
#define I LMF_CFG_INT
#define F LMF_CFG_FLOAT
#define B LMF_CFG_BOOL

static const lmf_cfg_key keys[] = {
    /* model */
    {"model_name_or_path", S, NULL, NULL,
     "Hugging Face model folder (config.json, *.safetensors, tokenizer.json), or a llama .gguf "
     "file (its tokenizer embedded)",
     0},
    {"adapter_name_or_path", S, NULL, NULL,
     "PEFT LoRA adapter folder to load (train: continue it; export: merge it)", 0},
    {"trust_remote_code", B, "false", NULL, "accepted; lmforge runs no model code from the folder",
     1},
    {"template", S, NULL, NULL, "chat template name (docs/templates.md)", 0},
    {"enable_thinking", B, "true", NULL, "reasoning templates (qwen3): keep the thinking block", 0},
    {"flash_attn", S, "auto", "auto|disabled|sdpa|fa2",
     "accepted; lmforge always uses its own tiled attention", 1},
    {"quantization_bit", I, NULL, "4..8",
     "the base quantized to 8 bits (q8_0) or 4 (quantization_type) on load: train (LoRA) keeps it "
     "frozen (QLoRA); api/chat/score decode through it",
     0},
    {"quantization_type", S, "nf4", "nf4|fp4|int",
     "4-bit format: nf4 (QLoRA's), fp4, or int (q4_1)", 0},
    {"quantization_method", S, "bnb", "bnb|bitsandbytes",
     "how the base is quantized: on load, block-wise, as bitsandbytes does", 0},
    {"double_quantization", B, "true", NULL,
     "accepted; the 4-bit block scales stay float32 (0.5 bit per weight)", 1},
    /* method */
    {"stage", S, "sft", "pt|sft", "training stage: pt (pre-training on text) or sft (supervised)",
     0},
    {"do_train", B, "false", NULL, "run training", 0},
    {"do_eval", B, "false", NULL, "run evaluation", 0},
    {"finetuning_type", S, "lora", "lora|full|freeze", "which parameters train", 0},
    {"lora_rank", I, "8", "1..4096", "LoRA rank r", 0},
    {"lora_alpha", I, NULL, "1..65536", "LoRA alpha; default 2 x lora_rank", 0},
    {"lora_dropout", F, "0", "0..0.99", "dropout on the LoRA input", 0},
    {"lora_target", S, "all", NULL,
     "all, or a comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", 0},
    {"additional_target", S, NULL, NULL,
     "modules trained in full beside LoRA, saved in the adapter as PEFT modules_to_save (e.g. "
     "embed_tokens,lm_head,norm)",
     0},
    {"freeze_trainable_layers", I, "2", NULL,
     "freeze: train the last N layers (negative: the first -N)", 0},
    {"freeze_trainable_modules", S, "all", NULL,
     "freeze: which modules of the trainable layers train", 0},
    {"deepspeed", S, NULL, NULL,
     "DeepSpeed JSON: zero_optimization.stage 0..3 chooses the sharding (docs/distributed.md)", 0},
    /* dataset */
    {"dataset", S, NULL, NULL, "dataset names from dataset_info.json, comma separated", 0},
    {"eval_dataset", S, NULL, NULL, "evaluation dataset names", 0},
    {"dataset_dir", S, "data", NULL, "folder holding dataset_info.json", 0},
    {"cutoff_len", I, "2048", "1..1048576", "maximum tokens per example", 0},
    {"max_samples", I, NULL, "1..", "at most this many records per dataset", 0},
    {"overwrite_cache", B, "false", NULL, "re-tokenise even if tokenized_path exists", 0},
    {"preprocessing_num_workers", I, NULL, NULL, "accepted; tokenisation uses lmforge's threads",
     1},
    {"dataloader_num_workers", I, "0", NULL, "accepted; batches are built in-process", 1},
    {"packing", B, NULL, NULL,
     "pack examples into cutoff_len rows (default: true for pt, false for sft)", 0},
    {"neat_packing", B, "false", NULL,
     "accepted: packing never lets examples attend to each other here", 1},
    {"train_on_prompt", B, "false", NULL, "also train on prompt tokens", 0},
    {"mask_history", B, "false", NULL, "train on the last turn only", 0},
    {"mix_strategy", S, "concat", "concat", "how several datasets are combined", 0},
    {"val_size", F, "0", "0..", "evaluation split: a fraction in (0, 1) or a count", 0},
    {"tokenized_path", S, NULL, NULL,
     "folder of the token cache (lmforge_tokens.bin): written by the first run, reused by later "
     "ones",
     0},
    {"streaming", B, "false", NULL, "not available: datasets are read whole", 0},
    /* output */
    {"output_dir", S, NULL, NULL, "where checkpoints, adapters, logs and plots go", 0},
    {"overwrite_output_dir", B, "false", NULL, "allow a non-empty output_dir without checkpoints",
     0},
    {"logging_steps", I, "500", "1..", "log every N optimizer steps", 0},
    {"save_steps", I, "500", "1..", "checkpoint every N steps (save_strategy steps)", 0},
    {"save_strategy", S, "steps", "steps|epoch|no", "when checkpoints are written", 0},
    {"save_total_limit", I, NULL, "1..", "keep at most N checkpoints, removing the oldest", 0},
    {"save_only_model", B, "false", NULL, "checkpoints without optimizer state", 0},
    {"plot_loss", B, "false", NULL, "write training_loss.png", 0},
    {"report_to", S, "none", "none", "only none: logs go to trainer_log.jsonl", 0},
    /* train */
    {"per_device_train_batch_size", I, "8", "1..", "examples per rank per micro-step", 0},
    {"per_device_eval_batch_size", I, "8", "1..", "examples per rank per eval step", 0},
    {"gradient_accumulation_steps", I, "1", "1..", "micro-steps per optimizer step", 0},
    {"learning_rate", F, "5e-5", "0..", "peak learning rate", 0},
    {"num_train_epochs", F, "3", "0..", "epochs (fractional allowed)", 0},
    {"max_steps", I, "-1", NULL, "optimizer steps; overrides num_train_epochs when > 0", 0},
    {"lr_scheduler_type", S, "linear",
     "linear|cosine|constant|constant_with_warmup|cosine_with_min_lr", "schedule", 0},
    {"warmup_ratio", F, "0", "0..1", "warmup as a fraction of the steps", 0},
    {"warmup_steps", I, "0", "0..", "warmup steps (wins over warmup_ratio)", 0},
    {"weight_decay", F, "0", "0..", "AdamW decoupled weight decay (not on norms and biases)", 0},
    {"adam_beta1", F, "0.9", "0..1", "AdamW beta1", 0},
    {"adam_beta2", F, "0.999", "0..1", "AdamW beta2", 0},
    {"adam_epsilon", F, "1e-8", "0..", "AdamW epsilon", 0},
    {"max_grad_norm", F, "1.0", "0..", "global gradient-norm clipping (0: off)", 0},
    {"seed", I, "42", NULL, "random seed", 0},
    {"bf16", B, "false", NULL, "bf16 matrix inputs, f32 master weights", 0},
    {"fp16", B, "false", NULL, "not available on CPU (use bf16)", 0},
    {"gradient_checkpointing", B, "false", NULL, "recompute activations per layer in backward", 0},
    {"resume_from_checkpoint", S, NULL, NULL,
     "a checkpoint folder, or true for the newest in output_dir", 0},
    {"eval_steps", I, NULL, "1..",
     "evaluate every N steps (eval_strategy steps); default logging_steps", 0},
    {"eval_strategy", S, "no", "no|steps|epoch", "when evaluation runs", 0},
    {"ddp_timeout", I, "1800", "1..", "seconds before a stuck rank fails the job", 0},
    {"nproc_per_node", I, "1", "1..4096",
     "ranks on this node: > 1 re-runs the command under mpirun (also NPROC_PER_NODE)", 0},
    {"ddp_bucket_cap_mb", I, "25", "1..", "DDP: gradient bucket size in MB", 0},
    {"zero_stage", I, NULL, "0..3",
     "lmforge: ZeRO sharding across ranks: 0 DDP, 1 optimizer state, 2 + gradients, 3 + "
     "parameters (also set by deepspeed or fsdp)",
     0},
    {"fsdp", S, NULL, NULL,
     "FSDP as transformers' TrainingArguments: full_shard | shard_grad_op | no_shard | "
     "hybrid_shard, with optional auto_wrap / offload (accepted)",
     0},
    {"fsdp_config", S, NULL, NULL,
     "FSDP options file (JSON): sharding_strategy / fsdp_sharding_strategy and accepted extras", 0},
    {"threads", I, NULL, "1..1024", "lmforge: compute threads per rank (default: cores / ranks)",
     0},
    {"hostfile", S, NULL, NULL,
     "launch: DeepSpeed/OpenMPI hostfile (`host slots=N` lines): mpirun runs the ranks on those "
     "hosts",
     0},
    {"max_restarts", I, NULL, "0..1000",
     "launch: relaunch a failed job from its newest checkpoint up to N times (also MAX_RESTARTS)",
     0},
    {"rdzv_timeout", I, "900", "1..",
     "launch: seconds the nodes of a NNODES launch wait for each other", 0},
    /* export */
    {"export_dir", S, NULL, NULL, "export: folder for the merged model", 0},
    {"export_size", I, "5", "1..", "export: shard size in GB", 0},
    {"export_legacy_format", B, "false", NULL,
     "export: .bin instead of safetensors (not available)", 0},
    {"export_device", S, "cpu", "cpu|auto", "accepted", 1},
    {"export_quantization_bit", I, NULL, "4..8",
     "export: with an export_dir ending in .gguf, 2-D weights as Q8_0 (8) or Q4_K (4; Q4_0 where "
     "rows are not a multiple of 256); unset: the model's dtype",
     0},
    /* inference */
    {"infer_backend", S, "huggingface", NULL, "accepted; lmforge serves with its own engine", 1},
    {"max_new_tokens", I, "1024", "1..", "generation length", 0},
    {"temperature", F, "0.95", "0..2", "sampling temperature", 0},
    {"top_p", F, "0.7", "0..1", "nucleus sampling", 0},
    {"top_k", I, "50", "0..", "top-k sampling", 0},
    {"repetition_penalty", F, "1.0", "0..10", "repetition penalty", 0},
    {"default_system", S, NULL, NULL, "system prompt used when a conversation has none", 0},
    /* serving (lmforge api; vLLM's names where it has them) */
    {"api_key", S, NULL, NULL,
     "api: require Authorization: Bearer <key> (the API_KEY environment variable wins)", 0},
    {"kv_cache_bytes", I, NULL, "1..",
     "api/chat: KV cache pool in bytes (default: max_num_seqs full contexts, at most 1 GiB)", 0},
    {"kv_block_size", I, "16", "1..1024", "api/chat: tokens per KV cache block", 0},
    {"kv_cache_dtype", S, "auto", "auto|float32|bfloat16|int8",
     "api/chat: element type of the KV cache: bfloat16 holds 2x the tokens of float32 in the same "
     "kv_cache_bytes, int8 (one float32 scale per token and KV head) 4 D / (D + 4)x (3.76x at "
     "head_dim 64); auto follows infer_dtype: bfloat16 with bfloat16 weights, float32 otherwise "
     "(docs/serving.md)",
     0},
    {"max_num_seqs", I, "64", "1..4096", "api: sequences decoded together in one batch", 0},
    {"max_num_batched_tokens", I, "512", "1..",
     "api: tokens per engine step (prefill chunks + decodes)", 0},
    {"max_waiting_requests", I, "256", "1..",
     "api: queued requests past which new ones get 429 with Retry-After", 0},
    {"enable_prefix_caching", B, "true", NULL,
     "api: reuse the KV blocks of identical prompt prefixes (shared system prompts)", 0},
    {"lora_modules", S, NULL, NULL,
     "api: LoRA adapters served at once beside the base, as name=path,name2=path2 (vLLM's "
     "--lora-modules); a request's `model` picks one, the base name gets the base model",
     0},
    {"infer_dtype", S, "auto", "auto|float32|bfloat16|q8_0|q4_0|q4_1|q4_k|nf4|fp4",
     "api/chat/score: weights the decode step reads: bfloat16 keeps a bf16 copy (half the bytes "
     "per token, f32 accumulation); a block format quantizes the linears, lm_head and embedding "
     "on load (docs/quantization.md); auto is float32",
     0},
    {"max_request_bytes", I, "1048576", "1..", "api: largest request body; larger ones get 413", 0},
    /* tensor-parallel serving (docs/distributed-inference.md) */
    {"tensor_parallel_size", I, "1", "1..1024",
     "api: N > 1 splits the model over N ranks (heads, MLP columns and vocabulary; N divides "
     "num_key_value_heads), started under mpirun by this command (one node; `hostfile` or "
     "NNODES for several); rank 0 serves HTTP. No LoRA adapters; not with data_parallel_size",
     0},
    /* data-parallel serving (lmforge router; lmforge api with data_parallel_size) */
    {"data_parallel_size", I, "1", "1..64",
     "api: N > 1 starts N replica servers on 127.0.0.1, ports API_PORT+1..API_PORT+N (threads "
     "split between them unless `threads` is set), behind a router on API_PORT",
     0},
    {"router_replicas", S, NULL, NULL,
     "router: the replicas' base URLs, comma separated (http://host:port,...)", 0},
    {"router_host", S, NULL, NULL, "router: address to listen on (default API_HOST or 127.0.0.1)",
     0},
    {"router_port", I, NULL, "1..65535", "router: port to listen on (default API_PORT or 8000)", 0},
    {"router_policy", S, "least", "least|prefix",
     "router: least outstanding requests, or prefix affinity (the same prompt prefix goes to "
     "the same healthy replica, for KV prefix reuse)",
     0},
    {"router_health_interval", F, "2", "0.05..3600", "router: seconds between health checks", 0},
    {"router_health_failures", I, "2", "1..1000",
     "router: failed health checks in a row that eject a replica (one that refuses a request "
     "is ejected at once)",
     0},
    {"router_prefix_chars", I, "256", "1..",
     "router: prefix policy: leading characters of the messages or prompt that are hashed", 0},
    {"router_request_timeout", I, "600", "1..",
     "router: seconds a replica may take to answer (or stay silent mid-stream)", 0},
    {"router_max_connections", I, "256", "1..100000", "router: client connections at once", 0},
};

const lmf_cfg_key *lmf_config_keys(int *n) {
    *n = (int)(sizeof keys / sizeof keys[0]);
    return keys;
}
