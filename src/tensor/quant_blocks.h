/* Byte layouts of the quantized blocks (see lmforge/quant.h), shared by the formats (quant.c)
 * and the vectorised kernels (quant_kernels.c). Every block size is a multiple of its field
 * alignment, so rows of blocks laid end to end keep every field aligned. */
#ifndef LMF_TENSOR_QUANT_BLOCKS_H
#define LMF_TENSOR_QUANT_BLOCKS_H

#include <stdint.h>

typedef struct blk_q8_0 {
    uint16_t d; /* f16 */
    int8_t qs[32];
} blk_q8_0;

typedef struct blk_q4_0 {
    uint16_t d;
    uint8_t qs[16]; /* value j: low nibble of qs[j]; value j + 16: high nibble */
} blk_q4_0;

typedef struct blk_q4_1 {
    uint16_t d, m;
    uint8_t qs[16];
} blk_q4_1;

typedef struct blk_nf4 { /* NF4 and FP4 */
    float absmax;
    uint8_t qs[32]; /* value 2j: high nibble of qs[j]; value 2j + 1: low nibble */
} blk_nf4;

typedef struct blk_q4_k {
    uint16_t d, dmin;
    uint8_t scales[12]; /* 6-bit scale and min of each of the 8 sub-blocks of 32 */
    uint8_t qs[128];    /* 64-value chunk c: value l in the low nibble of qs[32c + l], value
                           32 + l in the high one */
} blk_q4_k;

_Static_assert(sizeof(blk_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(blk_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(blk_q4_1) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(blk_nf4) == 36, "NF4 block is 36 bytes");
_Static_assert(sizeof(blk_q4_k) == 144, "Q4_K block is 144 bytes");

/* GGML's get_scale_min_k4: the 6-bit scale and min of sub-block j (0..7). */
static inline void q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

#endif
