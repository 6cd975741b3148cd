/* Element types and conversions between float32 and the 16-bit formats in model files. */
#include "lmforge/error.h"
#include "lmforge/tensor.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[LMF_DTYPE_COUNT] = {
    [LMF_F32] = {"F32", 4}, [LMF_BF16] = {"BF16", 2}, [LMF_F16] = {"F16", 2}};

size_t lmf_dtype_size(lmf_dtype t) {
    return (unsigned)t < LMF_DTYPE_COUNT ? dtypes[t].size : 0;
}

const char *lmf_dtype_name(lmf_dtype t) {
    return (unsigned)t < LMF_DTYPE_COUNT ? dtypes[t].name : "?";
}

int lmf_dtype_parse(const char *name, lmf_dtype *out) {
    for (int i = 0; i < LMF_DTYPE_COUNT; i++)
        if (!strcmp(name, dtypes[i].name)) {
            *out = (lmf_dtype)i;
            return 0;
        }
    return LMF_EUNSUPPORTED;
}

static const struct {
    const char *name;
    size_t size;
} kv_dtypes[LMF_KV_DTYPE_COUNT] = {
    [LMF_KV_F32] = {"float32", 4}, [LMF_KV_BF16] = {"bfloat16", 2}, [LMF_KV_INT8] = {"int8", 1}};

const char *lmf_kv_dtype_name(lmf_kv_dtype t) {
    return (unsigned)t < LMF_KV_DTYPE_COUNT ? kv_dtypes[t].name : "?";
}

size_t lmf_kv_dtype_size(lmf_kv_dtype t) {
    return (unsigned)t < LMF_KV_DTYPE_COUNT ? kv_dtypes[t].size : 0;
}

int lmf_kv_dtype_parse(const char *name, lmf_kv_dtype *out) {
    if (!strcmp(name, "auto")) name = "float32";
    for (int i = 0; i < LMF_KV_DTYPE_COUNT; i++)
        if (!strcmp(name, kv_dtypes[i].name)) {
            *out = (lmf_kv_dtype)i;
            return 0;
        }
    return LMF_EUNSUPPORTED;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float lmf_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t lmf_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float lmf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000 | (man << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t lmf_f32_to_f16(float f) {
    uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000;
    float a = fabsf(f);
    if (isnan(f)) return (uint16_t)(sign | 0x7e00);
    if (a >= 65520.0f) return (uint16_t)(sign | 0x7c00);
    if (a < 6.103515625e-05f) { /* subnormal: round to a multiple of 2^-24 */
        return (uint16_t)(sign | (uint32_t)nearbyintf(a * 16777216.0f));
    }
    uint32_t au = u & 0x7fffffff;
    au += 0xfff + ((au >> 13) & 1); /* round to nearest even on the 13 dropped bits */
    return (uint16_t)(sign | (((au >> 23) - 112) << 10) | ((au >> 13) & 0x3ff));
}

void lmf_convert_to_f32(float *dst, const void *src, lmf_dtype t, size_t n) {
    const uint16_t *s16 = src;
    switch (t) {
    case LMF_F32:
        memcpy(dst, src, n * 4);
        break;
    case LMF_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = lmf_bf16_to_f32(s16[i]);
        break;
    case LMF_F16:
        for (size_t i = 0; i < n; i++) dst[i] = lmf_f16_to_f32(s16[i]);
        break;
    default:
        break;
    }
}

void lmf_convert_from_f32(void *dst, lmf_dtype t, const float *src, size_t n) {
    uint16_t *d16 = dst;
    switch (t) {
    case LMF_F32:
        memcpy(dst, src, n * 4);
        break;
    case LMF_BF16:
        for (size_t i = 0; i < n; i++) d16[i] = lmf_f32_to_bf16(src[i]);
        break;
    case LMF_F16:
        for (size_t i = 0; i < n; i++) d16[i] = lmf_f32_to_f16(src[i]);
        break;
    default:
        break;
    }
}
