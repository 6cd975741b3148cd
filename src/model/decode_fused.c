/* The inference step for a few rows (a batch of single-token decodes, short prefill chunks) in
 * one OpenMP parallel region. A decode step is a chain of memory-bound products; with a
 * region (fork, join) per product and per small op, each of the ~90 joins of a token waited
 * for the slower thread, and 2 threads read the weights at a third of the bandwidth.
 *
 * Here a step is a fixed list of phases (per layer: the q/k/v products, attention, the o
 * product, the gate/up products, the down product; then the lm_head), each a list of work
 * items: chunks of about CHUNK_BYTES of weight rows, or one (sequence, KV head) pair of
 * attention. Every thread owns a contiguous range of each phase's items (one sequential stream
 * of weights) and, once it is through, steals items from the end of the other threads' ranges.
 * A phase starts when every item of the phase it reads is done: a count of items, not a
 * barrier over threads, so a thread descheduled while it holds no item delays nobody. Small
 * per-row work (the RMSNorm of a product's input, its rounding to bf16) is redone by each
 * thread into its own scratch instead of being one more synchronisation. */
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <string.h>

#include "decode_internal.h"
#include "tp_internal.h"
#include "lmforge/decode_kernels.h"
#include "lmforge/quant.h"

enum { PH_QKV, PH_ATT, PH_O, PH_GU, PH_DOWN, PH_PER_LAYER };
enum {
    CHUNK_BYTES = 128 << 10, /* weight bytes per item: many items to balance, few atomics */
    /* From this many rows, products with f32 weights read their input transposed
     * (lmf_matmul_f32_xt, 12 weight rows x 32 input rows in registers): there a step is bound
     * by multiply-adds, and that tile does ~1.25x the 4 x 4 tile's on 32-96 rows (37 against
     * 29-32 GMAC/s a core with the weights coming from memory); below it, it wastes the rows
     * it pads to 16 and ties at 16. */
    XT_MIN_ROWS = 24,
    SPIN_LIMIT = 1 << 12, /* pause-loops waiting for a phase before yielding the core */
    /* Up to this many rows the gate and up products are separate items (gate's rows, then
     * up's: one stream, as the two lie next to each other) and each thread applies SwiGLU as
     * it prepares the down product's input. An item of both read two streams 126 KB each and
     * switched between them; one-token bf16 steps +1.5-3.3 % (per-token medians against the
     * bench's read, 27-42 GB/s), f32 +1 %. Each thread then redoes n x ffn exps: nothing at one
     * or two rows. */
    SPLIT_GU_MAX_ROWS = 2
};

typedef struct steal_range {
    alignas(64) atomic_ullong r; /* lo | hi << 32: items [lo, hi) nobody has taken yet */
} steal_range;

typedef struct phase_sync {
    alignas(64) atomic_int done; /* items finished */
    int items;                   /* to finish: the work items, + 1 for a tensor-parallel reduce */
} phase_sync;

typedef struct fused {
    lmf_model *m;
    lmf_kv_pool *kv;
    const lmf_seq_step *seqs;
    const step_bufs *b;
    float *logits;
    int n, n_seqs, n_out, nt, n_phases;
    int split_gu; /* gate and up products as separate items (SPLIT_GU_MAX_ROWS) */
    int qx; /* quantized weights whose kernels read the input reordered (prepare() writes xb) */
    int rows_c, rows_o, rows_gu, rows_f; /* weight rows per item of each kind of product */
    lmf_paged_shape ps;
    phase_sync *ph;
    steal_range *rg; /* rg[phase * nt + thread] */
    uint8_t *priv;   /* per-thread scratch, priv_bytes each */
    size_t priv_bytes;
} fused;

static size_t align64(size_t n) {
    return (n + 63) & ~(size_t)63;
}

static int ceil_div(int a, int b) {
    return (a + b - 1) / b;
}

static int widest_input(const lmf_model_config *c) {
    int w = c->hidden > c->ffn ? c->hidden : c->ffn;
    return w > c->heads * c->head_dim ? w : c->heads * c->head_dim;
}

