/* Small non-cryptographic hashes for lmforge's hash tables. */
#include "lmforge/core.h"

uint64_t lmf_hash_bytes(const void *data, size_t n) {
    const uint8_t *s = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

uint64_t lmf_hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}
