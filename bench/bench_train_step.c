/* Training step time of lmforge on a preset model (forward + backward + AdamW step), printed as
 * one JSON line so bench/run.sh can set it beside PyTorch's figure for the same shapes and
 * threads. --bf16 1 asks for bf16 mixed precision ("bf16" in the JSON says whether it ran),
 * --ckpt 1 for activation checkpointing, --quantize FORMAT (LoRA only) a frozen base quantized
 * as QLoRA does (q8_0, nf4, fp4, q4_1, ...; "base_mb" in the JSON is what the base then holds).
 * Usage: bench_train_step [--preset llama-110m] [--batch 4] [--seq 256] [--threads 2]
 *                         [--steps 5] [--mode full|lora] [--backend cpu|ref] [--bf16 0|1]
 *                         [--ckpt 0|1] [--quantize FORMAT] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "lmforge/model.h"
#include "lmforge/optim.h"
#include "lmforge/quant.h"

#include "bench_args.h"

/* CPU seconds (user + system) this process used so far: on a shared, oversubscribed machine
 * the work done is steadier than the wall time (run with OMP_WAIT_POLICY=passive so waiting
 * threads do not spin). */
static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

int main(int argc, char **argv) {
    const char *preset = bench_opt(argc, argv, "--preset", "llama-110m"),
               *mode = bench_opt(argc, argv, "--mode", "full"),
               *quant = bench_opt(argc, argv, "--quantize", "");
    int B = atoi(bench_opt(argc, argv, "--batch", "4")),
        T = atoi(bench_opt(argc, argv, "--seq", "256"));
    int threads = atoi(bench_opt(argc, argv, "--threads", "2")),
        steps = atoi(bench_opt(argc, argv, "--steps", "5"));
    lmf_compute_options co = {.bf16 = atoi(bench_opt(argc, argv, "--bf16", "0")),
                              .grad_ckpt = atoi(bench_opt(argc, argv, "--ckpt", "0"))};
    const lmf_backend *be = lmf_backend_by_name(bench_opt(argc, argv, "--backend", "cpu"));
    lmf_compute_set_threads(threads);
    lmf_model_config cfg;
    lmf_model *m = NULL;
    lmf_lora *lora = NULL;
    int lora_mode = !strcmp(mode, "lora");
    int rc = lmf_model_preset(&cfg, LMF_ARCH_LLAMA, preset);
    if (!rc) rc = lmf_model_create(&m, &cfg, be);
    if (rc) {
        fprintf(stderr, "bench_train_step: %s\n", lmf_last_error());
        return 1;
    }
    lmf_model_init_random(m, 1);
    if (lora_mode) {
        rc = lmf_lora_create(&lora, m, 8, 16, 0, (1u << LMF_N_LINEAR) - 1);
        if (!rc) {
            lmf_lora_init(lora, m, 1);
            rc = lmf_lora_enable_grads(lora);
            m->lora = lora;
        }
    } else {
        rc = lmf_model_enable_grads(m);
    }
    if (!rc) rc = lmf_model_set_compute(m, &co);
    if (!rc && quant[0]) {
        lmf_qtype q;
        rc = lmf_qtype_parse(quant, &q);
        if (!rc) rc = lmf_model_quantize_base(m, (int)q);
    }
    size_t f32_bytes, base_bytes = lmf_model_base_bytes(m, &f32_bytes);
    /* AdamW over what is trained, as the trainer steps it (lr 1e-4, decay 0.01). */
    lmf_opt_segment *segs = NULL;
    int n_segs = 0;
    lmf_adamw adam = {0};
    float *params = lora_mode ? (lora ? lora->params : NULL) : m->params;
    float *grads = lora_mode ? (lora ? lora->grads : NULL) : m->grads;
    if (!rc)
        rc =
            lora_mode
                ? lmf_opt_segments_from_params(lora->table, lora->n_params, NULL, &segs, &n_segs)
                : lmf_opt_segments_from_params(m->table, m->n_params, m->trainable, &segs, &n_segs);
    if (!rc) rc = lmf_adamw_init(&adam, lora_mode ? lora->numel : m->numel, 0.9, 0.999, 1e-8, 0.01);
    int32_t *ids = malloc(sizeof(int32_t) * B * T);
    lmf_rng rng;
    lmf_rng_seed(&rng, 7);
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(lmf_rng_u64(&rng) % cfg.vocab);
    lmf_batch b = {B, T, ids, ids, NULL, NULL};
    double loss = 0, best = 1e30, total = 0, cpu = 0;
    for (int s = 0; s <= steps && !rc; s++) {
        double t0 = lmf_time_sec(), c0 = cpu_seconds();
        rc = lmf_model_forward(m, &b, 1, &loss, NULL, NULL, NULL);
        if (!rc) rc = lmf_model_backward(m);
        if (!rc) rc = lmf_adamw_step(&adam, params, grads, segs, n_segs, 1e-4);
        if (!rc && !lora_mode) lmf_model_weights_changed(m);
        if (lora_mode)
            lmf_lora_zero_grads(lora);
        else
            lmf_model_zero_grads(m);
        double t = lmf_time_sec() - t0;
        if (s == 0) continue; /* warm-up step: first-touch of activations */
        total += t, cpu += cpu_seconds() - c0;
        if (t < best) best = t;
    }
    if (rc) {
        fprintf(stderr, "bench_train_step: %s\n", lmf_last_error());
        return 1;
    }
    double mean = total / steps;
    printf("{\"impl\": \"lmforge\", \"mode\": \"%s\", \"bf16\": %d, \"ckpt\": %d, \"threads\": %d, "
           "\"batch\": %d, \"seq\": %d, \"ms_per_step\": %.1f, \"best_ms\": %.1f, "
           "\"tokens_per_s\": %.1f, \"cpu_s_per_step\": %.2f, \"loss\": %.4f, "
           "\"peak_rss_mb\": %.0f, \"act_mb\": %.0f, \"gemm\": \"%s\", \"quant\": \"%s\", "
           "\"base_mb\": %.1f, \"base_f32_mb\": %.1f}\n",
           mode, m->bf16, m->grad_ckpt, threads, B, T, mean * 1e3, best * 1e3, B * T / mean,
           cpu / steps, loss, lmf_peak_rss_bytes() / 1048576.0,
           lmf_model_activation_bytes(m) / 1048576.0, lmf_gemm_library(), quant[0] ? quant : "none",
           base_bytes / 1e6, f32_bytes / 1e6);
    free(ids);
    free(segs);
    lmf_adamw_free(&adam);
    lmf_lora_free(lora);
    lmf_model_free(m);
    return 0;
}