/* Whether a product of n input rows reads them transposed (f32 weights, many rows). */
static int use_xt(const lmf_model *m, int n) {
    return !m->quantized && !m->infer_bf16 && n >= XT_MIN_ROWS;
}

/* Bytes per value of a product's input as the kernels read it: bf16 for bf16 weights, f32
 * (reordered for NF4 / FP4) for quantized ones. */
static size_t xb_size(const lmf_model *m) {
    return m->quantized ? sizeof(float) : sizeof(uint16_t);
}

/* Bytes of the thread's buffer xb: the input as the kernels read it (bf16, reordered, or
 * transposed f32 padded to lmf_xt_stride rows; bf16 rows lmf_bf16_x_stride apart). */
static size_t xb_bytes(const lmf_model *m, int n) {
    size_t w = (size_t)widest_input(&m->cfg);
    if (use_xt(m, n)) return sizeof(float) * lmf_xt_stride(n) * w;
    return xb_size(m) * (size_t)n * (w + 32); /* + 32: room for lmf_bf16_x_stride's padding */
}

/* Floats of a thread's attention scratch, which its RoPE table (n rows of D) follows. */
static size_t attn_floats(const lmf_model *m) {
    const lmf_model_config *c = &m->cfg;
    lmf_paged_shape s = {c->heads, c->kv_heads, c->head_dim, 1, 0, 0, LMF_KV_F32, 0};
    return align64(sizeof(float) * lmf_attn_paged_scratch(&s)) / sizeof(float);
}

/* Whether a step of n rows runs the gate and up products as separate items. */
static int splits_gu(int n) {
    return n <= SPLIT_GU_MAX_ROWS;
}

/* Floats of a thread's buffer xn: normed rows of the hidden size, or the SwiGLU of n rows of
 * ffn values when the thread applies it itself. */
static size_t xn_floats(const lmf_model *m, int n) {
    const lmf_model_config *c = &m->cfg;
    return (size_t)n * (splits_gu(n) && c->ffn > c->hidden ? c->ffn : c->hidden);
}

static size_t priv_bytes(const lmf_model *m, int n) {
    const lmf_model_config *c = &m->cfg;
    return align64(sizeof(float) * xn_floats(m, n)) + align64(xb_bytes(m, n)) +
           sizeof(float) * attn_floats(m) + align64(sizeof(float) * (size_t)n * c->head_dim);
}

static int n_phases(const lmf_model *m) {
    return m->cfg.layers * PH_PER_LAYER + 1;
}

size_t lmf_fused_step_bytes(const lmf_model *m, int n, int n_seqs, int nt) {
    (void)n_seqs;
    return (size_t)n_phases(m) * (sizeof(phase_sync) + (size_t)nt * sizeof(steal_range)) +
           (size_t)nt * priv_bytes(m, n);
}

/* Bytes of one weight row of `in` values as the step reads it. */
static size_t row_bytes(const lmf_model *m, int in) {
    if (m->quantized) return lmf_quant_row_bytes((lmf_qtype)m->qtype, in);
    return (size_t)in * (m->infer_bf16 ? sizeof(uint16_t) : sizeof(float));
}

/* The rows a product reads: the quantized copy, the bf16 copy or the f32 weights themselves.
 * l == layers: the lm_head. */
static const char *weight_rows(const lmf_model *m, int l, lmf_linear_id id) {
    const float *W = l == m->cfg.layers ? m->w.lm_head : m->w.layers[l].w[id];
    if (m->quantized)
        return (const char *)(l == m->cfg.layers ? m->qhead : m->qlin[l * LMF_N_LINEAR + id]);
    if (m->infer_bf16) return (const char *)(m->infer_bf16 + (W - m->params));
    return (const char *)W;
}

/* Weight rows per item for products with `in` inputs: CHUNK_BYTES (twice that for f32 and bf16
 * weights at one or two rows), in whole tiles (4 rows, 12 for the transposed-input products of
 * n rows). At one or two rows a step only streams: there 256 KB items decoded 2-3 % faster than
 * 128 KB (f32 and bf16, token by token in one process; 32 KB 7-9 % slower), and 3-8 rows
 * tied; quantized weights, whose rows cost more work per byte, were 2-8 % slower with them. */
