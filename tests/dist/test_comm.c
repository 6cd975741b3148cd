/* lmf_comm collectives checked against closed-form values: rank r fills its buffers from a
 * formula of (r, index), so every sum, gather and broadcast is known exactly. Run alone (a world
 * of one) and under mpirun with 2 and 4 ranks (tests/CMakeLists.txt). Checks odd sizes, pieces
 * (max_piece), in-place forms, several outstanding requests completed out of order, the bf16 sum
 * against its stated rounding bound, bit-identical results on every rank, and sub-communicators.
 * LMF_TEST_NODES (optional) is the number of nodes the job spans. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/comm.h"
#include "lmforge/zero.h"
#include "lmforge/core.h"
#include "test.h"

static int P, R;

/* integer-valued (exact in f32 sums) with a dyadic fraction */
static float f(int r, size_t i) {
    return (float)((r + 1) * (int)(i % 13 + 1)) + 0.25f * (float)(i % 3);
}
static double fsum(size_t i) {
    double s = 0;
    for (int r = 0; r < P; r++) s += f(r, i);
    return s;
}

/* Every rank holds the same bytes? (gathers them to all and compares with rank 0's). */
static int same_everywhere(lmf_comm *c, const void *buf, size_t bytes) {
    int n = lmf_comm_size(c);
    uint8_t *all = malloc(bytes * (size_t)n + 1);
    if (lmf_comm_allgather(c, buf, all, bytes / 2, LMF_BF16)) return 0; /* bytes is even */
    int ok = 1;
    for (int r = 1; r < n; r++) ok &= !memcmp(all, all + (size_t)r * bytes, bytes);
    free(all);
    return ok;
}

static void test_allreduce_f32(lmf_comm *c) {
    static const size_t sizes[] = {0, 1, 7, 4099, 1000003};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        float *a = malloc((n + 1) * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
        for (size_t i = 0; i < n; i++) a[i] = b[i] = f(R, i);
        CHECK(lmf_comm_allreduce(c, a, n, LMF_F32, LMF_REDUCE_SUM) == 0);
        CHECK(lmf_comm_allreduce(c, b, n, LMF_F32, LMF_REDUCE_AVG) == 0);
        size_t bad = 0, badavg = 0;
        for (size_t i = 0; i < n; i++) {
            bad += a[i] != (float)fsum(i);
            badavg += fabs(b[i] - fsum(i) / P) > 1e-6 * fabs(fsum(i) / P);
        }
        CHECK_MSG(bad == 0, "all-reduce sum n=%zu: %zu wrong", n, bad);
        CHECK_MSG(badavg == 0, "all-reduce avg n=%zu: %zu wrong", n, badavg);
        if (n) CHECK(same_everywhere(c, b, n * sizeof(float)));
        free(a);
        free(b);
    }
    /* split into pieces of 1000 elements under one request */
    size_t n = 4099;
    float *a = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = f(R, i);
    lmf_comm_set_max_piece(c, 1000);
    CHECK(lmf_comm_allreduce(c, a, n, LMF_F32, LMF_REDUCE_SUM) == 0);
    lmf_comm_set_max_piece(c, 0);
    lmf_comm_set_max_piece(c, (size_t)1 << 30);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += a[i] != (float)fsum(i);
    CHECK_MSG(bad == 0, "pieces: %zu wrong", bad);
    free(a);
}

