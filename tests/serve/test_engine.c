/* The continuous-batching engine on a tiny random model: 16 concurrent greedy requests get
 * exactly the tokens each gets alone; seeded sampling is independent of the batch; prefix
 * blocks are reused (hits counted); a tiny KV pool forces preemption and the outputs stay
 * the same; max_tokens, stop tokens, cancellation and a full queue behave; each token but a
 * request's last is followed by one on_wake, from inside the next model step, before the next
 * token. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/engine.h"
#include "test.h"

enum { NREQ = 16, MAXTOK = 12, PLEN = 40 };

typedef struct result {
    int32_t toks[64];
    int n;
    lmf_finish why;
    int done;
    int tokens, wakes, wake_order_bad, wakes_outside_step; /* on_token / on_wake calls */
} result;

static lmf_model *g_model; /* its step_hook is set while the engine's model step runs */

static int on_token(lmf_request *r, const lmf_sample_result *s, void *user) {
    result *res = user;
    (void)r, (void)s;
    res->tokens++;
    res->wake_order_bad += res->wakes != res->tokens - 1; /* the last token's wake came first */
    return 0;
}

static void on_wake(lmf_request *r, void *user) {
    result *res = user;
    (void)r;
    res->wakes++;
    res->wake_order_bad += res->wakes != res->tokens;
    res->wakes_outside_step += g_model->step_hook == NULL;
}

static void on_finish(lmf_request *r, lmf_finish why, void *user) {
    result *res = user;
    int n;
    const int32_t *out = lmf_request_output(r, &n);
    memcpy(res->toks, out, sizeof(int32_t) * (size_t)n);
    res->n = n;
    res->why = why;
    res->done = 1;
}

static lmf_model *model(void) {
    lmf_model_config c;
    lmf_model_preset(&c, LMF_ARCH_LLAMA, "tiny");
    c.vocab = 300, c.eos_id = 299;
    lmf_model *m;
    CHECK(lmf_model_create(&m, &c, lmf_backend_cpu()) == 0);
    lmf_model_init_random(m, 17);
    /* Larger weights than the init give peaked distributions, so greedy choices are clear. */
    for (size_t i = 0; i < m->numel; i++) m->params[i] *= 4.0f;
    return m;
}

static int32_t prompts[NREQ][PLEN];

static void submit(lmf_engine *e, int i, float temperature, uint64_t seed, result *res, int plen) {
    lmf_request_params p = {0};
    p.prompt = prompts[i], p.n_prompt = plen, p.max_tokens = MAXTOK;
    lmf_sampling_defaults(&p.sampling);
    p.sampling.temperature = temperature;
    p.seed = seed, p.has_seed = 1, p.ignore_eos = 1;
    p.on_finish = on_finish, p.on_token = on_token, p.on_wake = on_wake, p.user = res;
    CHECK(lmf_engine_submit(e, &p, NULL) == 0);
}

static void drain(lmf_engine *e) {
    for (int guard = 0; guard < 10000 && lmf_engine_step(e) > 0; guard++) {
    }
}

static int same(const result *a, const result *b) {
    return a->n == b->n && !memcmp(a->toks, b->toks, sizeof(int32_t) * (size_t)a->n);
}

