/* Single-stream decode and prefill speed of lmf_model_step against the memory-bandwidth
 * roofline, measured in the same process. A decode token must read every weight of the seven
 * linears of each layer and the lm_head once; the probe streams exactly those bytes where they
 * lie (the model's own buffers, in the decode's order, each thread its share of every product)
 * with a 4-sum read that asks for lines 2 KB ahead into L2 (3-6 % faster than without, and
 * the kernels do the same: the roofline must be the fastest read we know) on the same threads,
 * so roofline tokens/s = 1 / (time of that read).
 * Reading the weights themselves, not a separate buffer, matters here: on this VM the bandwidth
 * of two buffers differs by up to 1.5x for minutes (where the host backs them), and a separate
 * buffer's figure moved between runs while the ratio to the weights' own read did not.
 * Each decoded token is paired with one probe read right before it (the machine may be shared,
 * and its bandwidth moves within seconds): "ratio" is the sum of the probe times over the sum
 * of the decode times over all --reps runs of --tokens tokens; "median" the median of the
 * per-token ratios; decode and roofline tok/s are the best run's. Prints a table and one JSON
 * line per dtype, with each dtype's decode speed over f32's ("x f32") when f32 ran first.
 * --dtype takes a list of f32, bf16 and block formats (q8_0, q4_0, q4_1, nf4, fp4, q4_k),
 * "both" (f32,bf16) or "all".
 * A second table decodes at a long context (--kv-context cached tokens, 0 to skip) over a
 * float32, a bfloat16 and an int8 KV cache side by side (kv_cache_dtype), with the weights of
 * --kv-weights (f32, bf16 or a block format): there the cache a token reads (151 MB f32 at 2048
 * tokens of llama-110m) is of the order of the weights. The three caches are prefilled with the
 * same prompt, then their runs alternate (rep 1 of each, rep 2 of each, ...) so that a change of
 * machine load hits all three alike; each figure is the best and the median of --reps runs of
 * --tokens decodes. Usage: bench_decode [--preset llama-110m] [--threads 2] [--prompt 128]
 * [--tokens 64] [--reps 5] [--dtype f32,bf16,...|both|all] [--kv-context 2048]
 * [--kv-weights f32] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/decode_kernels.h"
#include "lmforge/model.h"
#include "lmforge/quant.h"

#include "bench_args.h"

/* The weights a decode token reads, in the step's order: the seven linears of each layer, then
 * the lm_head, as f32, bf16 or m's block format. Fills p/bytes (room for layers * 7 + 1) and
 * returns their total bytes. */
static double token_regions(const lmf_model *m, const void **p, size_t *bytes) {
    const lmf_model_config *c = &m->cfg;
    int QD = c->heads * c->head_dim, KD = c->kv_heads * c->head_dim, C = c->hidden, F = c->ffn;
    int outs[LMF_N_LINEAR] = {QD, KD, KD, C, F, F, C}, ins[LMF_N_LINEAR] = {C, C, C, QD, C, C, F};
    double total = 0;
    int n = 0;
    for (int l = 0; l <= c->layers; l++)
        for (int id = 0; id < (l < c->layers ? LMF_N_LINEAR : 1); id++, n++) {
            int out = l < c->layers ? outs[id] : c->vocab, in = l < c->layers ? ins[id] : C;
            const float *W = l < c->layers ? m->w.layers[l].w[id] : m->w.lm_head;
            if (m->quantized) {
                p[n] = l < c->layers ? m->qlin[l * LMF_N_LINEAR + id] : m->qhead;
                bytes[n] = (size_t)out * lmf_quant_row_bytes((lmf_qtype)m->qtype, in);
            } else if (m->infer_bf16) {
                p[n] = m->infer_bf16 + (W - m->params);
                bytes[n] = (size_t)out * in * sizeof(uint16_t);
            } else {
                p[n] = W;
                bytes[n] = (size_t)out * in * sizeof(float);
            }
            total += (double)bytes[n];
        }
    return total;
}

