/* Single-stream decode and prefill speed of lmf_model_step against the memory-bandwidth
 * roofline, measured in the same process: a streaming read of a buffer far larger than the
 * caches, on the same threads, gives bytes/s; a decode token must read every weight of the
 * seven linears of each layer and the lm_head once, so roofline tokens/s = bandwidth / those
 * bytes. Each figure is the best of --reps runs, the roofline measured again right before
 * each run (the machine may be shared). Prints a table and one JSON line per dtype, with each
 * dtype's decode speed over f32's ("x f32") when f32 ran first. --dtype takes a list of f32,
 * bf16 and block formats (q8_0, q4_0, q4_1, nf4, fp4, q4_k), "both" (f32,bf16) or "all".
 * On a shared machine the bandwidth moves by 2x within seconds, so a ratio of two figures taken
 * a second apart is noisy; the "paired" column also times, token by token, one streaming read
 * of exactly the bytes a token reads (the same probe) and one decode step back to back, and
 * gives the sum of the read times over the sum of the decode times.
 * A second table decodes at a long context (--kv-context cached tokens, 0 to skip) over a
 * float32, a bfloat16 and an int8 KV cache side by side (kv_cache_dtype), with the weights of
 * --kv-weights (f32, bf16 or a block format): there the cache a token reads (151 MB f32 at 2048
 * tokens of llama-110m) is of the order of the weights. The three caches are prefilled with the
 * same prompt, then their runs alternate (rep 1 of each, rep 2 of each, ...) so that a change of
 * machine load hits all three alike; each figure is the best and the median of --reps runs of
 * --tokens decodes. Usage: bench_decode [--preset llama-110m] [--threads 2] [--prompt 128]
 * [--tokens 64]
 *                     [--reps 5] [--dtype f32,bf16,...|both|all] [--buffer-mb 1024]
 *                     [--kv-context 2048] [--kv-weights f32] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/decode_kernels.h"
#include "lmforge/model.h"
#include "lmforge/quant.h"

static const char *opt(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return def;
}

/* Bytes/s of the best of 3 streaming reads of buf. */
static double bandwidth(const float *buf, size_t n, double *sink) {
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = lmf_time_sec();
        *sink += lmf_stream_read(buf, n);
        double bw = n * sizeof(float) / (lmf_time_sec() - t0);
        if (bw > best) best = bw;
    }
    return best;
}

/* Decode tokens T..T+n-1 past a prompt of P (cache already filled) each right after a streaming
 * read of `bytes` from buf; returns sum(read time) / sum(decode time). */
static double paired(lmf_model *m, lmf_kv_pool *kv, int32_t *ids, int32_t *table, int n_blocks,
                     int P, int n, const float *buf, size_t buf_n, double bytes, float *logits,
                     double *sink, int *rc);

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static double paired(lmf_model *m, lmf_kv_pool *kv, int32_t *ids, int32_t *table, int n_blocks,
                     int P, int n, const float *buf, size_t buf_n, double bytes, float *logits,
                     double *sink, int *rc) {
    size_t chunk = (size_t)(bytes / sizeof(float)), off = 0;
    double t_read = 0, t_dec = 0;
    if (chunk > buf_n) chunk = buf_n;
    for (int k = 0; k < n && !*rc; k++) {
        if (off + chunk > buf_n) off = 0;
        double t0 = lmf_time_sec();
        *sink += lmf_stream_read(buf + off, chunk);
        double t1 = lmf_time_sec();
        off += chunk;
        lmf_seq_step s = {ids + P + k, 1, P + k, table, n_blocks, 1, NULL};
        *rc = lmf_model_step(m, kv, &s, 1, logits);
        ids[P + k + 1] = argmax(logits, m->cfg.vocab);
        t_dec += lmf_time_sec() - t1;
        t_read += (t1 - t0) * bytes / (chunk * sizeof(float));
    }
    return t_read / t_dec;
}

/* Bytes of weights a decode token reads with m's weights: every row of the seven linears of each
 * layer and of the lm_head, in f32, bf16 or m's block format. */