static void test_allreduce_bf16(lmf_comm *c) {
    size_t n = 100003;
    uint16_t *h = malloc(n * 2), *h2 = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        /* values that do not sum exactly in bf16: mixed signs and magnitudes */
        float v = (float)(((int)(i * 7919 + (size_t)R * 104729) % 2001) - 1000) / 37.0f;
        h[i] = h2[i] = lmf_f32_to_bf16(v);
    }
    double *exact = calloc(n, sizeof(double)), *mag = calloc(n, sizeof(double));
    for (int r = 0; r < P; r++)
        for (size_t i = 0; i < n; i++) {
            float v = (float)(((int)(i * 7919 + (size_t)r * 104729) % 2001) - 1000) / 37.0f;
            double x = lmf_bf16_to_f32(lmf_f32_to_bf16(v));
            exact[i] += x;
            mag[i] += fabs(x);
        }
    CHECK(lmf_comm_allreduce(c, h, n, LMF_BF16, LMF_REDUCE_SUM) == 0);
    CHECK(lmf_comm_allreduce(c, h2, n, LMF_BF16, LMF_REDUCE_AVG) == 0);
    /* bound from comm.h: (P-1) roundings of at most 2^-8 relative to the partial sums, plus the
     * final rounding of the result itself (P == 1: exact) */
    double u = 1.0 / 256, worst = 0, worst_avg = 0;
    size_t bad = 0, bad_avg = 0;
    for (size_t i = 0; i < n; i++) {
        double bound = (P - 1) * u * mag[i] * 1.01;
        double e = fabs(lmf_bf16_to_f32(h[i]) - exact[i]);
        double ea = fabs(lmf_bf16_to_f32(h2[i]) - exact[i] / P);
        bad += e > bound;
        bad_avg += ea > bound / P + u * fabs(exact[i] / P) * 1.01;
        if (mag[i] > 0 && e / mag[i] > worst) worst = e / mag[i];
        if (mag[i] > 0 && ea * P / mag[i] > worst_avg) worst_avg = ea * P / mag[i];
    }
    CHECK_MSG(bad == 0, "bf16 sum: %zu beyond the bound (worst %.3g of sum|x|)", bad, worst);
    CHECK_MSG(bad_avg == 0, "bf16 avg: %zu beyond the bound", bad_avg);
    if (R == 0)
        printf("bf16 all-reduce, %d ranks: worst error %.3g x sum|x| (bound %.3g)\n", P, worst,
               (P - 1) * u);
    CHECK(same_everywhere(c, h, n * 2));
    CHECK(same_everywhere(c, h2, n * 2));
    uint16_t *f16 = malloc(8);
    CHECK(lmf_comm_allreduce(c, f16, 4, LMF_F16, LMF_REDUCE_SUM) == LMF_EUNSUPPORTED);
    free(f16);
    free(h);
    free(h2);
    free(exact);
    free(mag);
}

static void test_reduce_scatter(lmf_comm *c) {
    static const size_t chunks[] = {1, 5, 33333};
    for (size_t s = 0; s < 3; s++) {
        size_t k = chunks[s], n = k * (size_t)P;
        float *send = malloc(n * sizeof(float)), *recv = malloc(k * sizeof(float)),
              *inpl = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) send[i] = inpl[i] = f(R, i);
        CHECK(lmf_comm_reduce_scatter(c, send, recv, k, LMF_F32, LMF_REDUCE_SUM) == 0);
        CHECK(lmf_comm_reduce_scatter(c, inpl, inpl, k, LMF_F32, LMF_REDUCE_AVG) == 0);
        size_t bad = 0, bad_in = 0;
        for (size_t j = 0; j < k; j++) {
            double e = fsum((size_t)R * k + j);
            bad += recv[j] != (float)e;
            bad_in += fabs(inpl[j] - e / P) > 1e-6 * e / P;
        }
        CHECK_MSG(bad == 0, "reduce-scatter chunk %zu: %zu wrong", k, bad);
        CHECK_MSG(bad_in == 0, "reduce-scatter in place, avg, chunk %zu: %zu wrong", k, bad_in);
        free(send);
        free(recv);
        free(inpl);
    }
    /* bf16 reduce-scatter of small integers is exact */
    size_t k = 9;
    uint16_t *hs = malloc(k * (size_t)P * 2), *hr = malloc(k * 2);
    for (size_t i = 0; i < k * (size_t)P; i++) hs[i] = lmf_f32_to_bf16((float)(R + (int)i % 4));
    CHECK(lmf_comm_reduce_scatter(c, hs, hr, k, LMF_BF16, LMF_REDUCE_SUM) == 0);
    size_t bad = 0;
    for (size_t j = 0; j < k; j++) {
        double e = 0;
        for (int r = 0; r < P; r++) e += r + (int)(((size_t)R * k + j) % 4);
        bad += lmf_bf16_to_f32(hr[j]) != (float)e;
    }
    CHECK_MSG(bad == 0, "bf16 reduce-scatter: %zu wrong", bad);
    free(hs);
    free(hr);
}

