/* KV block allocation with reference counts and hashed prefix reuse (see kv_blocks.h). */
#include "lmforge/kv_blocks.h"

#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"

int lmf_block_mgr_init(lmf_block_mgr *m, int n_blocks, int block_size) {
    memset(m, 0, sizeof *m);
    if (n_blocks <= 0 || block_size <= 0)
        return lmf_errorf(LMF_EINVAL, "kv blocks: need a positive block count and size");
    uint64_t cap = 1;
    while (cap < 2 * (uint64_t)n_blocks) cap <<= 1;
    m->n_blocks = n_blocks, m->block_size = block_size, m->mask = cap - 1;
    m->ref = calloc((size_t)n_blocks, sizeof *m->ref);
    m->hash = calloc((size_t)n_blocks, sizeof *m->hash);
    m->prev = malloc(sizeof *m->prev * (size_t)n_blocks);
    m->next = malloc(sizeof *m->next * (size_t)n_blocks);
    m->chain = malloc(sizeof *m->chain * (size_t)n_blocks);
    m->bucket = malloc(sizeof *m->bucket * (size_t)cap);
    if (!m->ref || !m->hash || !m->prev || !m->next || !m->chain || !m->bucket) {
        lmf_block_mgr_free(m);
        return lmf_errorf(LMF_ENOMEM, "kv blocks: out of memory");
    }
    for (uint64_t i = 0; i < cap; i++) m->bucket[i] = -1;
    /* Free stack in ascending order: block 0 is handed out first. */
    for (int b = 0; b < n_blocks; b++) m->next[b] = b + 1 < n_blocks ? b + 1 : -1;
    m->free_head = 0;
    m->n_free = n_blocks;
    m->lru_head = m->lru_tail = -1;
    return 0;
}

void lmf_block_mgr_free(lmf_block_mgr *m) {
    free(m->ref), free(m->hash), free(m->prev), free(m->next), free(m->chain), free(m->bucket);
    memset(m, 0, sizeof *m);
}

static void lru_remove(lmf_block_mgr *m, int b) {
    if (m->prev[b] >= 0)
        m->next[m->prev[b]] = m->next[b];
    else
        m->lru_head = m->next[b];
    if (m->next[b] >= 0)
        m->prev[m->next[b]] = m->prev[b];
    else
        m->lru_tail = m->prev[b];
    m->n_evictable--;
}

static void lru_push(lmf_block_mgr *m, int b) {
    m->prev[b] = m->lru_tail, m->next[b] = -1;
    if (m->lru_tail >= 0)
        m->next[m->lru_tail] = b;
    else
        m->lru_head = b;
    m->lru_tail = b;
    m->n_evictable++;
}

static void unpublish(lmf_block_mgr *m, int b) {
    int *p = &m->bucket[m->hash[b] & m->mask];
    while (*p != b) p = &m->chain[*p];
    *p = m->chain[b];
    m->hash[b] = 0;
}

int lmf_block_alloc(lmf_block_mgr *m) {
    int b;
    if (m->free_head >= 0) {
        b = m->free_head;
        m->free_head = m->next[b];
        m->n_free--;
    } else if (m->lru_head >= 0) {
        b = m->lru_head;
        lru_remove(m, b);
        unpublish(m, b);
        m->evictions++;
    } else {
        return -1;
    }
    m->ref[b] = 1;
    return b;
}

void lmf_block_release(lmf_block_mgr *m, int b) {
    if (b < 0 || b >= m->n_blocks || m->ref[b] <= 0) return; /* internal invariant: ignore */
    if (--m->ref[b] > 0) return;
    if (m->hash[b]) {
        lru_push(m, b);
    } else {
        m->next[b] = m->free_head;
        m->free_head = b;
        m->n_free++;
    }
}

int lmf_block_available(const lmf_block_mgr *m) {
    return m->n_free + m->n_evictable;
}

uint64_t lmf_block_hash(uint64_t parent, const int32_t *tokens, int n) {
    uint64_t h = parent ^ 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)(uint32_t)tokens[i] + 0x632BE59BD9B4E019ull + (h << 6) + (h >> 2);
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    return h ? h : 1;
}

int lmf_block_lookup(lmf_block_mgr *m, uint64_t hash) {
    m->lookups++;
    for (int b = m->bucket[hash & m->mask]; b >= 0; b = m->chain[b])
        if (m->hash[b] == hash) {
            if (m->ref[b] == 0) lru_remove(m, b);
            m->ref[b]++;
            m->hits++;
            return b;
        }
    return -1;
}

void lmf_block_publish(lmf_block_mgr *m, int b, uint64_t hash) {
    if (b < 0 || b >= m->n_blocks || m->hash[b] || !hash) return;
    for (int o = m->bucket[hash & m->mask]; o >= 0; o = m->chain[o])
        if (m->hash[o] == hash) return;
    m->hash[b] = hash;
    m->chain[b] = m->bucket[hash & m->mask];
    m->bucket[hash & m->mask] = b;
}