static int item_rows(const lmf_model *m, int in, int n) {
    size_t bytes = !m->quantized && n <= 2 ? 2 * (size_t)CHUNK_BYTES : CHUNK_BYTES;
    int t = use_xt(m, n) ? 12 : 4, r = (int)(bytes / row_bytes(m, in)) / t * t;
    return r < t ? t : r;
}

static int phase_items(const fused *f, int p) {
    const lmf_model_config *c = &f->m->cfg;
    int QD = c->heads * c->head_dim, KD = c->kv_heads * c->head_dim;
    if (p == f->n_phases - 1) return f->n_out && f->logits ? ceil_div(c->vocab, f->rows_c) : 0;
    switch (p % PH_PER_LAYER) {
    case PH_QKV:
        return ceil_div(QD, f->rows_c) + 2 * ceil_div(KD, f->rows_c);
    case PH_ATT:
        return f->n_seqs * f->ps.KVH;
    case PH_O:
        return ceil_div(c->hidden, f->rows_o);
    case PH_GU:
        return f->split_gu ? 2 * ceil_div(c->ffn, f->rows_c) : ceil_div(c->ffn, f->rows_gu);
    default:
        return ceil_div(c->hidden, f->rows_f);
    }
}

/* A tensor-parallel shard's o and down products are partial sums: the phase's last work item
 * to finish all-reduces them over the ranks and adds the residual (one more item of the phase,
 * so that the phases reading x wait for it). */
