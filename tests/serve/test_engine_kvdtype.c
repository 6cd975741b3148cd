/* The engine over bfloat16 and int8 KV pools (lmf_engine_config.kv_dtype): the pool's blocks
 * stay opaque to the scheduler, so what holds for float32 holds for them: 16 concurrent greedy
 * requests sharing a 20-token prefix (prefix caching on: later requests read blocks that
 * earlier ones wrote) get the tokens each gets alone with prefix caching off, and so do they
 * under a pool so small that requests are preempted and recomputed. The tiny model's weights
 * are scaled up so that greedy choices are clear (as in test_engine), so the last-bit
 * differences between a prompt prefilled whole and in chunks beside other requests, which may
 * move a value across a bf16 or int8 rounding boundary, do not flip them. (The types' tokens
 * are not compared with each other: on this model, whose weights x4 make attention very
 * sharp, bf16 and int8 rounding of the keys change 4 and 8 of the 16 greedy continuations;
 * test_api_kvdtype compares each type with transformers over the same rounding.) */
#include <stdlib.h>
#include <string.h>

#include "lmforge/engine.h"
#include "test.h"

enum { NREQ = 16, MAXTOK = 12, PLEN = 40 };

typedef struct result {
    int32_t toks[64];
    int n, done;
} result;

static void on_finish(lmf_request *r, lmf_finish why, void *user) {
    result *res = user;
    int n;
    const int32_t *out = lmf_request_output(r, &n);
    memcpy(res->toks, out, sizeof(int32_t) * (size_t)n);
    res->n = n, res->done = why == LMF_FINISH_LENGTH;
}

static int32_t prompts[NREQ][PLEN];

/* Runs requests first..first+count-1 through one engine to the end. */
static lmf_engine_stats run(lmf_model *m, lmf_engine_config *c, int first, int count, result *res) {
    lmf_engine *e;
    lmf_engine_stats st = {0};
    CHECK(lmf_engine_create(&e, m, c) == 0);
    if (!e) return st;
    for (int i = first; i < first + count; i++) {
        lmf_request_params p = {0};
        p.prompt = prompts[i], p.n_prompt = PLEN, p.max_tokens = MAXTOK, p.ignore_eos = 1;
        lmf_sampling_defaults(&p.sampling);
        p.sampling.temperature = 0;
        p.on_finish = on_finish, p.user = &res[i];
        CHECK(lmf_engine_submit(e, &p, NULL) == 0);
    }
    for (int guard = 0; guard < 10000 && lmf_engine_step(e) > 0; guard++) {
    }
    lmf_engine_stats_get(e, &st);
    lmf_engine_free(e);
    return st;
}

static int same(const result *a, const result *b, int n) {
    for (int i = 0; i < n; i++)
        if (!a[i].done || !b[i].done || a[i].n != b[i].n ||
            memcmp(a[i].toks, b[i].toks, sizeof(int32_t) * (size_t)a[i].n))
            return 0;
    return 1;
}

int main(void) {
    lmf_compute_set_threads(2);
    lmf_model_config mc;
    lmf_model_preset(&mc, LMF_ARCH_LLAMA, "tiny");
    mc.vocab = 300, mc.eos_id = 299;
    lmf_model *m;
    CHECK(lmf_model_create(&m, &mc, lmf_backend_cpu()) == 0);
    lmf_model_init_random(m, 17);
    for (size_t i = 0; i < m->numel; i++) m->params[i] *= 4.0f;
    for (int i = 0; i < NREQ; i++)
        for (int t = 0; t < PLEN; t++)
            prompts[i][t] = t < 20 ? (t * 13 + 1) % 299 : (i * 31 + t * 7) % 299;
    static result alone[NREQ], together[NREQ], tight[NREQ];
    for (int t = 0; t < LMF_KV_DTYPE_COUNT; t++) {
        const char *name = lmf_kv_dtype_name((lmf_kv_dtype)t);
        lmf_engine_config c;
        lmf_engine_config_defaults(&c);
        CHECK(c.kv_dtype == LMF_KV_F32);
        c.kv_dtype = (lmf_kv_dtype)t;
        c.block_size = 4, c.n_blocks = 256, c.max_batch_tokens = 64, c.prefix_caching = 0;
        memset(alone, 0, sizeof alone), memset(together, 0, sizeof together),
            memset(tight, 0, sizeof tight);
        for (int i = 0; i < NREQ; i++) run(m, &c, i, 1, alone);
        c.prefix_caching = 1;
        lmf_engine_stats st = run(m, &c, 0, NREQ, together);
        CHECK_MSG(st.prefix_hit_tokens >= 20, "%s: prefix hit tokens %lld", name,
                  (long long)st.prefix_hit_tokens);
        CHECK_MSG(same(alone, together, NREQ), "%s: concurrent requests differ from solo runs",
                  name);
        c.n_blocks = 16, c.prefix_caching = 0;
        st = run(m, &c, 0, NREQ, tight);
        CHECK_MSG(st.preemptions > 0, "%s: no preemption with a 16-block pool", name);
        CHECK_MSG(same(alone, tight, NREQ), "%s: outputs changed under preemption", name);
    }
    lmf_model_free(m);
    return test_summary("test_engine_kvdtype");
}
