/* Bookkeeping of the paged KV cache's blocks for the serving engine: allocation with reference
 * counts, and prefix caching: a full block is published under a hash of its tokens and of the
 * blocks before it, so a later request with the same prefix (a shared system prompt) reuses
 * it instead of recomputing. Freed published blocks stay findable until the pool runs dry,
 * then the least recently used is evicted. The storage itself is an lmf_kv_pool (model.h). */
#ifndef LMFORGE_KV_BLOCKS_H
#define LMFORGE_KV_BLOCKS_H

#include <stdint.h>

typedef struct lmf_block_mgr {
    int n_blocks, block_size;
    int *ref;               /* users of each block */
    uint64_t *hash;         /* published content hash, 0 if none */
    int *prev, *next;       /* links in the free stack or the LRU list */
    int free_head;          /* unpublished free blocks (a stack) */
    int lru_head, lru_tail; /* published blocks nobody uses, oldest first */
    int n_free, n_evictable;
    int *bucket, *chain; /* hash -> block index */
    uint64_t mask;
    int64_t lookups, hits, evictions;
} lmf_block_mgr;

int lmf_block_mgr_init(lmf_block_mgr *m, int n_blocks, int block_size);
void lmf_block_mgr_free(lmf_block_mgr *m);
/* A block for exclusive use (ref 1), evicting the oldest unused cached block if needed;
 * -1 when every block is in use. */
int lmf_block_alloc(lmf_block_mgr *m);
/* Drops one reference. */
void lmf_block_release(lmf_block_mgr *m, int block);
/* Blocks that lmf_block_alloc can still hand out. */
int lmf_block_available(const lmf_block_mgr *m);
/* Hash of a full block given the previous block's hash (0 for the first). Never 0. */
uint64_t lmf_block_hash(uint64_t parent, const int32_t *tokens, int n);
/* The block published under hash, with one more reference; -1 if none. */
int lmf_block_lookup(lmf_block_mgr *m, uint64_t hash);
/* Publishes a full block under hash (no-op if another block already holds that hash). */
void lmf_block_publish(lmf_block_mgr *m, int block, uint64_t hash);

#endif
