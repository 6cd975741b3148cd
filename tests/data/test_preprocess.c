/* sft assembly, pt blocks and packing on hand-worked examples (expected values derived by hand
 * from LLaMA-Factory's rules: infer_seqlen, mask_history keeping the newest turns,
 * efficient_eos, block cutting with bos). */
#include <stdlib.h>
#include <string.h>

#include "lmforge/error.h"
#include "lmforge/preprocess.h"
#include "test.h"

#define I LMF_IGNORE_INDEX

static int same(const int32_t *a, const int32_t *b, int n) {
    return !memcmp(a, b, sizeof *a * (size_t)n);
}

static void seqlen(int s, int t, int cut, int es, int et) {
    int ns, nt;
    lmf_infer_seqlen(s, t, cut, &ns, &nt);
    CHECK_MSG(ns == es && nt == et, "infer_seqlen(%d, %d, %d) = (%d, %d), want (%d, %d)", s, t, cut,
              ns, nt, es, et);
}

static const int32_t s1[] = {1, 2, 3}, t1[] = {4, 5}, s2[] = {6, 7}, t2[] = {8, 9, 10};
static const lmf_turn_ids turns[2] = {{s1, t1, 3, 2}, {s2, t2, 2, 3}};

static void build(lmf_sft_options o, const int32_t *ids, const int32_t *labels, int n,
                  int want_cut) {
    lmf_example e;
    int cut = -1;
    CHECK(lmf_sft_build(turns, 2, &o, &e, &cut) == 0);
    CHECK_MSG(e.n == n && same(e.ids, ids, n) && same(e.labels, labels, n) && cut == want_cut,
              "cutoff %d top %d mh %d eeos %d: n=%d cut=%d", o.cutoff_len, o.train_on_prompt,
              o.mask_history, o.efficient_eos, e.n, cut);
    lmf_example_free(&e);
}

int main(void) {
    seqlen(10, 3, 20, 10, 3);
    seqlen(30, 5, 20, 15, 5);
    seqlen(5, 30, 20, 5, 15);
    seqlen(30, 30, 20, 10, 10);
    seqlen(40, 10, 20, 16, 4);

    lmf_sft_options o = {100, 0, 0, 0, 99};
    build(o, (int32_t[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, (int32_t[]){I, I, I, 4, 5, I, I, 8, 9, 10},
          10, 0);
    o.train_on_prompt = 1;
    build(o, (int32_t[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, (int32_t[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
          10, 0);
    o.train_on_prompt = 0, o.mask_history = 1;
    build(o, (int32_t[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, (int32_t[]){I, I, I, I, I, I, I, 8, 9, 10},
          10, 0);
    o.mask_history = 0, o.efficient_eos = 1;
    build(o, (int32_t[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99},
          (int32_t[]){I, I, I, 4, 5, 99, I, 8, 9, 10, 99}, 11, 0);
    o.efficient_eos = 0, o.cutoff_len = 6;
    build(o, (int32_t[]){1, 2, 3, 4, 5, 6}, (int32_t[]){I, I, I, 4, 5, I}, 6, 1);
    o.mask_history = 1;
    build(o, (int32_t[]){1, 6, 7, 8, 9, 10}, (int32_t[]){I, I, I, 8, 9, 10}, 6, 1);
    lmf_example e;
    o.cutoff_len = 0;
    CHECK(lmf_sft_build(turns, 2, &o, &e, NULL) == LMF_EINVAL);

    /* pt: three docs ending in eos (0), blocks of 5, remainder dropped, bos 7 forced. */
    int32_t d1[] = {1, 2, 3, 0}, d2[] = {4, 5, 0}, d3[] = {6, 7, 8, 9, 0};
    lmf_example docs[3] = {{d1, d1, 4}, {d2, d2, 3}, {d3, d3, 5}}, *blocks;
    int nb;
    CHECK(lmf_pt_blocks(docs, 3, 5, -1, &blocks, &nb) == 0 && nb == 2);
    CHECK(same(blocks[0].ids, (int32_t[]){1, 2, 3, 0, 4}, 5) &&
          same(blocks[1].ids, (int32_t[]){5, 0, 6, 7, 8}, 5));
    CHECK(same(blocks[1].labels, blocks[1].ids, 5));
    for (int i = 0; i < nb; i++) lmf_example_free(&blocks[i]);
    free(blocks);
    CHECK(lmf_pt_blocks(docs, 3, 5, 7, &blocks, &nb) == 0 && nb == 2);
    CHECK(blocks[0].ids[0] == 7 && blocks[1].ids[0] == 7 && blocks[1].labels[0] == 7);
    for (int i = 0; i < nb; i++) lmf_example_free(&blocks[i]);
    free(blocks);
    CHECK(lmf_pt_blocks(docs, 3, 50, -1, &blocks, &nb) == LMF_EINVAL);

    /* packing: lengths 5, 3, 4, 2 into rows of 8 -> {ex0, ex1}, {ex2, ex3}. */
    int32_t a[5] = {11, 12, 13, 14, 15}, b[3] = {21, 22, 23}, c[4] = {31, 32, 33, 34},
            d[2] = {41, 42};
    lmf_example ex[4] = {{a, a, 5}, {b, b, 3}, {c, c, 4}, {d, d, 2}};
    lmf_packed_row *rows;
    int nr;
    CHECK(lmf_pack(ex, 4, 8, &rows, &nr) == 0 && nr == 2);
    CHECK(rows[0].n == 8 && same(rows[0].ids, (int32_t[]){11, 12, 13, 14, 15, 21, 22, 23}, 8));
    CHECK(same(rows[0].seg, (int32_t[]){1, 1, 1, 1, 1, 2, 2, 2}, 8));
    CHECK(same(rows[0].pos, (int32_t[]){0, 1, 2, 3, 4, 0, 1, 2}, 8));
    CHECK(rows[1].n == 6 && same(rows[1].ids, (int32_t[]){31, 32, 33, 34, 41, 42}, 6));
    CHECK(same(rows[1].seg, (int32_t[]){1, 1, 1, 1, 2, 2}, 6));
    lmf_packed_rows_free(rows, nr);
    CHECK(lmf_pack(ex, 4, 4, &rows, &nr) == LMF_EINVAL); /* example 0 longer than the row */
    return test_summary("test_preprocess");
}