int main(void) {
    lmf_compute_set_threads(2);
    lmf_model *m = g_model = model();
    for (int i = 0; i < NREQ; i++)
        for (int t = 0; t < PLEN; t++)
            prompts[i][t] = t < 20 ? (t * 13 + 1) % 299 : (i * 31 + t * 7) % 299;
    lmf_engine_config c;
    lmf_engine_config_defaults(&c);
    c.block_size = 4, c.n_blocks = 256, c.max_batch_tokens = 64;
    result alone[NREQ] = {0}, together[NREQ] = {0}, sampled_alone[4] = {0}, sampled_mix[4] = {0};

    for (int i = 0; i < NREQ; i++) { /* each alone, prefix caching off */
        lmf_engine *e;
        c.prefix_caching = 0;
        CHECK(lmf_engine_create(&e, m, &c) == 0);
        submit(e, i, 0, 0, &alone[i], PLEN);
        drain(e);
        lmf_engine_free(e);
    }
    lmf_engine *e;
    c.prefix_caching = 1;
    CHECK(lmf_engine_create(&e, m, &c) == 0);
    for (int i = 0; i < NREQ; i++) submit(e, i, 0, 0, &together[i], PLEN);
    drain(e);
    int all_same = 1;
    for (int i = 0; i < NREQ; i++) all_same &= together[i].done && same(&alone[i], &together[i]);
    CHECK_MSG(all_same, "16 concurrent greedy requests differ from their solo runs");
    int wakes_ok = 1;
    for (int i = 0; i < NREQ; i++)
        wakes_ok &= together[i].tokens == MAXTOK && together[i].wakes == MAXTOK - 1 &&
                    !together[i].wake_order_bad && !together[i].wakes_outside_step;
    CHECK_MSG(wakes_ok, "on_wake: %d tokens, %d wakes, %d out of order, %d outside a step",
              together[0].tokens, together[0].wakes, together[0].wake_order_bad,
              together[0].wakes_outside_step);
    CHECK(together[0].n == MAXTOK && together[0].why == LMF_FINISH_LENGTH);
    lmf_engine_stats st;
    lmf_engine_stats_get(e, &st);
    /* The 20-token shared prefix is 5 full blocks: later requests find them cached. */
    CHECK_MSG(st.prefix_hit_tokens >= 20, "prefix hit tokens %lld",
              (long long)st.prefix_hit_tokens);
    CHECK(st.requests_done == NREQ && st.running == 0 && st.waiting == 0);
    lmf_engine_free(e);

    /* Seeded sampling: same tokens alone and mixed into a batch of greedy requests. */
    for (int i = 0; i < 4; i++) {
        CHECK(lmf_engine_create(&e, m, &c) == 0);
        submit(e, i, 1.0f, 1000 + i, &sampled_alone[i], PLEN);
        drain(e);
        lmf_engine_free(e);
    }
    CHECK(lmf_engine_create(&e, m, &c) == 0);
    result filler[NREQ] = {0};
    for (int i = 0; i < 4; i++) {
        submit(e, 8 + i, 0, 0, &filler[i], PLEN);
        submit(e, i, 1.0f, 1000 + i, &sampled_mix[i], PLEN);
    }
    drain(e);
    int seeded_same = 1;
    for (int i = 0; i < 4; i++) seeded_same &= same(&sampled_alone[i], &sampled_mix[i]);
    CHECK(seeded_same);
    lmf_engine_free(e);

    /* Tiny pool: 16 blocks of 4 tokens for 16 requests of 52 tokens: preemption must happen. */
    c.n_blocks = 16, c.prefix_caching = 0;
    CHECK(lmf_engine_create(&e, m, &c) == 0);
    result tight[NREQ] = {0};
    for (int i = 0; i < NREQ; i++) submit(e, i, 0, 0, &tight[i], PLEN);
    drain(e);
    lmf_engine_stats_get(e, &st);
    int tight_same = 1;
    for (int i = 0; i < NREQ; i++) tight_same &= tight[i].done && same(&alone[i], &tight[i]);
    CHECK_MSG(st.preemptions > 0, "no preemption with a 16-block pool");
    CHECK_MSG(tight_same, "outputs changed under preemption");
    lmf_engine_free(e);

    /* Stop tokens, cancellation, queue bound, validation. */
    c.n_blocks = 64, c.max_waiting = 2;
    CHECK(lmf_engine_create(&e, m, &c) == 0);
    result stopped = {0}, cancelled = {0}, x = {0};
    lmf_request_params p = {0};
    lmf_sampling_defaults(&p.sampling);
    p.sampling.temperature = 0;
    p.prompt = prompts[0], p.n_prompt = PLEN, p.max_tokens = MAXTOK, p.on_finish = on_finish,
    p.user = &stopped;
    int32_t stop_tok = alone[0].toks[3];
    p.stop_ids = &stop_tok, p.n_stop_ids = 1, p.ignore_eos = 1;
    uint64_t id;
    CHECK(lmf_engine_submit(e, &p, &id) == 0);
    p.stop_ids = NULL, p.n_stop_ids = 0, p.user = &cancelled;
    CHECK(lmf_engine_submit(e, &p, &id) == 0);
    CHECK(lmf_engine_submit(e, &p, NULL) == 1); /* queue full: try later (HTTP 429) */
    lmf_engine_cancel(e, id);
    drain(e);
    int first_stop = 0;
    while (alone[0].toks[first_stop] != stop_tok) first_stop++;
    CHECK(stopped.why == LMF_FINISH_STOP && stopped.n == first_stop + 1);
    CHECK(cancelled.done && cancelled.why == LMF_FINISH_CANCELLED);
    p.user = &x;
    p.max_tokens = 0;
    CHECK(lmf_engine_submit(e, &p, NULL) == LMF_EINVAL && strstr(lmf_last_error(), "max_tokens"));
    p.max_tokens = 10000;
    CHECK(lmf_engine_submit(e, &p, NULL) == LMF_EINVAL && strstr(lmf_last_error(), "KV cache"));
    p.max_tokens = 4, p.sampling.top_p = 2;
    CHECK(lmf_engine_submit(e, &p, NULL) == LMF_EINVAL && strstr(lmf_last_error(), "top_p"));
    lmf_engine_free(e);
    lmf_model_free(m);
    return test_summary("test_engine");
}
