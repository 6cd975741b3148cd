/* Single-stream decode speed with tensor parallelism: run under mpirun with N ranks (alone: the
 * whole model, no shard). Every rank builds the same random model (--preset), keeps its shard,
 * and rank 0 drives the steps through the serving path (tp_group.h: each step is sent to the
 * other ranks, which run it on their shards): a prefill of --prompt tokens, then --tokens
 * greedy decode steps, best of --reps. Rank 0 prints decode tokens/s and, per decoded token,
 * the milliseconds spent inside the all-reduces (embedding, after attention, after the MLP:
 * 1 + 2 x layers of them) and inside the gather of the logits, as the shard's own timers see
 * them (waiting for the slower rank included), then one JSON line.
 * Usage: mpirun -np N bench_tp [--preset llama-110m] [--prompt 128] [--tokens 64] [--reps 3]
 *                              [--dtype f32|bf16]   (threads: OMP_NUM_THREADS) */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/comm.h"
#include "lmforge/model.h"
#include "lmforge/tensor_parallel.h"
#include "lmforge/tp_group.h"

#include "bench_args.h"

typedef struct run {
    double decode_tok_s, allreduce_ms, gather_ms, allreduces_per_tok;
} run;

/* Rank 0: one prefill and T decodes through the group (or the whole model when g is NULL). */
static int decode(lmf_tp_group *g, lmf_model *m, lmf_kv_pool *kv, int32_t *ids, int32_t *table,
                  int n_blocks, int P, int T, float *logits, run *out) {
    int V = lmf_model_vocab(m), rc;
    lmf_seq_step s = {ids, P, 0, table, n_blocks, 1, NULL};
    rc = g ? lmf_tp_group_step(g, m, kv, &s, 1, logits) : lmf_model_step(m, kv, &s, 1, logits);
    if (rc) return rc;
    ids[P] = bench_argmax(logits, V);
    lmf_tp_stats_reset(m);
    double t0 = lmf_time_sec();
    for (int k = 0; k < T && !rc; k++) {
        s = (lmf_seq_step){ids + P + k, 1, P + k, table, n_blocks, 1, NULL};
        rc = g ? lmf_tp_group_step(g, m, kv, &s, 1, logits) : lmf_model_step(m, kv, &s, 1, logits);
        ids[P + k + 1] = bench_argmax(logits, V);
    }
    double dt = lmf_time_sec() - t0;
    out->decode_tok_s = T / dt;
    out->allreduce_ms = m->tp ? 1e3 * m->tp->stats.allreduce_s / T : 0;
    out->gather_ms = m->tp ? 1e3 * m->tp->stats.gather_s / T : 0;
    out->allreduces_per_tok = m->tp ? (double)m->tp->stats.allreduces / T : 0;
    return rc;
}

int main(int argc, char **argv) {
    const char *preset = bench_opt(argc, argv, "--preset", "llama-110m"),
               *dtype = bench_opt(argc, argv, "--dtype", "f32");
    int P = atoi(bench_opt(argc, argv, "--prompt", "128")),
        T = atoi(bench_opt(argc, argv, "--tokens", "64")),
        reps = atoi(bench_opt(argc, argv, "--reps", "3")), threads = omp_get_max_threads();
    lmf_comm *world = NULL, *ctrl = NULL;
    lmf_comm_options co = {.timeout_s = 600};
    int rc = lmf_comm_init(&world, &co);
    if (rc) {
        fprintf(stderr, "bench_tp: %s\n", lmf_last_error());
        return 1;
    }
    int R = lmf_comm_rank(world), N = lmf_comm_size(world);
    lmf_compute_set_threads(threads);
    lmf_model_config cfg;
    lmf_model *m = NULL, *shard = NULL;
    lmf_tp_group *g = NULL;
    rc = lmf_model_preset(&cfg, LMF_ARCH_LLAMA, preset);
    if (!rc) rc = lmf_model_create(&m, &cfg, lmf_backend_cpu());
    if (!rc) lmf_model_init_random(m, 1);
    if (!rc && N > 1) {
        lmf_tp_comm hooks;
        lmf_tp_comm_over(&hooks, world);
        if (!(rc = lmf_tp_shard(&shard, m, R, N, &hooks))) {
            lmf_model_free(m);
            m = shard;
        }
        if (!rc) rc = lmf_comm_split(world, 0, R, &ctrl);
        if (!rc) rc = lmf_tp_group_create(&g, ctrl, m);
    }
    if (!rc && !strcmp(dtype, "bf16")) rc = lmf_model_set_infer_dtype(m, LMF_BF16);
    int bs = 16, n_blocks = (P + T + bs - 1) / bs + 1;
    if (!rc && R > 0) {
        rc = lmf_tp_group_serve(g, bs, n_blocks, LMF_KV_F32);
    } else if (!rc) {
        lmf_kv_pool kv;
        float *logits = malloc(sizeof(float) * cfg.vocab);
        int32_t *ids = malloc(sizeof(int32_t) * (P + T + 1)),
                *table = malloc(sizeof(int32_t) * n_blocks);
        rc = lmf_kv_pool_create(&kv, m, bs, n_blocks);
        for (int i = 0; i < n_blocks; i++) table[i] = i;
        lmf_rng rng;
        lmf_rng_seed(&rng, 7);
        for (int i = 0; i < P; i++) ids[i] = (int32_t)(lmf_rng_u64(&rng) % cfg.vocab);
        run best = {0}, r;
        for (int k = 0; k < reps && !rc; k++)
            if (!(rc = decode(g, m, &kv, ids, table, n_blocks, P, T, logits, &r)) &&
                r.decode_tok_s > best.decode_tok_s)
                best = r;
        if (g) lmf_tp_group_stop(g);
        if (!rc) {
            size_t kv_block = lmf_kv_bytes_per_block(&m->cfg, bs, LMF_KV_F32);
            printf("TP %d x %d thread(s), %s %s: decode %.1f tok/s; per token %.3f ms in %.0f "
                   "all-reduces, %.3f ms in the logits gather; KV %zu bytes/block per rank\n",
                   N, threads, preset, dtype, best.decode_tok_s, best.allreduce_ms,
                   best.allreduces_per_tok, best.gather_ms, kv_block);
            printf("{\"tp\": %d, \"threads\": %d, \"dtype\": \"%s\", \"decode_tok_s\": %.1f, "
                   "\"allreduce_ms_per_tok\": %.4f, \"allreduces_per_tok\": %.0f, "
                   "\"gather_ms_per_tok\": %.4f, \"kv_bytes_per_block\": %zu}\n",
                   N, threads, dtype, best.decode_tok_s, best.allreduce_ms, best.allreduces_per_tok,
                   best.gather_ms, kv_block);
        }
        lmf_kv_pool_free(&kv);
        free(logits), free(ids), free(table);
    }
    if (rc) fprintf(stderr, "bench_tp: rank %d: %s\n", R, lmf_last_error());
    lmf_tp_group_free(g);
    lmf_model_free(m);
    lmf_comm_free(ctrl);
    lmf_comm_free(world);
    return rc ? 1 : 0;
}