static int tp_reduce_phase(const fused *f, int p) {
    int k = p % PH_PER_LAYER;
    return f->m->tp && p != f->n_phases - 1 && (k == PH_O || k == PH_DOWN);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* The weight bytes item `it` of phase p streams (the gate half of a gate/up item); NULL for
 * attention items. */
static const char *item_weights(const fused *f, int p, int it, size_t *bytes) {
    const lmf_model *m = f->m;
    const lmf_model_config *c = &m->cfg;
    int QD = c->heads * c->head_dim, KD = c->kv_heads * c->head_dim, in = c->hidden, rows, r0, out;
    int l = p / PH_PER_LAYER;
    lmf_linear_id id;
    if (p == f->n_phases - 1) {
        l = c->layers, id = LMF_Q, rows = f->rows_c, out = c->vocab;
    } else {
        switch (p % PH_PER_LAYER) {
        case PH_QKV: {
            int nq = ceil_div(QD, f->rows_c), nk = ceil_div(KD, f->rows_c);
            rows = f->rows_c;
            if (it < nq)
                id = LMF_Q, out = QD;
            else if ((it -= nq) < nk)
                id = LMF_K, out = KD;
            else
                it -= nk, id = LMF_V, out = KD;
            break;
        }
        case PH_O:
            id = LMF_O, rows = f->rows_o, out = c->hidden, in = QD;
            break;
        case PH_GU:
            id = LMF_GATE, rows = f->rows_gu, out = c->ffn;
            if (f->split_gu) { /* gate's items, then up's */
                int ng = ceil_div(c->ffn, f->rows_c);
                rows = f->rows_c;
                if (it >= ng) it -= ng, id = LMF_UP;
            }
            break;
        case PH_DOWN:
            id = LMF_DOWN, rows = f->rows_f, out = c->hidden, in = c->ffn;
            break;
        default:
            return NULL;
        }
    }
    r0 = it * rows;
    rows = r0 + rows < out ? rows : out - r0;
    size_t rb = row_bytes(m, in);
    *bytes = (size_t)rows * rb;
    return weight_rows(m, l, id) + (size_t)r0 * rb;
}

/* The first PF_START bytes of this thread's first item of weight phase w (an attention phase:
 * the o phase after it) asked for now. Issued at every phase boundary, whether or not the
 * thread has to wait there: between two products a thread does small work (norms, attention)
 * while no weight streams, and the hardware prefetcher starts each new range cold; with the
 * next range's first lines already in flight a one-token step ran 3-7 % faster (f32 and bf16,
 * 1 and 2 threads, interleaved A/B; 16 KB instead of 4 was no better and slowed q8_0). */
enum { PF_START = 4 << 10 };

static int is_attention(const fused *f, int p) {
    return p < f->n_phases - 1 && p % PH_PER_LAYER == PH_ATT;
}

/* The next item of this thread's own range of phase p, or -1. */
static int next_own(const fused *f, int p, int tid) {
    unsigned long long r =
        atomic_load_explicit(&f->rg[(size_t)p * f->nt + tid].r, memory_order_relaxed);
    return (unsigned)r < (unsigned)(r >> 32) ? (int)(unsigned)r : -1;
}

/* The weights of the first item left in this thread's own range of phase w; NULL when none
 * is left, w is past the last phase or an attention phase. */
static const char *first_item(const fused *f, int w, int tid, size_t *bytes) {
    *bytes = 0;
    int it = w < f->n_phases ? next_own(f, w, tid) : -1;
    return it >= 0 ? item_weights(f, w, it, bytes) : NULL;
}

/* The phase whose weights a thread streams next when it runs phase w next: w, or the o phase
 * after an attention phase. */
static int weight_phase(const fused *f, int w) {
    return is_attention(f, w) ? w + 1 : w;
}

/* The cached rows attention item `it` of phase p reads first, asked for into L2 (see
 * lmf_attn_paged_prefetch): before this thread's first item of the phase, as it reaches the
 * phase; then one own item ahead (it < 0: none). The cache was evicted by the weights streamed
 * since the last token, and an item that starts cold waits a memory latency per block: one-token
 * bf16 steps +0.6-1.7 % (per-token medians against the bench's read, 4 runs). */
static void attention_prefetch(const fused *f, int p, int it) {
    if (it < 0) return;
    const lmf_paged_seq *sq = &f->b->pseqs[it / f->ps.KVH];
    size_t off = (size_t)(p / PH_PER_LAYER) * f->kv->layer_bytes;
    lmf_attn_paged_prefetch(f->kv->kbuf + off, f->kv->vbuf + off, sq, it % f->ps.KVH, &f->ps);
}

static void start_stream(const fused *f, int w, int tid) {
    if (is_attention(f, w)) attention_prefetch(f, w, next_own(f, w, tid));
    size_t bytes;
    const char *q = first_item(f, weight_phase(f, w), tid, &bytes);
    if (!q) return;
    if (bytes > PF_START) bytes = PF_START;
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(q + o, 0, 2);
}

/* Waits until phase p is done. Meanwhile the memory bus is not left idle: the first item of
 * this thread's range of the weights it streams next (those of phase `next`, the phase it runs
 * after p, or of the o phase after an attention phase: that one measured neutral, +-0.5 % by
 * the per-token median) is prefetched into L2. */
static void wait_done(const fused *f, int p, int next, int tid) {
    phase_sync *ph = &f->ph[p];
    start_stream(f, next, tid);
    if (atomic_load_explicit(&ph->done, memory_order_acquire) >= ph->items) return;
    size_t bytes;
    const char *pf = first_item(f, weight_phase(f, next), tid, &bytes),
               *end = pf ? pf + bytes : NULL;
    for (int spins = 0; atomic_load_explicit(&ph->done, memory_order_acquire) < ph->items;
         spins++) {
        if (pf < end) {
            for (int i = 0; i < 4; i++) __builtin_prefetch(pf + 64 * i, 0, 2);
            pf += 256;
            spins = 0;
        } else if (spins < SPIN_LIMIT) {
            cpu_relax();
        } else {
            sched_yield();
        }
    }
}

/* Takes one item of range R: the first (own range, streaming forward) or the last (stolen). */
static int grab(steal_range *R, int own, int *it) {
    unsigned long long o = atomic_load_explicit(&R->r, memory_order_relaxed);
    for (;;) {
        unsigned lo = (unsigned)o, hi = (unsigned)(o >> 32);
        if (lo >= hi) return 0;
        unsigned long long nv = own ? o + 1 : (unsigned long long)(hi - 1) << 32 | lo;
        if (atomic_compare_exchange_weak_explicit(&R->r, &o, nv, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *it = own ? (int)lo : (int)(hi - 1);
            return 1;
        }
    }
}

/* Rows r0..r1 of y = x W^T (n rows) with the weights the model infers with: those of linear id
 * of layer l (l == layers: the lm_head). xb: the input as prepare() left it for bf16 weights or
 * for quantized ones whose kernels read it reordered (f->qx). */
static void product(const fused *f, int l, lmf_linear_id id, int in, float *y, int ldy, int r0,
                    int r1, const float *x, const uint16_t *xb, int n) {
    const lmf_model *m = f->m;
    const char *W = weight_rows(m, l, id);
    if (m->quantized)
        lmf_qmatvec_rows(y, ldy, f->qx ? (const float *)xb : x, (lmf_qtype)m->qtype, W, n, in, r0,
                         r1);
    else if (m->infer_bf16)
        lmf_matvec_bf16_rows(y, ldy, xb, lmf_bf16_x_stride(in), (const uint16_t *)W, n, in, r0, r1);
    else if (use_xt(m, n))
        lmf_matmul_f32_xt(y, ldy, (const float *)xb, n, (const float *)W, in, r0, r1);
    else
        lmf_matvec_f32_rows(y, ldy, x, (const float *)W, n, in, r0, r1);
}

/* x[:, r0..r1] += t[:, r0..r1]: the residual add of the o and down products. */
static void residual(float *x, const float *t, int n, int C, int r0, int r1) {
    for (int i = 0; i < n; i++)
        for (int r = r0; r < r1; r++) x[(size_t)i * C + r] += t[(size_t)i * C + r];
}

/* The small per-row ops run inside the region, so they must not open one of their own: the
 * backend's kernels are OpenMP loops, and even a one-thread nested region costs microseconds
 * (thousands of gate/up items a token). RMSNorm: cpu_rmsnorm_fwd's formula, in place allowed,
 * with the sum of squares vectorised (a different order of the sum: the one serial chain of
 * adds made the norms of a 64-row step's products' inputs ~2 % of the step, redone by
 * each thread). */
static void rmsnorm_rows(float *out, const float *x, const float *w, int n, int C, float eps) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * C;
        float *oi = out + (size_t)i * C, ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += xi[c] * xi[c];
        float r = 1.0f / sqrtf(ss / C + eps);
#pragma omp simd
        for (int c = 0; c < C; c++) oi[c] = xi[c] * r * w[c];
    }
}

