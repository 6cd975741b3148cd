/* Forward + backward step time of lmforge on a preset model, printed as one JSON line so
 * bench/run.sh can set it beside PyTorch's figure for the same shapes and threads.
 * Usage: bench_train_step [--preset llama-110m] [--batch 4] [--seq 256] [--threads 2]
 *                         [--steps 5] [--mode full|lora] [--backend cpu|ref] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/model.h"

static const char *opt(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return def;
}

int main(int argc, char **argv) {
    const char *preset = opt(argc, argv, "--preset", "llama-110m"),
               *mode = opt(argc, argv, "--mode", "full");
    int B = atoi(opt(argc, argv, "--batch", "4")), T = atoi(opt(argc, argv, "--seq", "256"));
    int threads = atoi(opt(argc, argv, "--threads", "2")),
        steps = atoi(opt(argc, argv, "--steps", "5"));
    const lmf_backend *be = lmf_backend_by_name(opt(argc, argv, "--backend", "cpu"));
    lmf_compute_set_threads(threads);
    lmf_model_config cfg;
    lmf_model *m = NULL;
    lmf_lora *lora = NULL;
    int rc = lmf_model_preset(&cfg, LMF_ARCH_LLAMA, preset);
    if (!rc) rc = lmf_model_create(&m, &cfg, be);
    if (rc) {
        fprintf(stderr, "bench_train_step: %s\n", lmf_last_error());
        return 1;
    }
    lmf_model_init_random(m, 1);
    if (!strcmp(mode, "lora")) {
        rc = lmf_lora_create(&lora, m, 8, 16, 0, (1u << LMF_N_LINEAR) - 1);
        if (!rc) {
            lmf_lora_init(lora, m, 1);
            rc = lmf_lora_enable_grads(lora);
            m->lora = lora;
        }
    } else {
        rc = lmf_model_enable_grads(m);
    }
    int32_t *ids = malloc(sizeof(int32_t) * B * T);
    lmf_rng rng;
    lmf_rng_seed(&rng, 7);
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(lmf_rng_u64(&rng) % cfg.vocab);
    lmf_batch b = {B, T, ids, ids, NULL, NULL};
    double loss = 0, best = 1e30, total = 0;
    for (int s = 0; s <= steps && !rc; s++) {
        double t0 = lmf_time_sec();
        rc = lmf_model_forward(m, &b, 1, &loss, NULL, NULL, NULL);
        if (!rc) rc = lmf_model_backward(m);
        double t = lmf_time_sec() - t0;
        if (s == 0) continue; /* warm-up step: first-touch of activations */
        total += t;
        if (t < best) best = t;
    }
    if (rc) {
        fprintf(stderr, "bench_train_step: %s\n", lmf_last_error());
        return 1;
    }
    double mean = total / steps;
    printf("{\"impl\": \"lmforge\", \"mode\": \"%s\", \"threads\": %d, \"batch\": %d, \"seq\": %d, "
           "\"ms_per_step\": %.1f, \"best_ms\": %.1f, \"tokens_per_s\": %.1f, \"loss\": %.4f, "
           "\"peak_rss_mb\": %.0f, \"gemm\": \"%s\"}\n",
           mode, threads, B, T, mean * 1e3, best * 1e3, B * T / mean, loss,
           lmf_peak_rss_bytes() / 1048576.0, lmf_gemm_library());
    free(ids);
    lmf_lora_free(lora);
    lmf_model_free(m);
    return 0;
}
