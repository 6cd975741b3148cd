/* The tensor-parallel step channel (tp_group.h), under mpirun with 2 ranks (alone: a group of
 * one): rank 0 sends steps through lmf_tp_group_step, the other ranks run them in
 * lmf_tp_group_serve until lmf_tp_group_stop. Rank 0's logits equal the whole model's step
 * (within 1e-4) for a long prefill (a message longer than the first broadcast: sent in two),
 * then batched decodes of two sequences; the other ranks' serve returns 0 at the stop. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/comm.h"
#include "lmforge/tensor_parallel.h"
#include "lmforge/tp_group.h"
#include "test.h"

enum { BS = 16, BLOCKS = 48, LONG = 300, SHORT = 7, DECODES = 6 };

static lmf_model *make(int kv_heads) {
    lmf_model_config c;
    lmf_model_preset(&c, LMF_ARCH_QWEN2, "tiny");
    c.layers = 2, c.kv_heads = kv_heads, c.heads = 2 * kv_heads, c.head_dim = 8;
    c.hidden = 32, c.ffn = 40, c.vocab = 97;
    lmf_model *m;
    CHECK(lmf_model_create(&m, &c, lmf_backend_cpu()) == 0);
    lmf_model_init_random(m, 5);
    return m;
}

/* Rank 0: the script of steps, through the group (shard) and locally (whole model). */
static void leader(lmf_tp_group *g, lmf_model *shard, lmf_model *full) {
    lmf_kv_pool kv_s, kv_f;
    CHECK(lmf_kv_pool_create(&kv_s, shard, BS, BLOCKS) == 0);
    CHECK(lmf_kv_pool_create(&kv_f, full, BS, BLOCKS) == 0);
    int V = full->cfg.vocab, n_tab = (LONG + DECODES + BS - 1) / BS;
    int32_t ids[2][LONG + DECODES], tab[2][24];
    for (int t = 0; t < LONG + DECODES; t++) ids[0][t] = (t * 13 + 1) % V, ids[1][t] = (t * 5) % V;
    for (int b = 0; b < 24; b++) tab[0][b] = 2 * b, tab[1][b] = 2 * b + 1;
    float got[2 * 97], want[2 * 97];
    double worst = 0;
    /* a long prefill of sequence 0 and a short one of sequence 1 */
    lmf_seq_step s[2] = {{ids[0], LONG, 0, tab[0], n_tab, 1, NULL},
                         {ids[1], SHORT, 0, tab[1], n_tab, 1, NULL}};
    CHECK(lmf_tp_group_step(g, shard, &kv_s, s, 2, got) == 0);
    CHECK(lmf_model_step(full, &kv_f, s, 2, want) == 0);
    worst = fmax(worst, test_max_rel(got, want, 2 * (size_t)V));
    for (int k = 0; k < DECODES; k++) {
        s[0] = (lmf_seq_step){ids[0] + LONG + k, 1, LONG + k, tab[0], n_tab, 1, NULL};
        s[1] = (lmf_seq_step){ids[1] + SHORT + k, 1, SHORT + k, tab[1], n_tab, 1, NULL};
        CHECK(lmf_tp_group_step(g, shard, &kv_s, s, 2, got) == 0);
        CHECK(lmf_model_step(full, &kv_f, s, 2, want) == 0);
        worst = fmax(worst, test_max_rel(got, want, 2 * (size_t)V));
    }
    CHECK_MSG(worst < 1e-4, "group steps vs whole model: rel err %g", worst);
    printf("tp group of %d: %d steps, logits vs whole model rel err %.2e\n", shard->tp->size,
           1 + DECODES, worst);
    CHECK(lmf_tp_group_stop(g) == 0);
    lmf_kv_pool_free(&kv_s);
    lmf_kv_pool_free(&kv_f);
}

int main(void) {
    lmf_comm *world = NULL, *ctrl = NULL;
    lmf_comm_options o = {.timeout_s = 60};
    if (lmf_comm_init(&world, &o)) {
        fprintf(stderr, "init: %s\n", lmf_last_error());
        return 1;
    }
    int R = lmf_comm_rank(world), P = lmf_comm_size(world);
    CHECK(lmf_comm_split(world, 0, R, &ctrl) == 0);
    lmf_model *full = make(2), *shard = NULL;
    lmf_tp_comm hooks;
    lmf_tp_comm_over(&hooks, world);
    CHECK(lmf_tp_shard(&shard, full, R, P, &hooks) == 0);
    lmf_tp_group *g = NULL;
    CHECK(lmf_tp_group_create(&g, ctrl, shard) == 0);
    if (R == 0)
        leader(g, shard, full);
    else
        CHECK_MSG(lmf_tp_group_serve(g, BS, BLOCKS, LMF_KV_F32) == 0, "serve: %s",
                  lmf_last_error());
    lmf_tp_group_free(g);
    lmf_model_free(shard);
    lmf_model_free(full);
    char name[64];
    snprintf(name, sizeof name, "test_tp_group (rank %d/%d)", R, P);
    int rc = test_summary(name);
    float any = (float)rc;
    if (lmf_comm_allreduce(world, &any, 1, LMF_F32, LMF_REDUCE_SUM) || any != 0) rc = 1;
    lmf_comm_free(ctrl);
    lmf_comm_free(world);
    return rc;
}