static void test_allgather(lmf_comm *c) {
    static const size_t chunks[] = {1, 3, 12347};
    for (size_t s = 0; s < 3; s++) {
        size_t k = chunks[s];
        float *send = malloc(k * sizeof(float)), *recv = malloc(k * (size_t)P * sizeof(float));
        for (size_t j = 0; j < k; j++) send[j] = (float)(R * 100000 + (int)j);
        CHECK(lmf_comm_allgather(c, send, recv, k, LMF_F32) == 0);
        size_t bad = 0;
        for (int r = 0; r < P; r++)
            for (size_t j = 0; j < k; j++)
                bad += recv[(size_t)r * k + j] != (float)(r * 100000 + (int)j);
        CHECK_MSG(bad == 0, "all-gather chunk %zu: %zu wrong", k, bad);
        /* in place: this rank's part already at its offset */
        memset(recv, 0, k * (size_t)P * sizeof(float));
        memcpy(recv + (size_t)R * k, send, k * sizeof(float));
        CHECK(lmf_comm_allgather(c, recv + (size_t)R * k, recv, k, LMF_F32) == 0);
        bad = 0;
        for (int r = 0; r < P; r++)
            for (size_t j = 0; j < k; j++)
                bad += recv[(size_t)r * k + j] != (float)(r * 100000 + (int)j);
        CHECK_MSG(bad == 0, "all-gather in place chunk %zu: %zu wrong", k, bad);
        free(send);
        free(recv);
    }
}

/* Variable-size parts (ZeRO's uneven pieces: the last ranks' shorter or empty) and the
 * double all-reduce, through the shard plan that uses them. */
static void test_vcollectives(lmf_comm *c) {
    size_t counts[64];
    for (int r = 0; r < P; r++) counts[r] = r == P - 1 ? 0 : (size_t)(3 * r + 5);
    size_t total = 0, before = 0;
    for (int r = 0; r < P; r++) total += counts[r], before += r < R ? counts[r] : 0;
    float *all = malloc((total + 1) * sizeof(float)), *mine = malloc((counts[R] + 1) * 4);
    float *recv = malloc((counts[R] + 1) * sizeof(float));
    for (size_t i = 0; i < counts[R]; i++) mine[i] = f(R, before + i);
    lmf_comm_req *q;
    CHECK(lmf_comm_iallgatherv(c, mine, all, counts, LMF_F32, &q) == 0 && lmf_comm_wait(&q) == 0);
    size_t bad = 0;
    for (int r = 0, o = 0; r < P; o += (int)counts[r], r++)
        for (size_t i = 0; i < counts[r]; i++) bad += all[o + i] != f(r, (size_t)o + i);
    CHECK_MSG(bad == 0, "all-gather v: %zu wrong", bad);
    /* gather v to the last rank (tensor parallelism's logits go to rank 0) */
    memset(all, 0, (total + 1) * sizeof(float));
    CHECK(lmf_comm_igatherv(c, mine, R == P - 1 ? all : NULL, counts, LMF_F32, P - 1, &q) == 0 &&
          lmf_comm_wait(&q) == 0);
    bad = 0;
    for (int r = 0, o = 0; R == P - 1 && r < P; o += (int)counts[r], r++)
        for (size_t i = 0; i < counts[r]; i++) bad += all[o + i] != f(r, (size_t)o + i);
    CHECK_MSG(bad == 0, "gather v: %zu wrong", bad);
    CHECK(lmf_comm_gatherv(c, mine, all, counts, LMF_F32, P) == LMF_EINVAL);
    for (size_t i = 0; i < total; i++) all[i] = f(R, i);
    CHECK(lmf_comm_ireduce_scatterv(c, all, recv, counts, LMF_F32, LMF_REDUCE_SUM, &q) == 0 &&
          lmf_comm_wait(&q) == 0);
    bad = 0;
    for (size_t i = 0; i < counts[R]; i++) bad += recv[i] != (float)fsum(before + i);
    CHECK_MSG(bad == 0, "reduce-scatter v: %zu wrong", bad);
    double d[2] = {1e-17 * (R + 1), 1.0 + R};
    CHECK(lmf_comm_allreduce_f64(c, d, 2) == 0);
    CHECK(fabs(d[0] - 1e-17 * P * (P + 1) / 2) < 1e-30 && d[1] == P + P * (P - 1) / 2.0);
    /* a plan over two units, gathered back whole from every rank's shard */
    size_t off[2] = {0, 37}, len[2] = {37, 11 * (size_t)P + 1};
    lmf_shard_plan plan;
    CHECK(lmf_shard_plan_init(&plan, off, len, 2, P, R) == 0);
    float flat[64 * 12], shard[64 * 12];
    for (size_t i = 0; i < off[1] + len[1]; i++) flat[i] = f(0, i);
    lmf_shard_extract(&plan, flat, shard);
    memset(flat, 0, sizeof flat);
    for (int u = 0; u < 2; u++)
        CHECK(lmf_shard_igather(c, &plan, u, shard, flat, &q) == 0 && lmf_comm_wait(&q) == 0);
    bad = 0;
    for (size_t i = 0; i < off[1] + len[1]; i++) bad += flat[i] != f(0, i);
    CHECK_MSG(bad == 0, "shard plan gather: %zu wrong", bad);
    lmf_shard_plan_free(&plan);
    free(all), free(mine), free(recv);
}

