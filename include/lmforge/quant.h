/* Block-quantized weight formats and their matrix kernels (src/tensor/quant.c: formats, quantize,
 * dequantize, plain-C reference products; src/tensor/quant_kernels.c: AVX-512 products with
 * runtime dispatch). A quantized matrix is Hugging Face's (out, in) row-major weight with every
 * row quantized on its own: a row of `in` values is in / block blocks laid end to end, so rows
 * can be permuted, sliced and split between ranks as whole byte ranges.
 *
 * Block layouts (little-endian; "f16" is IEEE half):
 *   Q8_0  32 values, 34 bytes: f16 d, int8 q[32];                  x = d * q
 *   Q4_0  32 values, 18 bytes: f16 d, u8 qs[16];                   x = d * (q - 8)
 *         value j < 16 in the low nibble of qs[j], value j + 16 in its high nibble (GGML's
 *         Q4_0, so GGUF Q4_0 tensors are used as they are)
 *   Q4_1  32 values, 20 bytes: f16 d, f16 m, u8 qs[16];            x = d * q + m   (GGML Q4_1)
 *   NF4   64 values, 36 bytes: f32 absmax, u8 qs[32];              x = absmax * NF4[q]
 *         value 2j in the high nibble of qs[j], 2j + 1 in the low one (bitsandbytes' order);
 *         NF4 is the 16-value code of the QLoRA paper
 *   FP4   64 values, 36 bytes: as NF4 with bitsandbytes' fp4 code (sign, 2-bit exponent,
 *         1-bit mantissa: 0, 0.0052083, 0.1667, 0.25, 0.333, 0.5, 0.667, 1 and negatives)
 *   Q4_K  256 values, 144 bytes: f16 d, f16 dmin, u8 scales[12] (eight 6-bit scales and
 *         mins), u8 qs[128]; sub-block s of 32 values: x = d * sc[s] * q - dmin * m[s] (GGML)
 *
 * The quantizers round each block's scale *up* to the next f16 (and Q4_1's / Q4_K's offsets
 * down), so no value is clipped and the error bounds are the format's own: |x - deq(x)| <= d/2
 * for Q8_0 and Q4_1, <= d/2 for Q4_0 except values whose x/d rounds past 7 (<= d, the value
 * opposite the block's signed extreme), <= d*sc/2 for Q4_K, and absmax * (largest half-gap
 * between neighbouring code values) for NF4 (0.1519) and FP4 (0.1667). */
#ifndef LMFORGE_QUANT_H
#define LMFORGE_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "lmforge/tensor.h"

typedef enum lmf_qtype {
    LMF_Q8_0,
    LMF_Q4_0,
    LMF_Q4_1,
    LMF_NF4,
    LMF_FP4,
    LMF_Q4_K,
    LMF_QTYPE_COUNT
} lmf_qtype;

const char *lmf_qtype_name(lmf_qtype t); /* "q8_0", "q4_0", "q4_1", "nf4", "fp4", "q4_k" */
int lmf_qtype_parse(const char *name, lmf_qtype *out); /* case-insensitive; LMF_EUNSUPPORTED */
int lmf_qtype_block(lmf_qtype t);                      /* values per block: 32, 64 or 256 */
size_t lmf_qtype_block_bytes(lmf_qtype t);             /* bytes per block */
/* Bytes of one quantized row of n values; 0 when n is not a positive multiple of the block. */
size_t lmf_quant_row_bytes(lmf_qtype t, int64_t n);
/* Checks that a (rows, cols) matrix can be quantized as t (cols a multiple of the block);
 * the error names `what` (a tensor name) and the expected multiple. */
int lmf_quant_check_shape(lmf_qtype t, int64_t rows, int64_t cols, const char *what);
/* LLaMA-Factory's quantization_bit / quantization_type to a format: 8 -> q8_0; 4 -> nf4 (type
 * "nf4" or NULL), fp4 ("fp4"), q4_1 ("int"). Errors name the key and the accepted values. */
int lmf_qtype_from_bits(int bits, const char *type, lmf_qtype *out);

