/* A tensor-parallel serving group's step channel (include/lmforge/tp_group.h). A step travels
 * as int32s: a header {kind, number of sequences, total ints}, then per sequence {n_new, start,
 * n_table, want_logits}, then each sequence's new tokens and block table. The first broadcast
 * always carries FIRST ints, 1 KiB (a decode step of a few sequences fits whole); a longer step
 * sends the rest in a second one. */
#include "lmforge/tp_group.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lmforge/core.h"

enum { MSG_STEP = 1, MSG_STOP = 2, HEAD = 3, PER_SEQ = 4, FIRST = 256 };

struct lmf_tp_group {
    lmf_comm *ctrl;
    lmf_model *m;
    int32_t *msg; /* the step being sent or received */
    size_t cap;   /* ints */
    lmf_seq_step *seqs;
    int seq_cap;
    int broken; /* rank 0: a step failed after it was sent */
};

static int reserve(lmf_tp_group *g, size_t ints) {
    if (ints <= g->cap) return 0;
    size_t cap = g->cap * 2 > ints ? g->cap * 2 : ints;
    int32_t *p = realloc(g->msg, sizeof *p * cap);
    if (!p)
        return lmf_errorf(LMF_ENOMEM, "tensor parallel: no memory for a step of %zu ints", ints);
    g->msg = p, g->cap = cap;
    return 0;
}

int lmf_tp_group_create(lmf_tp_group **out, lmf_comm *ctrl, lmf_model *m) {
    lmf_tp_group *g = calloc(1, sizeof *g);
    if (!g || reserve(g, FIRST)) {
        free(g);
        return lmf_errorf(LMF_ENOMEM, "tensor parallel: out of memory");
    }
    memset(g->msg, 0, sizeof *g->msg * FIRST); /* a short step sends FIRST ints all the same */
    g->ctrl = ctrl, g->m = m;
    *out = g;
    return 0;
}

void lmf_tp_group_free(lmf_tp_group *g) {
    if (!g) return;
    free(g->msg);
    free(g->seqs);
    free(g);
}

/* Sends msg (msg[2] ints) from rank 0, or receives it on the others (the first piece already
 * in msg). */
static int send_rest(lmf_tp_group *g) {
    size_t total = (size_t)g->msg[2];
    if (total <= FIRST) return 0;
    int rc = reserve(g, total);
    if (rc) return rc;
    return lmf_comm_broadcast(g->ctrl, g->msg + FIRST, sizeof(int32_t) * (total - FIRST), 0);
}

int lmf_tp_group_step(void *group, lmf_model *m, lmf_kv_pool *kv, const lmf_seq_step *seqs,
                      int n_seqs, float *logits) {
    lmf_tp_group *g = group;
    if (g->broken)
        return lmf_errorf(g->broken, "tensor parallel: the group is broken by an earlier failed "
                                     "step; restart the server");
    size_t total = HEAD + (size_t)PER_SEQ * n_seqs;
    for (int i = 0; i < n_seqs; i++) total += (size_t)seqs[i].n_new + seqs[i].n_table;
    if (total > INT32_MAX)
        return lmf_errorf(LMF_ERANGE, "tensor parallel: a step of %zu ints is too long", total);
    int rc = reserve(g, total > FIRST ? total : FIRST);
    if (rc) return rc;
    int32_t *p = g->msg;
    *p++ = MSG_STEP, *p++ = n_seqs, *p++ = (int32_t)total;
    for (int i = 0; i < n_seqs; i++) {
        *p++ = seqs[i].n_new, *p++ = seqs[i].start, *p++ = seqs[i].n_table;
        *p++ = seqs[i].want_logits;
    }
    for (int i = 0; i < n_seqs; i++) {
        memcpy(p, seqs[i].tokens, sizeof *p * seqs[i].n_new);
        p += seqs[i].n_new;
        memcpy(p, seqs[i].table, sizeof *p * seqs[i].n_table);
        p += seqs[i].n_table;
    }
    if ((rc = lmf_comm_broadcast(g->ctrl, g->msg, sizeof(int32_t) * FIRST, 0)) ||
        (rc = send_rest(g)) || (rc = lmf_model_step(m, kv, seqs, n_seqs, logits)))
        g->broken = rc;
    return rc;
}

