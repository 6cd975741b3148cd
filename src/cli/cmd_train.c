/* lmforge train CFG.yaml [key=value ...]: LLaMA-Factory's training config, run on this process. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "launch.h"
#include <stdlib.h>

#include "lmforge/comm.h"
#include "lmforge/core.h"
#include "lmforge/error.h"
#include "lmforge/json.h"
#include "lmforge/trainer.h"

/* Keys this build reads but cannot honour yet: refuse them rather than silently ignore. */
static int refuse_unavailable(const lmf_config *c) {
    static const char *keys[] = {"quantization_bit"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (lmf_config_is_set(c, keys[i]))
            return lmf_errorf(LMF_EUNSUPPORTED, "%s: %s is not available in this build yet",
                              c->path, keys[i]);
    if (lmf_config_bool(c, "fp16"))
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: fp16 needs a GPU; on CPU use bf16: true", c->path);
    return 0;
}

int lmf_cmd_train(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: lmforge train CONFIG.yaml [key=value ...] [--launch-config FILE]\n");
        return argc < 2 ? 2 : 0;
    }
    /* --launch-config (an accelerate config) becomes key=value overrides (launch_accel.c) */
    lmf_argv targs;
    int rc = lmf_accel_apply(argc, argv, &targs), code = -1;
    if (rc) return lmf_cli_fail("train", rc);
    argc = targs.n, argv = targs.v;
    lmf_config c;
    rc = lmf_config_load(&c, argv[1], argv + 2, argc - 2);
    if (rc) {
        lmf_argv_free(&targs);
        return lmf_cli_fail("train", rc);
    }
    lmf_comm *comm = NULL;
    if (!(rc = refuse_unavailable(&c))) rc = lmf_cli_launch_ranks(&c, argc, argv, &code);
    if (!rc && code >= 0) { /* the job ran under this process (launcher, supervisor, node k) */
        lmf_config_free(&c);
        lmf_argv_free(&targs);
        return code;
    }
    if (!rc) {
        lmf_comm_options co = {(double)lmf_config_int(&c, "ddp_timeout"), 0};
        rc = lmf_comm_init(&comm, &co);
    }
    if (!rc) {
        /* Ranks other than 0 keep quiet unless something is wrong. */
        if (lmf_comm_rank(comm) != 0 && !getenv("LMF_LOG")) setenv("LMF_LOG", "warn", 1);
    }
    int zero_stage = 0;
    char zero_label[256] = "DDP";
    if (!rc)
        rc =
            lmf_cli_zero_stage(&c, lmf_comm_size(comm), &zero_stage, zero_label, sizeof zero_label);
    if (!rc) {
        lmf_cli_threads_from_config(&c);
        const char *stage = lmf_config_str(&c, "stage");
        int rank = (int)lmf_config_int(&c, "lora_rank");
        lmf_train_options o = {
            .model_dir = lmf_config_str(&c, "model_name_or_path"),
            .adapter_dir = lmf_config_str(&c, "adapter_name_or_path"),
            .output_dir = lmf_config_str(&c, "output_dir"),
            .stage = stage,
            .finetuning_type = lmf_config_str(&c, "finetuning_type"),
            .lora_rank = rank,
            .lora_alpha = lmf_config_is_set(&c, "lora_alpha")
                              ? (float)lmf_config_int(&c, "lora_alpha")
                              : 2.0f * rank,
            .lora_dropout = (float)lmf_config_float(&c, "lora_dropout"),
            .lora_target = lmf_config_str(&c, "lora_target"),
            .additional_target = lmf_config_str(&c, "additional_target"),
            .freeze_trainable_layers = (int)lmf_config_int(&c, "freeze_trainable_layers"),
            .freeze_trainable_modules = lmf_config_str(&c, "freeze_trainable_modules"),
            .data = {lmf_config_str(&c, "dataset_dir"), lmf_config_str(&c, "dataset"), stage,
                     lmf_config_str(&c, "mix_strategy"),
                     lmf_config_is_set(&c, "max_samples") ? lmf_config_int(&c, "max_samples") : 0,
                     lmf_config_float(&c, "val_size"), (uint64_t)lmf_config_int(&c, "seed")},
            .eval_dataset = lmf_config_str(&c, "eval_dataset"),
            .tokenized_path = lmf_config_str(&c, "tokenized_path"),
            .overwrite_cache = lmf_config_bool(&c, "overwrite_cache"),
            .template_name = lmf_config_str(&c, "template"),
            .cutoff_len = (int)lmf_config_int(&c, "cutoff_len"),
            .packing = lmf_config_is_set(&c, "packing") ? lmf_config_bool(&c, "packing")
                                                        : !strcmp(stage, "pt"),
            .train_on_prompt = lmf_config_bool(&c, "train_on_prompt"),
            .mask_history = lmf_config_bool(&c, "mask_history"),
            .enable_thinking = lmf_config_bool(&c, "enable_thinking"),
            .batch_size = (int)lmf_config_int(&c, "per_device_train_batch_size"),
            .grad_accum = (int)lmf_config_int(&c, "gradient_accumulation_steps"),
            .eval_batch_size = (int)lmf_config_int(&c, "per_device_eval_batch_size"),
            .do_train = lmf_config_bool(&c, "do_train"),
            .do_eval = lmf_config_bool(&c, "do_eval"),
            .eval_strategy = lmf_config_str(&c, "eval_strategy"),
            .eval_steps = lmf_config_is_set(&c, "eval_steps")
                              ? (int)lmf_config_int(&c, "eval_steps")
                              : (int)lmf_config_int(&c, "logging_steps"),
            .learning_rate = lmf_config_float(&c, "learning_rate"),
            .epochs = lmf_config_float(&c, "num_train_epochs"),
            .max_steps = lmf_config_int(&c, "max_steps"),
            .scheduler = lmf_config_str(&c, "lr_scheduler_type"),
            .warmup_ratio = lmf_config_float(&c, "warmup_ratio"),
            .warmup_steps = lmf_config_int(&c, "warmup_steps"),
            .weight_decay = lmf_config_float(&c, "weight_decay"),
            .beta1 = lmf_config_float(&c, "adam_beta1"),
            .beta2 = lmf_config_float(&c, "adam_beta2"),
            .eps = lmf_config_float(&c, "adam_epsilon"),
            .max_grad_norm = lmf_config_float(&c, "max_grad_norm"),
            .seed = (uint64_t)lmf_config_int(&c, "seed"),
            .logging_steps = (int)lmf_config_int(&c, "logging_steps"),
            .plot_loss = lmf_config_bool(&c, "plot_loss"),
            .overwrite_output_dir = lmf_config_bool(&c, "overwrite_output_dir"),
            .save_strategy = lmf_config_str(&c, "save_strategy"),
            .save_steps = (int)lmf_config_int(&c, "save_steps"),
            .save_total_limit = lmf_config_is_set(&c, "save_total_limit")
                                    ? (int)lmf_config_int(&c, "save_total_limit")
                                    : 0,
            .save_only_model = lmf_config_bool(&c, "save_only_model"),
            .resume_from_checkpoint = lmf_config_str(&c, "resume_from_checkpoint"),
            .comm = lmf_comm_size(comm) > 1 ? comm : NULL,
            .ddp_bucket_bytes = (size_t)lmf_config_int(&c, "ddp_bucket_cap_mb") << 20,
            .zero_stage = zero_stage,
            .zero_label = zero_label,
            .bf16 = lmf_config_bool(&c, "bf16"),
            .grad_ckpt = lmf_config_bool(&c, "gradient_checkpointing"),
        };
        rc = lmf_train_run(&o);
        if (rc) lmf_error_prefix(rc, "%s", c.path);
    }
    lmf_config_free(&c);
    lmf_argv_free(&targs);
    if (comm) lmf_comm_free(comm);
    return lmf_cli_fail("train", rc);
}
