/* Internal to src/train: the state of one `lmforge train` run, shared by the files of the
 * trainer (trainer.c: setup and the step loop; train_data.c: examples, rows and batches;
 * evaluate.c: the eval loop; train_log.c: terminal, trainer_log.jsonl and trainer_state.json;
 * train_ckpt.c: checkpoint-N folders and resume). */
#ifndef LMF_TRAINER_INTERNAL_H
#define LMF_TRAINER_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "lmforge/ddp.h"
#include "lmforge/model.h"
#include "lmforge/optim.h"
#include "lmforge/preprocess.h"
#include "lmforge/sampler.h"
#include "lmforge/tokenizer.h"
#include "lmforge/trainer.h"
#include "lmforge/zero.h"

/* One training or eval row: an example, or a packed row of several (pos/seg set). */
typedef struct row {
    int32_t *ids, *labels, *pos, *seg; /* pos/seg NULL: 0..n-1 and one segment */
    int n;
} row;

typedef struct row_set {
    row *rows;
    int64_t n;
    lmf_example *ex; /* owned */
    int64_t n_ex;
    lmf_packed_row *packed; /* owned; rows point into ex or packed */
    int n_packed;
} row_set;

/* Terminal and file logging (train_log.c). */
typedef struct train_log {
    FILE *jsonl;     /* output_dir/trainer_log.jsonl */
    cJSON *history;  /* trainer_state.json's log_history */
    int tty;         /* stdout is a terminal: live progress bar */
    int bar_visible; /* the bar is the current terminal line */
    double t0;       /* wall clock at the start (or resume) of this process's run */
    int64_t first;   /* step this process started at */
} train_log;

/* What one logged step reports. */
typedef struct step_report {
    int64_t step, total; /* step is 1-based: steps done */
    double loss, lr, grad_norm, epoch, tokens_per_s;
    int64_t total_tokens;
} step_report;

/* A flat buffer sharded across ranks (ZeRO, train_zero.c): this rank's compact shard of the
 * parameters (the master copy the optimizer updates), of the gradients, and the collectives in
 * flight per unit. */
typedef struct shard_group {
    lmf_shard_plan plan;
    float *flat_p, *flat_g; /* the whole buffers (flat_g NULL: frozen) */
    float *p;               /* compact parameters: trained groups, or all of a stage-3 buffer */
    float *g, *recv;        /* compact gradients and the reduce-scatter landing (trained) */
    lmf_opt_segment *segs;  /* the trained parts of the compact shard */
    int n_segs;
    int *seg_of;             /* the group's segment each compact segment comes from */
    uint8_t *unit_trained;   /* (n_units) the unit holds trained floats */
    int *unit_layer;         /* (n_units) its layer, -1 outside the layers */
    int *layer_unit;         /* (layers) the unit of each layer, -1 for none */
    lmf_comm_req **ag, **rs; /* (n_units) gathers and reduce-scatters in flight */
    int shard_params;        /* stage 3: flat_p holds only the units gathered now */
} shard_group;

/* A trained parameter buffer with its optimizer: the LoRA adapter, or the base model (full
 * and freeze fine-tuning, or the modules_to_save trained beside a LoRA adapter). */
typedef struct param_group {
    float *params, *grads;
    size_t numel;
    lmf_opt_segment *segs; /* what is trained, and with or without weight decay */
    int n_segs;
    lmf_adamw opt;
    const char *opt_file; /* its state file in checkpoints */
    lmf_ddp *ddp;         /* gradient buckets when world > 1 */
    /* Units of the buffer (one per layer, plus the runs outside the layers), tiling it from 0
     * to numel in order: what ZeRO shards, what optimizer state files are cut along, and where
     * DDP's backward hook finds each layer's first float. */
    size_t *unit_off, *unit_len;
    int *unit_layer; /* (n_units) the unit's layer, -1 outside the layers */
    int *layer_unit; /* (layers) the layer's unit, -1 for none */
    int n_units;
    shard_group *z; /* ZeRO stage >= 1; NULL otherwise */
} param_group;

typedef struct trainer {
    const lmf_train_options *o;
    lmf_model *m;
    lmf_lora *lora;
    lmf_tokenizer *tok;
    row_set train, eval;
    int32_t pad_id;
    int32_t *b_ids, *b_labels, *b_pos, *b_seg; /* micro-batch buffers */
    size_t b_cap;
    char *resume_dir; /* checkpoint to continue from, or NULL */
    train_log log;
    lmf_comm *comm; /* NULL: one process */
    int rank, world;
    param_group groups[2];
    int n_groups;
    int zero;                /* ZeRO stage in effect (0 with one rank) */
    param_group frozen_base; /* ZeRO-3 with LoRA: the frozen base, sharded (no optimizer) */
    int zero_training;       /* a training micro-batch is running (not an eval forward) */
    int micro;               /* which micro-batch of the step */
    int zero_rc;             /* first error inside a model hook */
    /* run position, saved in checkpoints */
    int64_t step, total, consumed, tokens;
    double loss_acc;   /* sum of step losses since the last log line */
    double loss_total; /* sum of all step losses: train_loss is its mean */
} trainer;

