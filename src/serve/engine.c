/* Continuous-batching engine over a paged KV cache (see include/lmforge/engine.h). Other
 * threads only touch the incoming queue and the cancel list under the mutex; everything else
 * belongs to the engine thread. */
#include "lmforge/engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct lmf_request {
    uint64_t id;
    lmf_request_params p; /* prompt and stop_ids point at our own copies */
    int32_t *tokens;      /* prompt then output */
    int n_tokens, cap, n_prompt;
    int n_computed;   /* tokens whose K/V are in the cache */
    int32_t *table;   /* logical block -> pool block */
    uint64_t *hashes; /* chain hash of each full block */
    int n_table, table_cap, n_hashed;
    lmf_rng rng;
    int cancelled;
    lmf_finish finished; /* set during a step, acted on after it */
    lmf_request *next;   /* incoming queue link */
};

struct lmf_engine {
    lmf_model *m;
    lmf_engine_config c;
    lmf_kv_pool kv;
    lmf_block_mgr bm;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lmf_request *in_head, *in_tail;
    int n_in;
    uint64_t *cancels;
    int n_cancels, cap_cancels;
    uint64_t next_id;
    /* engine thread only */
    lmf_request **waiting, **running;
    int n_waiting, n_running;
    lmf_seq_step *steps;
    lmf_request **stepped;
    lmf_request **to_wake; /* given tokens by the last step; their on_wake not called yet */
    int n_wake;
    float *logits;
    lmf_sampling_work work;
    lmf_engine_stats st;
};

void lmf_engine_config_defaults(lmf_engine_config *c) {
    c->kv_dtype = LMF_KV_F32;
    c->block_size = 16;
    c->n_blocks = 256;
    c->max_batch_tokens = 512;
    c->max_running = 64;
    c->max_waiting = 256;
    c->prefix_caching = 1;
    c->step = NULL, c->step_user = NULL;
}

int lmf_engine_create(lmf_engine **out, lmf_model *m, const lmf_engine_config *c) {
    if (c->block_size <= 0 || c->n_blocks <= 0 || c->max_batch_tokens <= 0 || c->max_running <= 0 ||
        c->max_waiting <= 0)
        return lmf_errorf(LMF_EINVAL,
                          "engine: block_size, n_blocks, max_batch_tokens, max_running and "
                          "max_waiting must be positive");
    lmf_engine *e = calloc(1, sizeof *e);
    if (!e) return lmf_errorf(LMF_ENOMEM, "engine: out of memory");
    e->m = m, e->c = *c, e->next_id = 1;
    int rc = lmf_kv_pool_create_dtype(&e->kv, m, c->block_size, c->n_blocks, c->kv_dtype);
    if (!rc) rc = lmf_block_mgr_init(&e->bm, c->n_blocks, c->block_size);
    if (!rc) rc = lmf_sampling_work_init(&e->work, lmf_model_vocab(m));
    int cap = c->max_running + c->max_waiting + 1;
    e->waiting = calloc((size_t)cap, sizeof *e->waiting);
    e->running = calloc((size_t)cap, sizeof *e->running);
    e->steps = calloc((size_t)cap, sizeof *e->steps);
    e->stepped = calloc((size_t)cap, sizeof *e->stepped);
    e->to_wake = calloc((size_t)cap, sizeof *e->to_wake);
    e->logits = malloc(sizeof(float) * (size_t)lmf_model_vocab(m) * cap);
    if (!rc &&
        (!e->waiting || !e->running || !e->steps || !e->stepped || !e->to_wake || !e->logits))
        rc = lmf_errorf(LMF_ENOMEM, "engine: out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (rc) {
        lmf_engine_free(e);
        return rc;
    }
    *out = e;
    return 0;
}

static void request_free(lmf_request *r) {
    if (!r) return;
    free(r->tokens), free((void *)r->p.stop_ids), free(r->table), free(r->hashes);
    free(r);
}

