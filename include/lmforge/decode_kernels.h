/* Kernels of the inference step (src/tensor/decode_kernels.c): matrix times a few vectors with
 * f32 or bf16 weights (the one-row decode GEMV, memory-bound: each weight byte read once per
 * step whatever the number of rows), and paged attention of new tokens over a KV cache. Each
 * fast kernel has a plain-C reference (the _ref functions) that the tests compare it with.
 * Weights are Hugging Face's (out, in) row-major; x is (n, in) and y is (n, out), both dense. */
#ifndef LMFORGE_DECODE_KERNELS_H
#define LMFORGE_DECODE_KERNELS_H

#include <stdint.h>

#include "lmforge/tensor.h"

/* y = x W^T with f32 weights. Multi-threaded over output rows (the one OpenMP pool). */
void lmf_matvec_f32(float *y, const float *x, const float *W, int n, int out, int in);
void lmf_matvec_f32_ref(float *y, const float *x, const float *W, int n, int out, int in);

/* y = bf16(x) bf16(W)^T accumulated in f32 (avx512_bf16 vdpbf16ps where the CPU has it). xb is
 * caller scratch of n * in uint16 that receives x rounded to bf16. */
void lmf_matvec_bf16(float *y, const float *x, const uint16_t *W, int n, int out, int in,
                     uint16_t *xb);
void lmf_matvec_bf16_ref(float *y, const float *x, const uint16_t *W, int n, int out, int in);

/* The same product for many input rows (a batch of decodes with prefill chunks, where a step
 * is bound by multiply-adds, not bytes) from x transposed: xt is (in, lmf_xt_stride(n)),
 * k-major, rows n.. zero (lmf_transpose_input writes it). Each weight value is broadcast
 * against 32 input rows held in registers, 12 weight rows at a time: no horizontal sums, and
 * a weight byte loaded from memory feeds 32 multiply-adds rather than 4. Calling thread only;
 * writes columns r0..r1 of y (n, ldy). */
size_t lmf_xt_stride(int n);
void lmf_transpose_input(float *xt, const float *x, int n, int in);
void lmf_matmul_f32_xt(float *y, int ldy, const float *xt, int n, const float *W, int in, int r0,
                       int r1);

/* h = silu(gate) * up over n values on the calling thread, with the cpu backend's vectorised
 * exp (its swiglu_fwd's arithmetic, so the one-region step and the general path agree). */
void lmf_swiglu_row(float *h, const float *gate, const float *up, int n);

/* Rows r0..r1 (of out) of y = x W^T on the calling thread only: y is (n, ldy) and only its
 * columns r0..r1 are written. The work item of a step that shares the rows of a product
 * between threads itself (src/model/decode_fused.c); the same arithmetic as the threaded
 * products, so both give the same bits. xb is x already rounded to bf16 (lmf_round_bf16), its
 * rows ldx values apart (>= in). */
void lmf_matvec_f32_rows(float *y, int ldy, const float *x, const float *W, int n, int in, int r0,
                         int r1);
void lmf_matvec_bf16_rows(float *y, int ldy, const uint16_t *xb, size_t ldx, const uint16_t *W,
                          int n, int in, int r0, int r1);
/* The row stride for lmf_matvec_bf16_rows's input that its tiles read fastest: in, or in + 32
 * when rows of `in` bf16 values are a multiple of 2 KB (the llama down product's 2048: the
 * starts of 4 KB-apart rows all fall on the same L1 sets, and a tile ran at 66-68 GMAC/s a core
 * against 91-103 for rows of 2080 values). */
size_t lmf_bf16_x_stride(int in);
void lmf_round_bf16(uint16_t *xb, const float *x, size_t n);

/* Rows of D floats into a KV cache of type t, and back: FLOAT32 copies; BF16 rounds to nearest
 * even (lmf_f32_to_bf16's bits); INT8 writes one scale per row to scales[r] (max|x| / 127; 0 for
 * a row of zeros) and round(x / scale) clamped to [-127, 127]. scales is unused otherwise. */
void lmf_kv_store_rows(lmf_kv_dtype t, void *dst, float *scales, const float *src, int rows, int D);
void lmf_kv_load_rows(lmf_kv_dtype t, float *dst, const void *src, const float *scales, int rows,
                      int D);

/* The backend's attn_paged contract (see lmforge/tensor.h), vectorised: one work item per
 * (new token, KV head) reads each cached key and value row once for all the query heads of
 * its group, with an online softmax over chunks of the sequence's blocks. bf16 and int8 rows
 * are widened to float32 as they are read (int8 scales folded into the scores and the value
 * weights), never copied out. */
void lmf_attn_paged_fast(float *out, const float *q, const void *k, const void *v,
                         const lmf_paged_seq *seqs, int n_seqs, const lmf_paged_shape *s);

/* One (new token, KV head) item of lmf_attn_paged_fast on the calling thread: the query heads
 * of KV head kvh of token row `row` (a row of sequence sq) against sq's cache; out and q are
 * (rows, H * D) as in lmf_attn_paged_fast. scratch holds lmf_attn_paged_scratch(s) floats. */
size_t lmf_attn_paged_scratch(const lmf_paged_shape *s);
void lmf_attn_paged_item(float *out, const float *q, const void *k, const void *v,
                         const lmf_paged_seq *sq, int row, int kvh, const lmf_paged_shape *s,
                         float *scratch);

/* Asks for the first cached key and value rows (a window of a few KB) that an item of KV head
 * kvh of sequence sq reads, those of the positions before sq->start, into L2: called one item
 * ahead, their memory latency overlaps the item before it instead of stalling this one. */
void lmf_attn_paged_prefetch(const void *k, const void *v, const lmf_paged_seq *sq, int kvh,
                             const lmf_paged_shape *s);

/* A streaming read of n regions (p[r], bytes[r]) in turn (the memory-bandwidth probe of the
 * decode bench), in one parallel region on the current thread count: each thread reads its
 * contiguous share of every region, as the decode step's threads share each product. Returns
 * the sum of the values read so the reads cannot be optimised away. */
double lmf_stream_read_regions(const void *const *p, const size_t *bytes, int n);

#endif