/* train_data.c */
int trainer_setup_data(trainer *t);
void trainer_free_data(trainer *t);
/* Fills a right-padded micro-batch from rows idx[0..B) of s; returns the number of
 * labelled targets and sets *tokens to the real (unpadded) tokens. */
int64_t trainer_fill_batch(trainer *t, const row_set *s, const int64_t *idx, int B, lmf_batch *b,
                           int64_t *tokens);
/* Test hook: with the environment variable `env` (LMF_TRAIN_DUMP_BATCHES for training,
 * LMF_EVAL_DUMP_BATCHES for evaluation) naming a file, each batch is appended to it as one JSON
 * line (step, micro, ids, labels, pos, seg), so tests/reference can feed an independent
 * implementation exactly the batches lmforge used. */
void trainer_dump_batch(const char *env, int64_t step, int micro, const lmf_batch *b);

/* evaluate.c: mean loss over every labelled token of the eval set, in order. */
typedef struct eval_result {
    double loss, perplexity, runtime;
    int64_t samples, targets, batches;
} eval_result;
int trainer_evaluate(trainer *t, eval_result *r);

/* train_log.c */
/* Opens trainer_log.jsonl: fresh, or (resuming at `resume_step`) keeping only the lines of
 * steps up to it, and the log_history of the checkpoint's trainer_state.json. */
int train_log_open(train_log *l, const char *output_dir, const char *resume_dir,
                   int64_t resume_step);
void train_log_close(train_log *l);
/* Every step: redraws the progress bar on a terminal. */
void train_log_progress(train_log *l, const step_report *s);
/* Every logging_steps: a plain line, a trainer_log.jsonl line, a log_history entry. */
void train_log_step(train_log *l, const step_report *s);
void train_log_eval(train_log *l, int64_t step, int64_t total, double epoch, const eval_result *r);
/* Final metrics (train_loss, train_runtime, ...) appended to log_history. */
void train_log_final(train_log *l, cJSON *metrics, int64_t step, double epoch);
/* Writes dir/trainer_state.json as transformers' Trainer does. */
int train_log_write_state(const train_log *l, const trainer *t, const char *dir, double epoch);
/* The logged loss curve ("loss" or "eval_loss" entries of log_history) for the plot. */
int train_log_curve(const train_log *l, const char *key, double **x, double **y, int *n);
/* Clears the progress bar line before other output. */
void train_log_clear_bar(train_log *l);

/* train_zero.c */
/* Units of a buffer from its parameter table (sorted by offset) for a model of `layers`. */
int zero_units(param_group *g, const lmf_param *table, int n, size_t numel, int layers);
/* Shards group g (stage >= 1: optimizer state; >= 2: gradients; shard_params: parameters). */
int zero_group_init(trainer *t, param_group *g, int trained, int shard_params);
void zero_group_free(param_group *g);
/* Installs the model hooks (stage >= 2 gradients, stage 3 parameters). */
void zero_install_hooks(trainer *t);
/* The compact shards from the (just loaded) whole buffers; stage 3 then gives those back. */
void zero_after_load(trainer *t);
/* One optimizer step's parts. */
void zero_step_begin(trainer *t);
void zero_take_reduced(trainer *t); /* stage 1: this rank's part of the all-reduced gradients */
int zero_clip_and_step(trainer *t, double scale, double max_norm, double lr, float *gnorm);
/* ZeRO-3 and what is saved reads the base model (full or freeze tuning, modules_to_save). */
int trainer_saves_base(const trainer *t);
/* Stage 3: every unit of the sharded buffers gathered (saving, evaluation), and released. */
int zero_gather_all(trainer *t);
void zero_release_all(trainer *t);
/* Per-rank memory held for parameters, gradients and optimizer state, measured (mincore). */
int zero_memory_report(trainer *t);
/* Optimizer state files: per rank under ZeRO (<stem>.rank-R-of-P.bin), re-sharded on load
 * for any world size; the whole <stem>.bin otherwise. */
int zero_save_optimizer(trainer *t, param_group *g, const char *dir);
int zero_load_optimizer(param_group *g, const char *dir, int *found);

/* train_ckpt.c */
uint64_t trainer_fingerprint(const trainer *t);
int trainer_save_checkpoint(trainer *t, const lmf_sampler *smp);
int trainer_load_checkpoint(trainer *t, const char *dir, lmf_sampler *smp);

#endif