static void test_broadcast_barrier(lmf_comm *c) {
    size_t n = 100001;
    uint8_t *b = malloc(n);
    int root = P - 1;
    for (size_t i = 0; i < n; i++) b[i] = R == root ? (uint8_t)(i * 31 + 7) : 0;
    CHECK(lmf_comm_broadcast(c, b, n, root) == 0);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += b[i] != (uint8_t)(i * 31 + 7);
    CHECK_MSG(bad == 0, "broadcast: %zu wrong", bad);
    /* pieces */
    for (size_t i = 0; i < n; i++) b[i] = R == 0 ? (uint8_t)(i * 17) : 0;
    lmf_comm_set_max_piece(c, 4096);
    CHECK(lmf_comm_broadcast(c, b, n, 0) == 0);
    lmf_comm_set_max_piece(c, (size_t)1 << 30);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += b[i] != (uint8_t)(i * 17);
    CHECK_MSG(bad == 0, "broadcast in pieces: %zu wrong", bad);
    CHECK(lmf_comm_broadcast(c, b, 1, P) == LMF_EINVAL);
    CHECK(lmf_comm_barrier(c) == 0);
    free(b);
}

/* Several requests in flight at once, completed out of order, with progress calls between
 * "compute" the way DDP overlaps bucket all-reduces with backward. */
static void test_nonblocking(lmf_comm *c) {
    enum { NB = 5 };
    size_t n[NB] = {1000, 7, 250001, 64, 3};
    float *buf[NB];
    lmf_comm_req *req[NB];
    for (int b = 0; b < NB; b++) {
        buf[b] = malloc(n[b] * sizeof(float));
        for (size_t i = 0; i < n[b]; i++) buf[b][i] = f(R, i + (size_t)b);
        CHECK(lmf_comm_iallreduce(c, buf[b], n[b], LMF_F32, LMF_REDUCE_SUM, &req[b]) == 0);
        volatile double x = 0; /* a little "backward" between posts */
        for (int k = 0; k < 20000; k++) x += k * 0.5;
        CHECK(lmf_comm_progress(c) >= 0);
    }
    float *g = malloc((size_t)P * 4 * sizeof(float)), mine[4] = {(float)R, 1, 2, 3};
    lmf_comm_req *greq;
    CHECK(lmf_comm_iallgather(c, mine, g, 4, LMF_F32, &greq) == 0);
    /* complete out of order: test the last until done, then wait the rest backwards */
    int done = 0;
    while (!done) CHECK(lmf_comm_test(&req[NB - 1], &done) == 0);
    CHECK(req[NB - 1] == NULL);
    CHECK(lmf_comm_wait(&greq) == 0);
    for (int b = NB - 2; b >= 0; b--) CHECK(lmf_comm_wait(&req[b]) == 0);
    CHECK(lmf_comm_wait(&req[0]) == 0); /* NULL: no-op */
    CHECK(lmf_comm_progress(c) == 0);
    for (int b = 0; b < NB; b++) {
        size_t bad = 0;
        for (size_t i = 0; i < n[b]; i++) bad += buf[b][i] != (float)fsum(i + (size_t)b);
        CHECK_MSG(bad == 0, "non-blocking all-reduce %d: %zu wrong", b, bad);
        free(buf[b]);
    }
    for (int r = 0; r < P; r++) CHECK(g[r * 4] == (float)r && g[r * 4 + 3] == 3);
    free(g);
    /* waitall */
    float v[3] = {1, 2, 3};
    lmf_comm_req *rs[3];
    for (int i = 0; i < 3; i++)
        CHECK(lmf_comm_iallreduce(c, &v[i], 1, LMF_F32, LMF_REDUCE_SUM, &rs[i]) == 0);
    CHECK(lmf_comm_waitall(rs, 3) == 0);
    CHECK(v[0] == P && v[1] == 2 * P && v[2] == 3 * P);
}

