/* KV block bookkeeping: exhaustion, reuse, shared prefixes with reference counts, LRU
 * eviction of cached blocks only when the pool runs dry, hit counting. */
#include "lmforge/error.h"
#include "lmforge/kv_blocks.h"
#include "test.h"

int main(void) {
    lmf_block_mgr m;
    CHECK(lmf_block_mgr_init(&m, 4, 16) == 0);
    int b[4];
    for (int i = 0; i < 4; i++) b[i] = lmf_block_alloc(&m);
    CHECK(b[0] == 0 && b[3] == 3 && lmf_block_alloc(&m) == -1 && lmf_block_available(&m) == 0);
    lmf_block_release(&m, b[2]);
    CHECK(lmf_block_available(&m) == 1 && lmf_block_alloc(&m) == 2);

    /* Prefix chain: two full blocks published, then released: still findable. */
    int32_t t1[16], t2[16];
    for (int i = 0; i < 16; i++) t1[i] = i, t2[i] = 100 + i;
    uint64_t h1 = lmf_block_hash(0, t1, 16), h2 = lmf_block_hash(h1, t2, 16);
    CHECK(h1 != h2 && h1 != lmf_block_hash(0, t2, 16) && h2 != lmf_block_hash(0, t2, 16));
    lmf_block_publish(&m, b[0], h1);
    lmf_block_publish(&m, b[1], h2);
    lmf_block_release(&m, b[0]);
    lmf_block_release(&m, b[1]);
    CHECK(lmf_block_available(&m) == 2);
    CHECK(lmf_block_lookup(&m, h1) == b[0] && lmf_block_lookup(&m, h1) == b[0]); /* two sharers */
    CHECK(m.ref[b[0]] == 2 && lmf_block_available(&m) == 1);
    CHECK(lmf_block_lookup(&m, 12345) == -1);
    CHECK(m.lookups == 3 && m.hits == 2);
    lmf_block_release(&m, b[0]);
    CHECK(m.ref[b[0]] == 1 && lmf_block_available(&m) == 1);
    lmf_block_release(&m, b[0]);
    /* Pool dry of free blocks: the least recently used cached block goes first (b[1], released
     * before b[0] came back to the list). */
    CHECK(lmf_block_alloc(&m) == b[1] && m.evictions == 1 && lmf_block_lookup(&m, h2) == -1);
    CHECK(lmf_block_lookup(&m, h1) == b[0]);
    /* Publishing a hash twice keeps the first holder. */
    lmf_block_release(&m, b[3]);
    int x = lmf_block_alloc(&m);
    lmf_block_publish(&m, x, h1);
    CHECK(m.hash[x] == 0);
    lmf_block_mgr_free(&m);
    CHECK(lmf_block_mgr_init(&m, 0, 16) == LMF_EINVAL);
    return test_summary("test_kv_blocks");
}