void lmf_engine_free(lmf_engine *e) {
    if (!e) return;
    for (int i = 0; i < e->n_waiting; i++) request_free(e->waiting[i]);
    for (int i = 0; i < e->n_running; i++) request_free(e->running[i]);
    for (lmf_request *r = e->in_head, *n; r; r = n) n = r->next, request_free(r);
    lmf_kv_pool_free(&e->kv);
    lmf_block_mgr_free(&e->bm);
    lmf_sampling_work_free(&e->work);
    free(e->waiting), free(e->running), free(e->steps), free(e->stepped), free(e->to_wake),
        free(e->logits), free(e->cancels);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

int lmf_engine_submit(lmf_engine *e, const lmf_request_params *p, uint64_t *id) {
    const lmf_model_config *mc = &e->m->cfg;
    int capacity = e->c.n_blocks * e->c.block_size;
    if (p->n_prompt <= 0) return lmf_errorf(LMF_EINVAL, "prompt: empty");
    if (p->max_tokens <= 0)
        return lmf_errorf(LMF_EINVAL, "max_tokens must be positive (got %d)", p->max_tokens);
    for (int i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= lmf_model_vocab(e->m))
            return lmf_errorf(LMF_EINVAL, "prompt: token %d outside the vocabulary", p->prompt[i]);
    if (p->n_prompt >= mc->max_pos)
        return lmf_errorf(LMF_EINVAL, "prompt: %d tokens, the model's context is %d", p->n_prompt,
                          mc->max_pos);
    if ((int64_t)p->n_prompt + p->max_tokens > capacity)
        return lmf_errorf(LMF_EINVAL,
                          "prompt (%d tokens) + max_tokens (%d) exceed the KV cache (%d tokens)",
                          p->n_prompt, p->max_tokens, capacity);
    int rc = lmf_sampling_validate(&p->sampling);
    if (rc) return rc;
    lmf_request *r = calloc(1, sizeof *r);
    if (!r) return lmf_errorf(LMF_ENOMEM, "engine: out of memory");
    r->p = *p;
    r->cap = p->n_prompt + p->max_tokens + 1;
    r->tokens = malloc(sizeof *r->tokens * (size_t)r->cap);
    r->table_cap = (r->cap + e->c.block_size - 1) / e->c.block_size;
    r->table = malloc(sizeof *r->table * (size_t)r->table_cap);
    r->hashes = malloc(sizeof *r->hashes * (size_t)r->table_cap);
    int32_t *stops = malloc(sizeof *stops * (size_t)(p->n_stop_ids + 1));
    if (!r->tokens || !r->table || !r->hashes || !stops) {
        free(stops);
        request_free(r);
        return lmf_errorf(LMF_ENOMEM, "engine: out of memory");
    }
    memcpy(r->tokens, p->prompt, sizeof *r->tokens * (size_t)p->n_prompt);
    if (p->n_stop_ids) memcpy(stops, p->stop_ids, sizeof *stops * (size_t)p->n_stop_ids);
    r->p.stop_ids = stops;
    r->p.prompt = NULL;
    r->n_tokens = r->n_prompt = p->n_prompt;
    pthread_mutex_lock(&e->mu);
    if (e->n_in + e->st.waiting >= e->c.max_waiting) {
        pthread_mutex_unlock(&e->mu);
        request_free(r);
        return 1;
    }
    r->id = e->next_id++;
    uint64_t rid = r->id; /* r is the engine thread's once queued: it may finish and be freed */
    lmf_rng_seed(&r->rng,
                 p->has_seed ? p->seed : r->id * 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL));
    if (e->in_tail)
        e->in_tail->next = r;
    else
        e->in_head = r;
    e->in_tail = r;
    e->n_in++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (id) *id = rid;
    return 0;
}

void lmf_engine_cancel(lmf_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cap_cancels) {
        int cap = e->cap_cancels ? 2 * e->cap_cancels : 16;
        uint64_t *c = realloc(e->cancels, sizeof *c * (size_t)cap);
        if (c) e->cancels = c, e->cap_cancels = cap;
    }
    if (e->n_cancels < e->cap_cancels) e->cancels[e->n_cancels++] = id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void lmf_engine_wait(lmf_engine *e, int timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&e->mu);
    if (!e->in_head && !e->n_cancels) pthread_cond_timedwait(&e->cv, &e->mu, &ts);
    pthread_mutex_unlock(&e->mu);
}