int lmf_tp_group_stop(lmf_tp_group *g) {
    g->msg[0] = MSG_STOP, g->msg[1] = 0, g->msg[2] = HEAD;
    return lmf_comm_broadcast(g->ctrl, g->msg, sizeof(int32_t) * FIRST, 0);
}

/* Waits for r, polling: spins 50 us, then sleeps between tests, growing from 2 us to 200 us,
 * and to 2 ms once idle for a second (an idle server's ranks leave the cores alone; the first
 * step after a pause waits at most that long). */
static int wait_idle(lmf_comm_req **r) {
    double start = lmf_time_sec();
    long pause = 2000;
    for (;;) {
        int done = 0, rc = lmf_comm_test(r, &done);
        if (rc || done) return rc;
        double idle = lmf_time_sec() - start;
        if (idle < 50e-6) continue;
        struct timespec ts = {0, pause};
        nanosleep(&ts, NULL);
        long cap = idle > 1.0 ? 2000000L : 200000L;
        pause = pause * 2 > cap ? cap : pause * 2;
    }
}

/* The received step as lmf_seq_steps pointing into msg. */
static int unpack(lmf_tp_group *g, int *n_seqs) {
    int32_t *h = g->msg, n = h[1];
    size_t total = (size_t)h[2], used = HEAD + (size_t)PER_SEQ * (n > 0 ? n : 0);
    if (n < 0 || used > total)
        return lmf_errorf(LMF_EFORMAT, "tensor parallel: malformed step (%d sequences)", n);
    if (n > g->seq_cap) {
        lmf_seq_step *s = realloc(g->seqs, sizeof *s * (size_t)n);
        if (!s) return lmf_errorf(LMF_ENOMEM, "tensor parallel: out of memory");
        g->seqs = s, g->seq_cap = n;
    }
    const int32_t *meta = h + HEAD, *p = h + used;
    for (int i = 0; i < n; i++, meta += PER_SEQ) {
        if (meta[0] < 0 || meta[2] < 0 ||
            (size_t)(p - h) + (size_t)meta[0] + (size_t)meta[2] > total)
            return lmf_errorf(LMF_EFORMAT, "tensor parallel: malformed step (sequence %d)", i);
        g->seqs[i] = (lmf_seq_step){p, meta[0], meta[1], p + meta[0], meta[2], meta[3], NULL};
        p += meta[0] + meta[2];
    }
    *n_seqs = n;
    return 0;
}

int lmf_tp_group_serve(lmf_tp_group *g, int block_size, int n_blocks, lmf_kv_dtype kv_dtype) {
    lmf_kv_pool kv;
    int rc = lmf_kv_pool_create_dtype(&kv, g->m, block_size, n_blocks, kv_dtype);
    while (!rc) {
        lmf_comm_req *r = NULL;
        if ((rc = lmf_comm_ibroadcast(g->ctrl, g->msg, sizeof(int32_t) * FIRST, 0, &r)) ||
            (rc = wait_idle(&r)))
            break;
        if (g->msg[0] == MSG_STOP) break;
        int n = 0;
        if (g->msg[0] != MSG_STEP)
            rc = lmf_errorf(LMF_EFORMAT, "tensor parallel: unknown message %d", g->msg[0]);
        if (!rc) rc = send_rest(g);
        if (!rc) rc = unpack(g, &n);
        if (!rc) rc = lmf_model_step(g->m, &kv, g->seqs, n, NULL);
    }
    lmf_kv_pool_free(&kv);
    return rc;
}
