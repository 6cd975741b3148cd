/* The YAML configuration: LLaMA-Factory's example keys load with the right types and defaults,
 * key=value overrides win, and bad input gets an error naming the file, line and key (with the
 * nearest valid key for a typo). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "lmforge/core.h"
#include "test.h"

static char dir[64];

static int load_text(lmf_config *c, const char *yaml, char **ov, int n_ov) {
    char *p = lmf_path_join(dir, "cfg.yaml");
    lmf_file_write_atomic(p, yaml, strlen(yaml));
    int rc = lmf_config_load(c, p, ov, n_ov);
    free(p);
    return rc;
}

int main(void) {
    strcpy(dir, "/tmp/lmf-test-config-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    lmf_config c;
    /* The shape of LLaMA-Factory's examples/train_lora/llama3_lora_sft.yaml. */
    const char *lora_sft =
        "### model\nmodel_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\ntrust_remote_code: "
        "true\n\n"
        "### method\nstage: sft\ndo_train: true\nfinetuning_type: lora\nlora_rank: 8\nlora_target: "
        "all\n\n"
        "### dataset\ndataset: identity,alpaca_en_demo\ntemplate: llama3\ncutoff_len: 2048\n"
        "max_samples: 1000\noverwrite_cache: true\npreprocessing_num_workers: 16\n"
        "dataloader_num_workers: 4\n\n### output\noutput_dir: saves/llama3-8b/lora/sft\n"
        "logging_steps: 10\nsave_steps: 500\nplot_loss: true\noverwrite_output_dir: true\n"
        "save_only_model: false\nreport_to: none  # choices: [none, wandb]\n\n### train\n"
        "per_device_train_batch_size: 1\ngradient_accumulation_steps: 8\nlearning_rate: 1.0e-4\n"
        "num_train_epochs: 3.0\nlr_scheduler_type: cosine\nwarmup_ratio: 0.1\nbf16: true\n"
        "ddp_timeout: 180000000\nresume_from_checkpoint: null\n";
    char ov1[] = "learning_rate=2e-4", ov2[] = "max_steps=30";
    char *ov[] = {ov1, ov2};
    CHECK(load_text(&c, lora_sft, ov, 2) == 0);
    CHECK(!strcmp(lmf_config_str(&c, "template"), "llama3") &&
          lmf_config_int(&c, "lora_rank") == 8);
    CHECK(lmf_config_bool(&c, "bf16") && lmf_config_bool(&c, "do_train") &&
          !lmf_config_bool(&c, "fp16"));
    CHECK_NEAR(lmf_config_float(&c, "learning_rate"), 2e-4, 1e-12); /* override wins */
    CHECK(lmf_config_int(&c, "max_steps") == 30 &&
          lmf_config_int(&c, "gradient_accumulation_steps") == 8);
    CHECK_NEAR(lmf_config_float(&c, "adam_beta2"), 0.999, 1e-12); /* default */
    CHECK(!lmf_config_is_set(&c, "resume_from_checkpoint") &&
          lmf_config_str(&c, "resume_from_checkpoint") == NULL);
    CHECK(!strcmp(lmf_config_str(&c, "dataset_dir"), "data"));
    lmf_config_free(&c);

    CHECK(load_text(&c, "learning_rat: 1e-4\n", NULL, 0) == LMF_EINVAL);
    CHECK(strstr(lmf_last_error(), "learning_rat") &&
          strstr(lmf_last_error(), "\"learning_rate\"") && strstr(lmf_last_error(), "line 1"));
    CHECK(load_text(&c, "stage: sft\nlora_rank: eight\n", NULL, 0) == LMF_EINVAL);
    CHECK(strstr(lmf_last_error(), "line 2") && strstr(lmf_last_error(), "lora_rank") &&
          strstr(lmf_last_error(), "integer"));
    CHECK(load_text(&c, "finetuning_type: qlora\n", NULL, 0) == LMF_EINVAL);
    CHECK(strstr(lmf_last_error(), "lora|full|freeze") != NULL);
    CHECK(load_text(&c, "warmup_ratio: 1.5\n", NULL, 0) == LMF_ERANGE);
    CHECK(load_text(&c, "bf16: maybe\n", NULL, 0) == LMF_EINVAL);
    CHECK(load_text(&c, "dataset: [a, b]\n", NULL, 0) == LMF_EFORMAT &&
          strstr(lmf_last_error(), "list"));
    CHECK(load_text(&c, "a: [\n", NULL, 0) == LMF_EFORMAT && strstr(lmf_last_error(), "line"));
    char bad[] = "noequals";
    char *ovb[] = {bad};
    CHECK(load_text(&c, "stage: pt\n", ovb, 1) == LMF_EINVAL &&
          strstr(lmf_last_error(), "key=value"));
    CHECK(lmf_config_load(&c, "/nonexistent/cfg.yaml", NULL, 0) == LMF_EIO &&
          strstr(lmf_last_error(), "/nonexistent"));
    CHECK(load_text(&c, "", NULL, 0) == 0);
    lmf_config_free(&c);
    char *p = lmf_path_join(dir, "cfg.yaml");
    unlink(p);
    free(p);
    rmdir(dir);
    return test_summary("test_config");
}