/* Gives back a request's blocks (the published ones stay findable for prefix reuse). */
static void drop_blocks(lmf_engine *e, lmf_request *r) {
    for (int i = 0; i < r->n_table; i++) lmf_block_release(&e->bm, r->table[i]);
    r->n_table = r->n_hashed = r->n_computed = 0;
}

/* The wakes owed for the last step's tokens (see lmf_request_params.on_wake). */
static void wake_all(void *arg) {
    lmf_engine *e = arg;
    for (int i = 0; i < e->n_wake; i++)
        e->to_wake[i]->p.on_wake(e->to_wake[i], e->to_wake[i]->p.user);
    e->n_wake = 0;
}

static void finish(lmf_engine *e, lmf_request *r, lmf_finish why) {
    for (int i = 0; i < e->n_wake; i++) /* on_finish wakes its waiter itself */
        if (e->to_wake[i] == r) {
            e->to_wake[i] = e->to_wake[--e->n_wake];
            break;
        }
    drop_blocks(e, r);
    e->st.requests_done++;
    if (r->p.on_finish) r->p.on_finish(r, why, r->p.user);
    request_free(r);
}

static void remove_at(lmf_request **list, int *n, int i) {
    memmove(list + i, list + i + 1, sizeof *list * (size_t)(*n - i - 1));
    (*n)--;
}

/* The hash chain starts from the request's adapter: the same tokens under another adapter have
 * other keys and values, so their blocks must never be shared. */
static uint64_t chain_root(const lmf_request *r) {
    return r->p.lora ? (uint64_t)(uintptr_t)r->p.lora * 0x9E3779B97F4A7C15ull | 1 : 0;
}

/* Publishes the request's newly completed full blocks under their chain hashes. */
static void publish_full_blocks(lmf_engine *e, lmf_request *r) {
    int bs = e->c.block_size;
    while (e->c.prefix_caching && r->n_hashed < r->n_computed / bs) {
        int b = r->n_hashed;
        uint64_t parent = b ? r->hashes[b - 1] : chain_root(r);
        r->hashes[b] = lmf_block_hash(parent, r->tokens + (size_t)b * bs, bs);
        lmf_block_publish(&e->bm, r->table[b], r->hashes[b]);
        r->n_hashed++;
    }
}

/* Reuses cached blocks for the longest known prefix, keeping at least one token to compute. */
static void reuse_prefix(lmf_engine *e, lmf_request *r) {
    int bs = e->c.block_size;
    if (!e->c.prefix_caching) return;
    while ((r->n_table + 1) * bs <= r->n_tokens - 1) {
        int b = r->n_table;
        uint64_t h =
            lmf_block_hash(b ? r->hashes[b - 1] : chain_root(r), r->tokens + (size_t)b * bs, bs);
        int blk = lmf_block_lookup(&e->bm, h);
        if (blk < 0) break;
        r->table[b] = blk;
        r->hashes[b] = h;
        r->n_table++, r->n_hashed++;
        r->n_computed += bs;
        e->st.prefix_hit_tokens += bs;
    }
}

/* Makes the table cover `upto` tokens; 0 when blocks ran out. */
static int grow_table(lmf_engine *e, lmf_request *r, int upto) {
    while (r->n_table * e->c.block_size < upto) {
        int b = lmf_block_alloc(&e->bm);
        if (b < 0) return 0;
        r->table[r->n_table++] = b;
    }
    return 1;
}

/* Preemption by recompute: the newest running request gives its blocks back and waits at the
 * head of the queue, keeping its generated tokens (and RNG) so nothing is sampled twice. */