/* RoPE's cosines and sines of each row's position (cpu_rope's arithmetic): row r's D values
 * are cos then sin of pos[r] * inv_freq[i], i < D / 2. Once per thread and step rather than
 * in every attention item (each (sequence, KV head) pair of each layer redid them). */
static void rope_table(float *cs, const int32_t *pos, int n, int D, const float *inv_freq) {
    int half = D / 2;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < half; i++) {
            float ang = (float)pos[r] * inv_freq[i];
            cs[(size_t)r * D + i] = (float)cos(ang);
            cs[(size_t)r * D + half + i] = (float)sin(ang);
        }
}

/* RoPE of `heads` consecutive heads of one token, cs its row of rope_table. */
static void rope_heads(float *x, int heads, int D, const float *cs) {
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        float c = cs[i], s = cs[half + i];
        for (int h = 0; h < heads; h++) {
            float *v = x + (size_t)h * D, a = v[i], b = v[i + half];
            v[i] = a * c - b * s;
            v[i + half] = b * c + a * s;
        }
    }
}

/* One (sequence, KV head) item: q/k norms and RoPE of the heads of the group, the new K and V
 * rows into the cache, then attention of each new token. */
static void attention_item(const fused *f, int l, int it, float *scratch) {
    const lmf_model *m = f->m;
    const lmf_model_config *c = &m->cfg;
    const lmf_layer_weights *w = &m->w.layers[l];
    const step_bufs *b = f->b;
    lmf_kv_pool *kv = f->kv;
    int KVH = c->kv_heads, D = c->head_dim, G = c->heads / KVH, QD = c->heads * D, KD = KVH * D;
    int kvh = it % KVH;
    const lmf_paged_seq *sq = &b->pseqs[it / KVH];
    for (int t = 0; t < sq->n_new; t++) {
        int row = sq->q_row + t, pos = sq->start + t;
        float *qh = b->q + (size_t)row * QD + (size_t)kvh * G * D,
              *kh = b->k + (size_t)row * KD + (size_t)kvh * D,
              *vh = b->v + (size_t)row * KD + (size_t)kvh * D;
        if (c->qk_norm) {
            rmsnorm_rows(qh, qh, w->q_norm, G, D, c->rms_eps);
            rmsnorm_rows(kh, kh, w->k_norm, 1, D, c->rms_eps);
        }
        const float *cs = scratch + attn_floats(m) + (size_t)row * D;
        rope_heads(qh, G, D, cs);
        rope_heads(kh, 1, D, cs);
        lmf_kv_write(kv, l, sq->table[pos / kv->block_size], pos % kv->block_size, kvh, 1, kh, vh);
    }
    size_t layer_off = (size_t)l * kv->layer_bytes;
    for (int t = 0; t < sq->n_new; t++)
        lmf_attn_paged_item(b->att, b->q, kv->kbuf + layer_off, kv->vbuf + layer_off, sq,
                            sq->q_row + t, kvh, &f->ps, scratch);
}

