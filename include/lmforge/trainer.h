/* `lmforge train` on one process: LoRA, full or freeze fine-tuning (stage sft or pt) of a
 * Hugging Face model on LLaMA-Factory datasets, with AdamW, a schedule, gradient accumulation
 * and clipping, logging to the terminal and output_dir/trainer_log.jsonl, and the result
 * saved as LLaMA-Factory saves it (a PEFT adapter, or a full model folder). */
#ifndef LMFORGE_TRAINER_H
#define LMFORGE_TRAINER_H

#include <stdint.h>

#include "lmforge/comm.h"
#include "lmforge/dataset.h"

typedef struct lmf_train_options {
    const char *model_dir, *adapter_dir, *output_dir;
    const char *stage;           /* "sft" | "pt" */
    const char *finetuning_type; /* "lora" | "full" | "freeze" */
    int lora_rank;
    float lora_alpha, lora_dropout;
    const char *lora_target;
    const char *additional_target; /* modules trained in full beside LoRA ("embed_tokens,..") */
    int freeze_trainable_layers;
    const char *freeze_trainable_modules;
    lmf_dataset_options data;   /* data.val_size splits an eval set off the training records */
    const char *eval_dataset;   /* names of eval datasets (instead of val_size), or NULL */
    const char *tokenized_path; /* folder of the token cache (lmforge/token_cache.h), or NULL */
    int overwrite_cache;        /* tokenise again even when the cache exists */
    const char *template_name;
    int cutoff_len, packing, train_on_prompt, mask_history, enable_thinking;
    int batch_size, grad_accum, eval_batch_size;
    int do_train, do_eval;     /* do_eval: evaluate after training (or instead of it) */
    const char *eval_strategy; /* "no" | "steps" | "epoch": evaluation during training */
    int eval_steps;
    double learning_rate, epochs;
    int64_t max_steps;
    const char *scheduler;
    double warmup_ratio;
    int64_t warmup_steps;
    double weight_decay, beta1, beta2, eps, max_grad_norm;
    uint64_t seed;
    int logging_steps, plot_loss, overwrite_output_dir;
    const char *save_strategy; /* "steps" | "epoch" | "no" */
    int save_steps, save_total_limit, save_only_model;
    const char
        *resume_from_checkpoint; /* a checkpoint folder, "true" (newest in output_dir), NULL */
    /* Data parallelism (DDP): every rank of comm runs lmf_train_run with the same options;
     * each takes its shard of every global batch, gradients are summed in buckets of
     * ddp_bucket_bytes (0: 25 MiB) overlapped with backward, and rank 0 alone logs and
     * writes. NULL: one process. */
    lmf_comm *comm;
    size_t ddp_bucket_bytes;
    /* ZeRO sharding across comm's ranks (docs/distributed.md): 0 none (DDP), 1 optimizer
     * state, 2 + gradients (reduce-scattered per layer), 3 + parameters (gathered per layer
     * before its forward and backward). zero_label names it in the log. */
    int zero_stage;
    const char *zero_label;
    int bf16;      /* bf16 matrix inputs, f32 master weights (lmf_model_set_compute) */
    int grad_ckpt; /* gradient_checkpointing: recompute each layer in backward */
} lmf_train_options;

/* Runs the whole training (or, with do_train 0 and do_eval 1, an evaluation); the message of
 * a failure names the file, key or record. output_dir gets the adapter or model, the
 * tokenizer files, trainer_log.jsonl, trainer_state.json, train/eval/all_results.json and,
 * with plot_loss, training_loss.png (+ training_eval_loss.png).
 * Checkpoints: output_dir/checkpoint-N holds the adapter or model, optimizer.bin,
 * trainer_state.bin (step, sampler position, dropout RNG) and trainer_state.json; it is
 * written to a temporary folder and renamed, so a kill at any instant leaves the previous one
 * whole. A run whose
 * output_dir holds checkpoints resumes from the newest unless overwrite_output_dir is set, and
 * continues exactly: the final weights equal an uninterrupted run's bit for bit. */
int lmf_train_run(const lmf_train_options *o);

#endif
