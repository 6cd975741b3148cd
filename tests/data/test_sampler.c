/* The sampler: every example once per epoch on one rank, disjoint rank shards covering the
 * dataset, seeded reproducibility, a new order per epoch, and save/restore mid-epoch giving
 * exactly the uninterrupted sequence (also across a change of world size). */
#include <stdlib.h>
#include <string.h>

#include "lmforge/error.h"
#include "lmforge/sampler.h"
#include "test.h"

int main(void) {
    lmf_sampler a, b;
    enum { N = 103 };
    int seen[N] = {0}, e;
    CHECK(lmf_sampler_init(&a, N, 1, 0, 42, 1) == 0);
    for (int i = 0; i < N; i++) seen[lmf_sampler_next(&a, &e)]++;
    int all_once = 1;
    for (int i = 0; i < N; i++) all_once &= seen[i] == 1;
    CHECK(all_once);
    int64_t first_epoch0 = a.order[0], ident = 1;
    for (int i = 0; i < N; i++) ident &= a.order[i] == i;
    CHECK(!ident); /* shuffled */
    lmf_sampler_next(&a, &e);
    CHECK(e == 1 && a.epoch == 1);
    int differs = 0;
    CHECK(lmf_sampler_init(&b, N, 1, 0, 42, 1) == 0);
    for (int i = 0; i < N; i++) differs |= a.order[i] != b.order[i];
    CHECK(differs && b.order[0] == first_epoch0);
    lmf_sampler_free(&a), lmf_sampler_free(&b);

    /* 4 ranks: disjoint shards, together the whole dataset (padded by wrap-around). */
    memset(seen, 0, sizeof seen);
    for (int r = 0; r < 4; r++) {
        CHECK(lmf_sampler_init(&a, N, 4, r, 7, 1) == 0);
        CHECK(lmf_sampler_per_rank(&a) == 26);
        for (int i = 0; i < 26; i++) seen[lmf_sampler_next(&a, NULL)]++;
        lmf_sampler_free(&a);
    }
    int covered = 1, extra = 0;
    for (int i = 0; i < N; i++) covered &= seen[i] >= 1, extra += seen[i] - 1;
    CHECK(covered && extra == 1);

    /* Save mid-epoch 2 and restore into a fresh sampler: identical continuation. */
    CHECK(lmf_sampler_init(&a, N, 1, 0, 9, 1) == 0);
    for (int i = 0; i < 2 * N + 37; i++) lmf_sampler_next(&a, NULL);
    uint8_t st[LMF_SAMPLER_STATE_BYTES];
    lmf_sampler_save(&a, st);
    CHECK(lmf_sampler_init(&b, N, 1, 0, 9, 1) == 0);
    CHECK(lmf_sampler_restore(&b, st, "checkpoint-5/sampler.bin") == 0);
    int same = 1;
    for (int i = 0; i < 3 * N; i++)
        same &= lmf_sampler_next(&a, NULL) == lmf_sampler_next(&b, NULL);
    CHECK(same);
    lmf_sampler_free(&b);

    /* Restore on 2 ranks: together they continue the 1-rank global order. */
    lmf_sampler r0, r1, one;
    CHECK(lmf_sampler_init(&one, N, 1, 0, 9, 1) == 0);
    for (int i = 0; i < 40; i++) lmf_sampler_next(&one, NULL);
    lmf_sampler_save(&one, st);
    CHECK(lmf_sampler_init(&r0, N, 2, 0, 9, 1) == 0 && lmf_sampler_init(&r1, N, 2, 1, 9, 1) == 0);
    CHECK(lmf_sampler_restore(&r0, st, "s") == 0 && lmf_sampler_restore(&r1, st, "s") == 0);
    int cont = 1;
    for (int i = 0; i < 20; i++) {
        int64_t x0 = lmf_sampler_next(&r0, NULL), x1 = lmf_sampler_next(&r1, NULL);
        cont &= x0 == lmf_sampler_next(&one, NULL) && x1 == lmf_sampler_next(&one, NULL);
    }
    CHECK(cont);

    /* Refusals: other dataset, other seed, garbage. */
    CHECK(lmf_sampler_init(&b, N + 1, 1, 0, 9, 1) == 0);
    CHECK(lmf_sampler_restore(&b, st, "s") == LMF_EINVAL);
    lmf_sampler_free(&b);
    CHECK(lmf_sampler_init(&b, N, 1, 0, 10, 1) == 0);
    CHECK(lmf_sampler_restore(&b, st, "s") == LMF_EINVAL);
    st[0] = 'X';
    CHECK(lmf_sampler_restore(&b, st, "ckpt") == LMF_EFORMAT);
    lmf_sampler_free(&b);
    CHECK(lmf_sampler_init(&b, 0, 1, 0, 1, 1) == LMF_EINVAL);
    CHECK(lmf_sampler_init(&b, 5, 2, 2, 1, 1) == LMF_EINVAL);
    lmf_sampler_free(&a), lmf_sampler_free(&r0), lmf_sampler_free(&r1), lmf_sampler_free(&one);
    return test_summary("test_sampler");
}