/* The 16 code values of NF4 and FP4 (index = the 4-bit code). */
extern const float lmf_nf4_code[16];
extern const float lmf_fp4_code[16];

/* Quantizes rows x cols float32 values (row-major) into dst (rows * row_bytes). Errors: cols not
 * a multiple of the block, a non-finite value, or a block whose scale exceeds the f16 range;
 * the message names `what` and the row. */
int lmf_quantize(lmf_qtype t, void *dst, const float *src, int64_t rows, int64_t cols,
                 const char *what);
/* The same from bf16 / f16 / f32 input (converted a row at a time). */
int lmf_quantize_from(lmf_qtype t, void *dst, const void *src, lmf_dtype dt, int64_t rows,
                      int64_t cols, const char *what);
/* Dequantizes one row of n values (n a multiple of the block). */
void lmf_dequantize_row(lmf_qtype t, float *dst, const void *src, int64_t n);
/* Dequantizes a whole matrix (multi-threaded over rows). */
void lmf_dequantize(lmf_qtype t, float *dst, const void *src, int64_t rows, int64_t cols);

/* NF4's optional double quantization (QLoRA): the f32 absmax of every block of a tensor,
 * minus their mean, quantized to int8 in groups of 256 with one f32 scale per group.
 * q: (n) int8, scales: (ceil(n / 256)) f32, *mean: the offset. Reconstruction error per absmax
 * <= scale / 2 of its group. */
void lmf_nf4_scales_compress(const float *absmax, int64_t n, int8_t *q, float *scales, float *mean);
void lmf_nf4_scales_expand(float *absmax, int64_t n, const int8_t *q, const float *scales,
                           float mean);
/* Reads / writes the absmax of block b of an NF4 or FP4 row. */
float lmf_nf4_block_absmax(const void *row, int64_t b);
void lmf_nf4_set_block_absmax(void *row, int64_t b, float absmax);

/* ---- products (x, y dense float32; W quantized (out, in)) ----
 * y = x W^T: x is (n, in), y is (n, out). Decode (n = 1) and prefill / QLoRA forward (small n).
 * Multi-threaded over output rows on the one OpenMP pool. */
void lmf_qmatmul(float *y, const float *x, lmf_qtype t, const void *W, int n, int out, int in);
void lmf_qmatmul_ref(float *y, const float *x, lmf_qtype t, const void *W, int n, int out, int in);
/* dx = dy W (the input gradient of y = x W^T): dy is (n, out), dx is (n, in), overwritten.
 * Multi-threaded over column strips of W. */
void lmf_qmatmul_t(float *dx, const float *dy, lmf_qtype t, const void *W, int n, int out, int in);
void lmf_qmatmul_t_ref(float *dx, const float *dy, lmf_qtype t, const void *W, int n, int out,
                       int in);
/* The single-threaded form for a caller that splits the work itself (the fused decode step):
 * y[i * ldy + o] = x_i . W_o for the n input rows and weight rows [r0, r1). x must be in the
 * kernels' input order: lmf_quant_order_input returns x itself, or dst (n * in floats) holding x
 * reordered for this format's kernel (NF4 / FP4 on the AVX-512 path). */
const float *lmf_quant_order_input(lmf_qtype t, float *dst, const float *x, int n, int in);
/* Non-zero when lmf_quant_order_input reorders (dst is written) for t on this machine. */
int lmf_quant_reorders_input(lmf_qtype t);
void lmf_qmatvec_rows(float *y, int ldy, const float *x, lmf_qtype t, const void *W, int n, int in,
                      int r0, int r1);
/* Dot product of one quantized row with x (n values): the plain-C reference. */
float lmf_quant_dot_ref(lmf_qtype t, const void *row, const float *x, int64_t n);

/* Non-zero when the AVX-512 kernels run here (CPU has avx512f + bw, and LMF_NO_AVX512 is not
 * set to anything but "" or "0"); the plain-C path otherwise. */
int lmf_quant_kernels_avx512(void);
/* Whether t has a vectorised kernel (the others use the plain-C product). */
int lmf_quant_has_fast_kernel(lmf_qtype t);

#endif
