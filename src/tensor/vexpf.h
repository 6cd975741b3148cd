/* The cpu kernels' vectorisable expf (backend_cpu.c, decode_kernels.c). */
#ifndef LMF_TENSOR_VEXPF_H
#define LMF_TENSOR_VEXPF_H

#include <stdint.h>
#include <string.h>

/* expf without a libm call, so loops over it vectorise (AVX-512: 16 lanes): Cody-Waite range
 * reduction x = n ln2 + r, Cephes' degree-6 polynomial for e^r, 2^n put into the exponent.
 * Relative error < 1e-7 (measured 8e-8 over [-87, 88]); x below -87 gives e^-87 (1.6e-38, not 0)
 * and above 88 gives e^88 (not inf): harmless where it is used (softmax terms after the max is
 * subtracted, sigmoid). NaN stays NaN. */
static inline float vexpf(float x) {
    float c = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    /* n = round(c / ln2) by the 1.5 * 2^23 trick: plain arithmetic, so it vectorises
     * (floorf does not without -fno-trapping-math). */
    float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = c - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return x != x ? x : p * scale;
}

#endif