static void preempt_newest(lmf_engine *e) {
    lmf_request *r = e->running[e->n_running - 1];
    e->n_running--;
    drop_blocks(e, r);
    memmove(e->waiting + 1, e->waiting, sizeof *e->waiting * (size_t)e->n_waiting);
    e->waiting[0] = r;
    e->n_waiting++;
    e->st.preemptions++;
}

static int is_stop(const lmf_request *r, int32_t tok, int32_t eos) {
    if (tok == eos && !r->p.ignore_eos) return 1;
    for (int i = 0; i < r->p.n_stop_ids; i++)
        if (r->p.stop_ids[i] == tok) return 1;
    return 0;
}

static void take_incoming(lmf_engine *e) {
    pthread_mutex_lock(&e->mu);
    for (lmf_request *r = e->in_head, *n; r; r = n) {
        n = r->next;
        r->next = NULL;
        e->waiting[e->n_waiting++] = r;
    }
    e->in_head = e->in_tail = NULL;
    e->n_in = 0;
    for (int c = 0; c < e->n_cancels; c++) {
        for (int i = 0; i < e->n_waiting; i++)
            if (e->waiting[i]->id == e->cancels[c]) e->waiting[i]->cancelled = 1;
        for (int i = 0; i < e->n_running; i++)
            if (e->running[i]->id == e->cancels[c]) e->running[i]->cancelled = 1;
    }
    e->n_cancels = 0;
    e->st.waiting = e->n_waiting;
    pthread_mutex_unlock(&e->mu);
    for (int i = e->n_waiting - 1; i >= 0; i--)
        if (e->waiting[i]->cancelled) {
            lmf_request *r = e->waiting[i];
            remove_at(e->waiting, &e->n_waiting, i);
            finish(e, r, LMF_FINISH_CANCELLED);
        }
    for (int i = e->n_running - 1; i >= 0; i--)
        if (e->running[i]->cancelled) {
            lmf_request *r = e->running[i];
            remove_at(e->running, &e->n_running, i);
            finish(e, r, LMF_FINISH_CANCELLED);
        }
}

/* Puts the next `chunk` tokens of r into slot n of this step's batch. */
static void add_step(lmf_engine *e, int n, lmf_request *r, int chunk) {
    e->stepped[n] = r;
    e->steps[n] = (lmf_seq_step){r->tokens + r->n_computed,
                                 chunk,
                                 r->n_computed,
                                 r->table,
                                 r->n_table,
                                 r->n_computed + chunk == r->n_tokens,
                                 r->p.lora};
}

/* Chooses this step's work: chunks for running requests (oldest first), then new admissions
 * while the token budget, the running limit and the KV blocks allow. */
static int schedule(lmf_engine *e) {
    int budget = e->c.max_batch_tokens, n = 0;
    for (int i = 0; i < e->n_running && budget > 0; i++) {
        lmf_request *r = e->running[i];
        int chunk = r->n_tokens - r->n_computed;
        if (chunk > budget) chunk = budget;
        while (!grow_table(e, r, r->n_computed + chunk)) {
            if (e->n_running - 1 == i) { /* r is itself the newest: it waits */
                preempt_newest(e);
                chunk = 0;
                break;
            }
            preempt_newest(e);
        }
        if (!chunk) break;
        add_step(e, n++, r, chunk);
        budget -= chunk;
    }
    while (budget > 0 && e->n_waiting > 0 && e->n_running < e->c.max_running) {
        lmf_request *r = e->waiting[0];
        reuse_prefix(e, r);
        int chunk = r->n_tokens - r->n_computed;
        if (chunk > budget) chunk = budget;
        if (!grow_table(e, r, r->n_computed + chunk)) {
            drop_blocks(e, r); /* keep the queue order; try again when blocks come back */
            break;
        }
        remove_at(e->waiting, &e->n_waiting, 0);
        e->running[e->n_running++] = r;
        add_step(e, n++, r, chunk);
        budget -= chunk;
    }
    return n;
}

/* Orders the step's sequences by adapter (stable), so the model applies each adapter to one
 * contiguous run of rows with one pair of GEMMs. */