static void do_item(const fused *f, int p, int it, const float *xn, const uint16_t *xb,
                    float *scratch) {
    const lmf_model *m = f->m;
    const lmf_model_config *c = &m->cfg;
    const step_bufs *b = f->b;
    int n = f->n, C = c->hidden, F = c->ffn, QD = c->heads * c->head_dim,
        KD = c->kv_heads * c->head_dim, l = p / PH_PER_LAYER;
    if (p == f->n_phases - 1) {
        int r0 = it * f->rows_c, r1 = r0 + f->rows_c < c->vocab ? r0 + f->rows_c : c->vocab;
        product(f, c->layers, LMF_Q, C, f->logits, c->vocab, r0, r1, xn, xb, f->n_out);
        return;
    }
    const lmf_layer_weights *w = &m->w.layers[l];
    switch (p % PH_PER_LAYER) {
    case PH_QKV: {
        int nq = ceil_div(QD, f->rows_c), nk = ceil_div(KD, f->rows_c), seg = it, ld;
        lmf_linear_id id;
        float *y;
        const float *bias;
        if (seg < nq)
            id = LMF_Q, y = b->q, ld = QD, bias = w->bq;
        else if ((seg -= nq) < nk)
            id = LMF_K, y = b->k, ld = KD, bias = w->bk;
        else
            seg -= nk, id = LMF_V, y = b->v, ld = KD, bias = w->bv;
        int r0 = seg * f->rows_c, r1 = r0 + f->rows_c < ld ? r0 + f->rows_c : ld;
        product(f, l, id, C, y, ld, r0, r1, xn, xb, n);
        if (bias)
            for (int i = 0; i < n; i++)
                for (int r = r0; r < r1; r++) y[(size_t)i * ld + r] += bias[r];
        break;
    }
    case PH_ATT:
        attention_item(f, l, it, scratch);
        break;
    case PH_O: {
        int r0 = it * f->rows_o, r1 = r0 + f->rows_o < C ? r0 + f->rows_o : C;
        product(f, l, LMF_O, QD, b->xn, C, r0, r1, b->att, xb, n);
        if (!m->tp) residual(b->x, b->xn, n, C, r0, r1);
        break;
    }
    case PH_GU: {
        if (f->split_gu) {
            int ng = ceil_div(F, f->rows_c), up = it >= ng, r0 = (it - up * ng) * f->rows_c,
                r1 = r0 + f->rows_c < F ? r0 + f->rows_c : F;
            product(f, l, up ? LMF_UP : LMF_GATE, C, up ? b->up : b->gate, F, r0, r1, xn, xb, n);
            break;
        }
        int r0 = it * f->rows_gu, r1 = r0 + f->rows_gu < F ? r0 + f->rows_gu : F;
        product(f, l, LMF_GATE, C, b->gate, F, r0, r1, xn, xb, n);
        product(f, l, LMF_UP, C, b->up, F, r0, r1, xn, xb, n);
        for (int i = 0; i < n; i++)
            lmf_swiglu_row(b->h + (size_t)i * F + r0, b->gate + (size_t)i * F + r0,
                           b->up + (size_t)i * F + r0, r1 - r0);
        break;
    }
    default: {
        int r0 = it * f->rows_f, r1 = r0 + f->rows_f < C ? r0 + f->rows_f : C;
        product(f, l, LMF_DOWN, F, b->xn, C, r0, r1, xn, xb, n);
        if (!m->tp) residual(b->x, b->xn, n, C, r0, r1);
        break;
    }
    }
}