static double token_bytes(const lmf_model *m) {
    const lmf_model_config *c = &m->cfg;
    size_t C = c->hidden, QD = (size_t)c->heads * c->head_dim,
           KD = (size_t)c->kv_heads * c->head_dim, F = c->ffn;
    if (m->quantized) {
        lmf_qtype t = (lmf_qtype)m->qtype;
        return (double)c->vocab * lmf_quant_row_bytes(t, C) +
               (double)c->layers * ((QD + 2 * KD + 2 * F) * lmf_quant_row_bytes(t, C) +
                                    C * lmf_quant_row_bytes(t, QD) + C * lmf_quant_row_bytes(t, F));
    }
    size_t weights = (size_t)c->vocab * C + c->layers * (2 * QD * C + 2 * KD * C + 3 * F * C);
    return (double)weights * (m->infer_bf16 ? 2 : 4);
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

int main(int argc, char **argv) {
    const char *preset = opt(argc, argv, "--preset", "llama-110m"),
               *dtypes = opt(argc, argv, "--dtype", "f32,bf16");
    int threads = atoi(opt(argc, argv, "--threads", "2")),
        P = atoi(opt(argc, argv, "--prompt", "128")), T = atoi(opt(argc, argv, "--tokens", "64")),
        reps = atoi(opt(argc, argv, "--reps", "5"));
    size_t buf_n = (size_t)atoi(opt(argc, argv, "--buffer-mb", "1024")) << 18;
    if (!strcmp(dtypes, "both")) dtypes = "f32,bf16";
    if (!strcmp(dtypes, "all")) dtypes = "f32,bf16,q8_0,q4_0,q4_1,nf4,q4_k";
    lmf_compute_set_threads(threads);
    lmf_model_config cfg;
    int rc = lmf_model_preset(&cfg, LMF_ARCH_LLAMA, preset);
    int kv_ctx = atoi(opt(argc, argv, "--kv-context", "2048"));
    /* llama-110m's 1024 positions stretched to the long context (RoPE has no limit): the
     * figures are about bytes read, and random weights make no text anyway. */
    if (cfg.max_pos < kv_ctx + T) cfg.max_pos = kv_ctx + T;
    int bs = 16, n_blocks = (P + T + bs - 1) / bs;
    float *buf = malloc(sizeof(float) * buf_n), *logits = malloc(sizeof(float) * cfg.vocab);
    int32_t *ids = malloc(sizeof(int32_t) * (P + T + 1)),
            *table = malloc(sizeof(int32_t) * n_blocks);
    char *list = strdup(dtypes), *save = NULL;
    if (rc || !buf || !logits || !ids || !table || !list) {
        fprintf(stderr, "bench_decode: %s\n", rc ? lmf_last_error() : "out of memory");
        return 1;
    }
    for (size_t i = 0; i < buf_n; i++) buf[i] = (float)(i & 255);
    for (int i = 0; i < n_blocks; i++) table[i] = i;
    lmf_rng rng;
    lmf_rng_seed(&rng, 7);
    for (int i = 0; i < P; i++) ids[i] = (int32_t)(lmf_rng_u64(&rng) % cfg.vocab);
    printf("decode bench: %s, %d threads, prompt %d, %d decoded tokens, best of %d; "
           "roofline buffer %zu MiB\n",
           preset, threads, P, T, reps, buf_n * sizeof(float) >> 20);
    printf("%-5s %12s %11s %14s %14s %7s %7s %14s %7s\n", "dtype", "weights MB", "GB/s",
           "roofline tok/s", "decode tok/s", "ratio", "paired", "prefill tok/s", "x f32");
    double sink = 0, f32_dec = 0;
    for (char *name = strtok_r(list, ",", &save); name && !rc; name = strtok_r(NULL, ",", &save)) {
        lmf_model *m = NULL;
        lmf_kv_pool kv = {0};
        if ((rc = make_model(&m, &cfg, name)) || (rc = lmf_kv_pool_create(&kv, m, bs, n_blocks))) {
            lmf_model_free(m);
            break;
        }
        double bytes = token_bytes(m), best_ratio = 0, best_dec = 0, best_roof = 0, best_bw = 0,
               best_pre = 0;
        for (int r = 0; r < reps && !rc; r++) {
            double bw = bandwidth(buf, buf_n, &sink), roof = bw / bytes;
            lmf_seq_step s = {ids, P, 0, table, n_blocks, 1, NULL};
            double t0 = lmf_time_sec();
            rc = lmf_model_step(m, &kv, &s, 1, logits);
            double pre = P / (lmf_time_sec() - t0);
            ids[P] = argmax(logits, cfg.vocab);
            t0 = lmf_time_sec();
            for (int k = 0; k < T && !rc; k++) {
                s = (lmf_seq_step){ids + P + k, 1, P + k, table, n_blocks, 1, NULL};
                rc = lmf_model_step(m, &kv, &s, 1, logits);
                ids[P + k + 1] = argmax(logits, cfg.vocab);
            }
            double dec = T / (lmf_time_sec() - t0);
            if (dec / roof > best_ratio) best_ratio = dec / roof;
            if (dec > best_dec) best_dec = dec;
            if (roof > best_roof) best_roof = roof, best_bw = bw;
            if (pre > best_pre) best_pre = pre;
        }
        /* The paired figure: T more tokens after a fresh prefill. */
        lmf_seq_step s = {ids, P, 0, table, n_blocks, 1, NULL};
        if (!rc && !(rc = lmf_model_step(m, &kv, &s, 1, logits)))
            ids[P] = argmax(logits, cfg.vocab);
        double pair =
            rc ? 0
               : paired(m, &kv, ids, table, n_blocks, P, T, buf, buf_n, bytes, logits, &sink, &rc);
        lmf_kv_pool_free(&kv);
        lmf_model_free(m);
        if (rc) break;
        if (!strcmp(name, "f32")) f32_dec = best_dec;
        printf("%-5s %12.1f %11.2f %14.1f %14.1f %6.1f%% %6.1f%% %14.1f %6.2fx\n", name,
               bytes / 1e6, best_bw / 1e9, best_roof, best_dec, 100 * best_ratio, 100 * pair,
               best_pre, f32_dec > 0 ? best_dec / f32_dec : 0);
        printf("{\"dtype\": \"%s\", \"weights_mb\": %.1f, \"bandwidth_gbs\": %.2f, "
               "\"roofline_tok_s\": %.1f, \"decode_tok_s\": %.1f, \"best_ratio\": %.3f, "
               "\"paired_ratio\": %.3f, \"prefill_tok_s\": %.1f, \"x_f32\": %.3f, "
               "\"threads\": %d}\n",
               name, bytes / 1e6, best_bw / 1e9, best_roof, best_dec, best_ratio, pair, best_pre,
               f32_dec > 0 ? best_dec / f32_dec : 0, threads);
        fflush(stdout);
    }
    if (!rc && kv_ctx > 0)
        rc = kv_context_bench(&cfg, kv_ctx, T, reps, opt(argc, argv, "--kv-weights", "f32"));
    if (rc) fprintf(stderr, "bench_decode: %s\n", lmf_last_error());
    if (sink == 1.2345) printf("\n");
    free(buf), free(logits), free(ids), free(table), free(list);
    return rc ? 1 : 0;
}