/* A fresh random model (seed 1) with the weights of `name`: f32, bf16 or a block format. */
static int make_model(lmf_model **m, const lmf_model_config *cfg, const char *name) {
    lmf_qtype q;
    int rc = lmf_model_create(m, cfg, lmf_backend_cpu());
    if (rc) return rc;
    lmf_model_init_random(*m, 1);
    if (!strcmp(name, "f32")) return 0;
    if (!strcmp(name, "bf16")) return lmf_model_set_infer_dtype(*m, LMF_BF16);
    if ((rc = lmf_qtype_parse(name, &q))) return rc;
    return lmf_model_quantize_base(*m, (int)q);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The long-context table: decode tokens/s over each KV cache type at ctx cached tokens. */
static int kv_context_bench(const lmf_model_config *c, int ctx, int T, int reps,
                            const char *weights) {
    int bs = 16, n_blocks = (ctx + T + bs - 1) / bs, V = c->vocab;
    lmf_model *m = NULL;
    int rc = make_model(&m, c, weights);
    if (rc) return rc;
    lmf_kv_pool kv[LMF_KV_DTYPE_COUNT];
    memset(kv, 0, sizeof kv);
    int32_t *ids = malloc(sizeof(int32_t) * (ctx + T)), *table = malloc(sizeof(int32_t) * n_blocks);
    float *logits = malloc(sizeof(float) * V);
    double *tps = calloc((size_t)LMF_KV_DTYPE_COUNT * reps, sizeof(double));
    if (!ids || !table || !logits || !tps) rc = lmf_errorf(LMF_ENOMEM, "out of memory");
    lmf_rng rng;
    lmf_rng_seed(&rng, 8);
    for (int i = 0; i < ctx + T && !rc; i++) ids[i] = (int32_t)(lmf_rng_u64(&rng) % V);
    for (int i = 0; i < n_blocks && !rc; i++) table[i] = i;
    /* Prefill each cache in chunks of 256 tokens. */
    for (int t = 0; t < LMF_KV_DTYPE_COUNT && !rc; t++) {
        rc = lmf_kv_pool_create_dtype(&kv[t], m, bs, n_blocks, (lmf_kv_dtype)t);
        for (int p = 0; p < ctx && !rc; p += 256) {
            lmf_seq_step s = {ids + p, ctx - p < 256 ? ctx - p : 256, p, table, n_blocks, 0, NULL};
            rc = lmf_model_step(m, &kv[t], &s, 1, NULL);
        }
    }
    /* Token by token, the three caches in turn: a change of load hits all three alike. */
    double total[LMF_KV_DTYPE_COUNT] = {0};
    for (int r = 0; r < reps && !rc; r++) {
        double run[LMF_KV_DTYPE_COUNT] = {0};
        for (int k = 0; k < T && !rc; k++)
            for (int t = 0; t < LMF_KV_DTYPE_COUNT && !rc; t++) {
                lmf_seq_step s = {ids + ctx + k, 1, ctx + k, table, n_blocks, 1, NULL};
                double t0 = lmf_time_sec();
                rc = lmf_model_step(m, &kv[t], &s, 1, logits);
                run[t] += lmf_time_sec() - t0;
            }
        for (int t = 0; t < LMF_KV_DTYPE_COUNT; t++)
            tps[t * reps + r] = T / run[t], total[t] += run[t];
    }
    if (!rc) {
        printf("\nlong context: %d cached tokens, %s weights, %d decoded tokens a run, best and "
               "median of %d runs; the caches take turns token by token, and 'interleaved' is "
               "float32's summed decode time over this one's\n",
               ctx, weights, T, reps);
        printf("%-9s %12s %13s %13s %12s %12s\n", "kv dtype", "KV MB/token", "decode tok/s",
               "median tok/s", "best vs f32", "interleaved");
        double best[LMF_KV_DTYPE_COUNT], med[LMF_KV_DTYPE_COUNT], mb[LMF_KV_DTYPE_COUNT];
        for (int t = 0; t < LMF_KV_DTYPE_COUNT; t++) {
            double *x = tps + (size_t)t * reps;
            qsort(x, reps, sizeof *x, cmp_double);
            best[t] = x[reps - 1], med[t] = x[reps / 2];
            /* the cache bytes a decoded token reads, at the runs' middle position */
            mb[t] =
                (double)lmf_kv_bytes_per_block(c, bs, (lmf_kv_dtype)t) / bs * (ctx + T / 2) / 1e6;
            printf("%-9s %12.1f %13.1f %13.1f %11.2fx %11.2fx\n",
                   lmf_kv_dtype_name((lmf_kv_dtype)t), mb[t], best[t], med[t], best[t] / best[0],
                   total[0] / total[t]);
        }
        for (int t = 0; t < LMF_KV_DTYPE_COUNT; t++)
            printf("{\"kv_dtype\": \"%s\", \"context\": %d, \"weights\": \"%s\", "
                   "\"kv_mb_per_token\": %.1f, \"decode_tok_s\": %.1f, \"median_tok_s\": %.1f, "
                   "\"best_vs_f32\": %.3f, \"interleaved_vs_f32\": %.3f}\n",
                   lmf_kv_dtype_name((lmf_kv_dtype)t), ctx, weights, mb[t], best[t], med[t],
                   best[t] / best[0], total[0] / total[t]);
    }
    for (int t = 0; t < LMF_KV_DTYPE_COUNT; t++) lmf_kv_pool_free(&kv[t]);
    lmf_model_free(m);
    free(ids), free(table), free(logits), free(tps);
    return rc;
}

/* Prefills ids[0..P0) (timed: *pre tokens/s), then decodes T tokens greedily, each right after
 * one streaming read of the weights: adds the read and decode seconds, and each token's
 * read / decode ratio into pair[0..T). */
static int decode_run(lmf_model *m, lmf_kv_pool *kv, int32_t *ids, int P0, int T, int32_t *table,
                      int n_blocks, float *logits, const void **reg, const size_t *reg_bytes,
                      int n_reg, double *pre, double *t_read, double *t_dec, double *pair,
                      double *sink) {
    lmf_seq_step s = {ids, P0, 0, table, n_blocks, 1, NULL};
    double t0 = lmf_time_sec();
    int rc = lmf_model_step(m, kv, &s, 1, logits);
    *pre = P0 / (lmf_time_sec() - t0);
    ids[P0] = bench_argmax(logits, m->cfg.vocab);
    for (int k = 0; k < T && !rc; k++) {
        double t1 = lmf_time_sec();
        *sink += lmf_stream_read_regions(reg, reg_bytes, n_reg);
        double t2 = lmf_time_sec();
        s = (lmf_seq_step){ids + P0 + k, 1, P0 + k, table, n_blocks, 1, NULL};
        rc = lmf_model_step(m, kv, &s, 1, logits);
        ids[P0 + k + 1] = bench_argmax(logits, m->cfg.vocab);
        double t3 = lmf_time_sec();
        *t_read += t2 - t1, *t_dec += t3 - t2;
        pair[k] = (t2 - t1) / (t3 - t2);
    }
    return rc;
}

int main(int argc, char **argv) {
    const char *preset = bench_opt(argc, argv, "--preset", "llama-110m"),
               *dtypes = bench_opt(argc, argv, "--dtype", "f32,bf16");
    int threads = atoi(bench_opt(argc, argv, "--threads", "2")),
        P = atoi(bench_opt(argc, argv, "--prompt", "128")),
        T = atoi(bench_opt(argc, argv, "--tokens", "64")),
        reps = atoi(bench_opt(argc, argv, "--reps", "5"));
    if (!strcmp(dtypes, "both")) dtypes = "f32,bf16";
    if (!strcmp(dtypes, "all")) dtypes = "f32,bf16,q8_0,q4_0,q4_1,nf4,q4_k";
    lmf_compute_set_threads(threads);
    lmf_model_config cfg;
    int rc = lmf_model_preset(&cfg, LMF_ARCH_LLAMA, preset);
    int kv_ctx = atoi(bench_opt(argc, argv, "--kv-context", "2048"));
    /* llama-110m's 1024 positions stretched to the long context (RoPE has no limit): the
     * figures are about bytes read, and random weights make no text anyway. */
    if (cfg.max_pos < kv_ctx + T) cfg.max_pos = kv_ctx + T;
    int bs = 16, n_blocks = (P + T + bs - 1) / bs, n_reg = cfg.layers * LMF_N_LINEAR + 1;
    float *logits = malloc(sizeof(float) * cfg.vocab);
    int32_t *ids = malloc(sizeof(int32_t) * (P + T + 1)),
            *table = malloc(sizeof(int32_t) * n_blocks);
    const void **reg = malloc(sizeof *reg * n_reg);
    size_t *reg_bytes = malloc(sizeof *reg_bytes * n_reg);
    double *pair = malloc(sizeof(double) * 2 * T * (reps > 0 ? reps : 1));
    char *list = strdup(dtypes), *save = NULL;
    if (rc || reps < 1 || T < 1 || !logits || !ids || !table || !reg || !reg_bytes || !pair ||
        !list) {
        fprintf(stderr, "bench_decode: %s\n",
                rc                  ? lmf_last_error()
                : reps < 1 || T < 1 ? "--reps and --tokens must be >= 1"
                                    : "out of memory");
        return 1;
    }
    for (int i = 0; i < n_blocks; i++) table[i] = i;
    lmf_rng rng;
    lmf_rng_seed(&rng, 7);
    for (int i = 0; i < P; i++) ids[i] = (int32_t)(lmf_rng_u64(&rng) % cfg.vocab);
    printf("decode bench: %s, %d threads, %d runs of %d tokens decoded from an empty cache "
           "(ratio, median) and %d after a %d-token prompt (ratio @P, prefill); each token paired "
           "with a streaming read of the weights it reads (the roofline); the KV cache is the one "
           "lmforge api gives the weights (kv_cache_dtype auto: bfloat16 for bf16, else float32)\n",
           preset, threads, reps, T, T, P);
    printf("%-5s %12s %11s %14s %14s %7s %7s %10s %14s %7s\n", "dtype", "weights MB", "GB/s",
           "roofline tok/s", "decode tok/s", "ratio", "median", "ratio @P", "prefill tok/s",
           "x f32");
    double sink = 0, f32_dec = 0;
    for (char *name = strtok_r(list, ",", &save); name && !rc; name = strtok_r(NULL, ",", &save)) {
        lmf_model *m = NULL;
        lmf_kv_pool kv = {0};
        /* the cache `lmforge api` gives these weights (kv_cache_dtype auto) */
        if ((rc = make_model(&m, &cfg, name)) ||
            (rc = lmf_kv_pool_create_dtype(&kv, m, bs, n_blocks, lmf_kv_dtype_auto(m)))) {
            lmf_model_free(m);
            break;
        }
        double bytes = token_regions(m, reg, reg_bytes), best_dec = 0, best_roof = 0, best_pre = 0,
               sum_read[2] = {0}, sum_dec[2] = {0}, pre;
        /* Each rep: T tokens decoded from a 1-token prompt (llama-bench's tg: an empty cache),
         * then T more after a P-token prefill (timed: the prefill figure). */
        for (int r = 0; r < reps && !rc; r++)
            for (int from = 0; from < 2 && !rc; from++) {
                double t_read = 0, t_dec = 0;
                rc = decode_run(m, &kv, ids, from ? P : 1, T, table, n_blocks, logits, reg,
                                reg_bytes, n_reg, &pre, &t_read, &t_dec,
                                pair + ((size_t)from * reps + r) * T, &sink);
                sum_read[from] += t_read, sum_dec[from] += t_dec;
                if (from && pre > best_pre) best_pre = pre;
                if (!from && T / t_dec > best_dec) best_dec = T / t_dec;
                if (!from && T / t_read > best_roof) best_roof = T / t_read;
            }
        lmf_kv_pool_free(&kv);
        lmf_model_free(m);
        if (rc) break;
        qsort(pair, (size_t)T * reps, sizeof *pair, cmp_double);
        double ratio = sum_read[0] / sum_dec[0], median = pair[(size_t)T * reps / 2],
               ratio_p = sum_read[1] / sum_dec[1];
        if (!strcmp(name, "f32")) f32_dec = best_dec;
        printf("%-5s %12.1f %11.2f %14.1f %14.1f %6.1f%% %6.1f%% %9.1f%% %14.1f %6.2fx\n", name,
               bytes / 1e6, best_roof * bytes / 1e9, best_roof, best_dec, 100 * ratio, 100 * median,
               100 * ratio_p, best_pre, f32_dec > 0 ? best_dec / f32_dec : 0);
        printf("{\"dtype\": \"%s\", \"weights_mb\": %.1f, \"bandwidth_gbs\": %.2f, "
               "\"roofline_tok_s\": %.1f, \"decode_tok_s\": %.1f, \"ratio\": %.3f, "
               "\"median_ratio\": %.3f, \"ratio_after_prompt\": %.3f, \"prefill_tok_s\": %.1f, "
               "\"x_f32\": %.3f, \"threads\": %d}\n",
               name, bytes / 1e6, best_roof * bytes / 1e9, best_roof, best_dec, ratio, median,
               ratio_p, best_pre, f32_dec > 0 ? best_dec / f32_dec : 0, threads);
        fflush(stdout);
    }
    if (!rc && kv_ctx > 0)
        rc = kv_context_bench(&cfg, kv_ctx, T, reps, bench_opt(argc, argv, "--kv-weights", "f32"));
    if (rc) fprintf(stderr, "bench_decode: %s\n", lmf_last_error());
    if (sink == 1.2345) printf("\n");
    free(logits), free(ids), free(table), free(reg), free(reg_bytes), free(pair), free(list);
    return rc ? 1 : 0;
}