/* This thread's share of phase p: its own range from the front, then the others' from the
 * back; the items it did are counted once at the end. */
static void run_phase(fused *f, int p, int tid, const float *xn, const uint16_t *xb,
                      float *scratch) {
    int did = 0, it, att = is_attention(f, p);
    for (int v = 0; v < f->nt; v++) {
        steal_range *R = &f->rg[(size_t)p * f->nt + (tid + v) % f->nt];
        while (grab(R, v == 0, &it)) {
            if (att && v == 0) attention_prefetch(f, p, next_own(f, p, tid));
            do_item(f, p, it, xn, xb, scratch);
            did++;
        }
    }
    if (!did) return;
    int now = atomic_fetch_add_explicit(&f->ph[p].done, did, memory_order_acq_rel) + did;
    if (tp_reduce_phase(f, p) && now == f->ph[p].items - 1) {
        lmf_tp_reduce_residual(f->m, f->b->xn, f->b->x, (size_t)f->n * f->m->cfg.hidden);
        atomic_fetch_add_explicit(&f->ph[p].done, 1, memory_order_release);
    }
}

/* The input of a product as this thread reads it: RMSNorm'd into xn when norm is given, then
 * rounded to bf16 into xb for bf16 weights. Returns the f32 rows the product reads. */
static const float *prepare(const fused *f, const float *x, const float *norm, int n, int in,
                            float *xn, uint16_t *xb) {
    const lmf_model *m = f->m;
    if (norm) {
        rmsnorm_rows(xn, x, norm, n, in, m->cfg.rms_eps);
        x = xn;
    }
    if (f->qx) {
        lmf_quant_order_input((lmf_qtype)m->qtype, (float *)xb, x, n, in);
    } else if (m->infer_bf16 && !m->quantized) {
        size_t ld = lmf_bf16_x_stride(in);
        for (int i = 0; i < n; i++) lmf_round_bf16(xb + i * ld, x + (size_t)i * in, (size_t)in);
    } else if (use_xt(m, n)) {
        lmf_transpose_input((float *)xb, x, n, in);
    }
    return x;
}