static void test_split(lmf_comm *c) {
    /* two groups by parity, ordered by descending world rank */
    lmf_comm *s = NULL;
    CHECK(lmf_comm_split(c, R % 2, -R, &s) == 0);
    if (!s) {
        CHECK(0);
        return;
    }
    int members = (P - R % 2 + 1) / 2;
    CHECK_MSG(lmf_comm_size(s) == members, "split size %d, expected %d", lmf_comm_size(s), members);
    int above = 0; /* members of my group with a larger world rank come first */
    for (int r = R + 2; r < P; r += 2) above++;
    CHECK_MSG(lmf_comm_rank(s) == above, "split rank %d, expected %d", lmf_comm_rank(s), above);
    float x = (float)R;
    CHECK(lmf_comm_allreduce(s, &x, 1, LMF_F32, LMF_REDUCE_SUM) == 0);
    float e = 0;
    for (int r = R % 2; r < P; r += 2) e += (float)r;
    CHECK_MSG(x == e, "sum over the group %g, expected %g", x, e);
    /* a split of the split, and a rank that joins none */
    lmf_comm *none = NULL, *ss = NULL;
    CHECK(lmf_comm_split(s, lmf_comm_rank(s) == 0 ? -1 : 0, 0, &none) == 0);
    CHECK((none == NULL) == (lmf_comm_rank(s) == 0));
    if (none) CHECK(lmf_comm_free(s) == LMF_EINVAL); /* children first */
    CHECK(lmf_comm_free(none) == 0);
    CHECK(lmf_comm_split(s, 0, 0, &ss) == 0);
    CHECK(ss && lmf_comm_size(ss) == members);
    CHECK(lmf_comm_free(ss) == 0);
    CHECK(lmf_comm_free(s) == 0);
}

int main(void) {
    lmf_comm *c = NULL;
    lmf_comm_options o = {.timeout_s = 60};
    if (lmf_comm_init(&c, &o)) {
        fprintf(stderr, "init: %s\n", lmf_last_error());
        return 1;
    }
    P = lmf_comm_size(c);
    R = lmf_comm_rank(c);
    CHECK(lmf_comm_timeout(c) == 60);
    CHECK(lmf_comm_local_rank(c) >= 0 && lmf_comm_local_rank(c) < lmf_comm_local_size(c));
    const char *nodes = getenv("LMF_TEST_NODES");
    int want_nodes = nodes ? atoi(nodes) : 1;
    CHECK_MSG(lmf_comm_node_count(c) == want_nodes, "nodes %d, expected %d", lmf_comm_node_count(c),
              want_nodes);
    if (want_nodes == 1)
        CHECK(lmf_comm_local_size(c) == P && lmf_comm_local_rank(c) == R);
    else
        CHECK(lmf_comm_local_size(c) * want_nodes == P);
    test_allreduce_f32(c);
    test_allreduce_bf16(c);
    test_reduce_scatter(c);
    test_allgather(c);
    test_vcollectives(c);
    test_broadcast_barrier(c);
    test_nonblocking(c);
    test_split(c);
    char name[64];
    snprintf(name, sizeof name, "test_comm (rank %d/%d%s)", R, P,
             lmf_comm_uses_mpi(c) ? "" : ", no MPI");
    int rc = test_summary(name);
    /* every rank's verdict matters: the job fails if any rank failed */
    float any = (float)rc;
    if (lmf_comm_allreduce(c, &any, 1, LMF_F32, LMF_REDUCE_SUM) || any != 0) rc = 1;
    CHECK(lmf_comm_free(c) == 0);
    return rc;
}