static void group_by_adapter(lmf_engine *e, int n) {
    for (int i = 1; i < n; i++) {
        lmf_seq_step s = e->steps[i];
        lmf_request *r = e->stepped[i];
        int j = i;
        for (; j > 0 && (uintptr_t)e->steps[j - 1].lora > (uintptr_t)s.lora; j--) {
            e->steps[j] = e->steps[j - 1];
            e->stepped[j] = e->stepped[j - 1];
        }
        e->steps[j] = s, e->stepped[j] = r;
    }
}

int lmf_engine_step(lmf_engine *e) {
    take_incoming(e);
    int n = schedule(e);
    group_by_adapter(e, n);
    if (n > 0) {
        /* the last step's wakes go out from inside this one (lmf_model's step_hook) */
        e->m->step_hook = e->n_wake ? wake_all : NULL, e->m->step_hook_arg = e;
        int rc = e->c.step ? e->c.step(e->c.step_user, e->m, &e->kv, e->steps, n, e->logits)
                           : lmf_model_step(e->m, &e->kv, e->steps, n, e->logits);
        e->m->step_hook = NULL;
        wake_all(e); /* none left unless the step failed before calling the hook */
        if (rc) return rc;
        int row = 0;
        int32_t eos = e->m->cfg.eos_id;
        for (int i = 0; i < n; i++) {
            lmf_request *r = e->stepped[i];
            if (r->n_computed == 0 && r->n_tokens == r->n_prompt)
                e->st.prompt_tokens += r->n_prompt;
            r->n_computed += e->steps[i].n_new;
            publish_full_blocks(e, r);
            if (!e->steps[i].want_logits) continue;
            lmf_sample_result s;
            int V = lmf_model_vocab(e->m);
            rc = lmf_sample(e->logits + (size_t)row++ * V, V, &r->p.sampling, r->tokens,
                            r->n_prompt, r->tokens + r->n_prompt, r->n_tokens - r->n_prompt,
                            &r->rng, &e->work, &s);
            if (rc) return rc;
            r->tokens[r->n_tokens++] = s.token;
            e->st.generation_tokens++;
            lmf_finish why = LMF_FINISH_NONE;
            if (r->p.on_token && r->p.on_token(r, &s, r->p.user)) why = LMF_FINISH_STOP;
            if (is_stop(r, s.token, eos))
                why = LMF_FINISH_STOP;
            else if (r->n_tokens - r->n_prompt >= r->p.max_tokens ||
                     r->n_tokens >= e->m->cfg.max_pos)
                why = why ? why : LMF_FINISH_LENGTH;
            r->finished = why; /* acted on below, once every sequence of the step is sampled */
            if (r->p.on_wake) e->to_wake[e->n_wake++] = r;
        }
        for (int i = e->n_running - 1; i >= 0; i--)
            if (e->running[i]->finished) {
                lmf_request *r = e->running[i];
                remove_at(e->running, &e->n_running, i);
                finish(e, r, r->finished);
            }
    }
    pthread_mutex_lock(&e->mu);
    e->st.running = e->n_running;
    e->st.waiting = e->n_waiting + e->n_in;
    int active = e->st.running + e->st.waiting;
    pthread_mutex_unlock(&e->mu);
    if (n == 0 || active == 0) wake_all(e); /* no step to carry them */
    return active;
}

void lmf_engine_stats_get(lmf_engine *e, lmf_engine_stats *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->st;
    s->blocks_total = e->c.n_blocks;
    s->blocks_used = e->c.n_blocks - lmf_block_available(&e->bm);
    s->block_lookups = e->bm.lookups;
    s->block_hits = e->bm.hits;
    pthread_mutex_unlock(&e->mu);
}

uint64_t lmf_request_id(const lmf_request *r) {
    return r->id;
}

const int32_t *lmf_request_output(const lmf_request *r, int *n) {
    *n = r->n_tokens - r->n_prompt;
    return r->tokens + r->n_prompt;
}

int lmf_request_prompt_tokens(const lmf_request *r) {
    return r->n_prompt;
}