static void thread_run(fused *f) {
    const lmf_model *m = f->m;
    const lmf_model_config *c = &m->cfg;
    const step_bufs *b = f->b;
    int tid = omp_get_thread_num(), n = f->n, C = c->hidden, QD = c->heads * c->head_dim;
    if (tid >= f->nt) return;
    uint8_t *pv = f->priv + (size_t)tid * f->priv_bytes;
    float *xn = (float *)pv;
    uint16_t *xb = (uint16_t *)(pv + align64(sizeof(float) * xn_floats(m, n)));
    float *scratch = (float *)((uint8_t *)xb + align64(xb_bytes(m, n)));
    /* the caller's hook, on one thread: the others take over its items if it is held up */
    if (tid == 0 && m->step_hook) m->step_hook(m->step_hook_arg);
    rope_table(scratch + attn_floats(m), b->pos, n, c->head_dim, m->inv_freq);
    for (int l = 0; l < c->layers; l++) {
        const lmf_layer_weights *w = &m->w.layers[l];
        int p = l * PH_PER_LAYER;
        if (l > 0) wait_done(f, p - 1, p + PH_QKV, tid);
        const float *in = prepare(f, b->x, w->attn_norm, n, C, xn, xb);
        run_phase(f, p + PH_QKV, tid, in, xb, scratch);
        wait_done(f, p + PH_QKV, p + PH_ATT, tid);
        run_phase(f, p + PH_ATT, tid, NULL, NULL, scratch);
        wait_done(f, p + PH_ATT, p + PH_O, tid);
        in = prepare(f, b->att, NULL, n, QD, xn, xb);
        run_phase(f, p + PH_O, tid, in, xb, scratch);
        wait_done(f, p + PH_O, p + PH_GU, tid);
        in = prepare(f, b->x, w->mlp_norm, n, C, xn, xb);
        run_phase(f, p + PH_GU, tid, in, xb, scratch);
        wait_done(f, p + PH_GU, p + PH_DOWN, tid);
        if (f->split_gu) {
            int F = c->ffn;
            for (int i = 0; i < n; i++)
                lmf_swiglu_row(xn + (size_t)i * F, b->gate + (size_t)i * F, b->up + (size_t)i * F,
                               F);
            in = prepare(f, xn, NULL, n, F, NULL, xb);
        } else {
            in = prepare(f, b->h, NULL, n, c->ffn, xn, xb);
        }
        run_phase(f, p + PH_DOWN, tid, in, xb, scratch);
    }
    int last = f->n_phases - 1;
    wait_done(f, last - 1, last, tid);
    if (!f->ph[last].items) return;
    /* Only the last row of each sequence that wants logits: final norm, then the lm_head. */
    for (int i = 0, k = 0; i < f->n_seqs; i++)
        if (f->seqs[i].want_logits) {
            const float *row = b->x + (size_t)(b->pseqs[i].q_row + b->pseqs[i].n_new - 1) * C;
            rmsnorm_rows(xn + (size_t)k++ * C, row, m->w.final_norm, 1, C, c->rms_eps);
        }
    prepare(f, xn, NULL, f->n_out, C, NULL, xb);
    run_phase(f, last, tid, xn, xb, scratch);
}

void lmf_fused_step(lmf_model *m, lmf_kv_pool *kv, const lmf_seq_step *seqs, int n_seqs, int n,
                    int nt, const step_bufs *b, float *logits) {
    const lmf_model_config *c = &m->cfg;
    fused f = {.m = m,
               .kv = kv,
               .seqs = seqs,
               .b = b,
               .logits = logits,
               .n = n,
               .n_seqs = n_seqs,
               .nt = nt};
    for (int i = 0; i < n_seqs; i++) f.n_out += seqs[i].want_logits != 0;
    f.n_phases = n_phases(m);
    f.split_gu = splits_gu(n);
    f.qx = m->quantized && lmf_quant_reorders_input((lmf_qtype)m->qtype);
    f.rows_c = item_rows(m, c->hidden, n);
    f.rows_o = item_rows(m, c->heads * c->head_dim, n);
    f.rows_f = item_rows(m, c->ffn, n);
    /* gate/up items: half the rows of each (two products), in whole tiles */
    int tile = use_xt(m, n) ? 12 : 4;
    f.rows_gu = f.rows_c / (2 * tile) * tile;
    if (f.rows_gu < tile) f.rows_gu = tile;
    f.ps = lmf_kv_paged_shape(kv, c);
    uint8_t *p = b->extra;
    f.ph = (phase_sync *)p;
    p += sizeof(phase_sync) * f.n_phases;
    f.rg = (steal_range *)p;
    p += sizeof(steal_range) * (size_t)f.n_phases * nt;
    f.priv = p;
    f.priv_bytes = priv_bytes(m, n);
    for (int ph = 0; ph < f.n_phases; ph++) {
        int items = phase_items(&f, ph), per = ceil_div(items, nt);
        atomic_init(&f.ph[ph].done, 0);
        f.ph[ph].items = items + tp_reduce_phase(&f, ph);
        for (int t = 0; t < nt; t++) {
            unsigned lo = (unsigned)(per * t < items ? per * t : items),
                     hi = (unsigned)(per * (t + 1) < items ? per * (t + 1) : items);
            atomic_init(&f.rg[(size_t)ph * nt + t].r, (unsigned long long)hi << 32 | lo);
        }
    }
#pragma omp parallel num_threads(nt)
    thread_run(&f);
}
