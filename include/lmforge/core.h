/* Core services: logging, aligned allocation, arenas, files (mmap, atomic write), RNG,
 * thread settings and JSON helpers. Everything above the core layer uses these. */
#ifndef LMFORGE_CORE_H
#define LMFORGE_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lmforge/error.h"

#define LMF_VERSION "0.1.0"

/* ---- logging: to stderr, with a level threshold (LMF_LOG=debug|info|warn|error) ---- */
enum { LMF_LOG_DEBUG, LMF_LOG_INFO, LMF_LOG_WARN, LMF_LOG_ERROR };
void lmf_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define lmf_info(...)  lmf_log(LMF_LOG_INFO, __VA_ARGS__)
#define lmf_warn(...)  lmf_log(LMF_LOG_WARN, __VA_ARGS__)
#define lmf_debug(...) lmf_log(LMF_LOG_DEBUG, __VA_ARGS__)

/* ---- memory ---- */
/* 64-byte aligned, zero-filled; NULL (with an error message) when out of memory. */
void *lmf_alloc(size_t bytes, const char *what);
/* Zeroes [ptr, ptr + bytes), giving the whole pages inside it back to the system
 * (madvise MADV_DONTNEED: they read as zero and hold no memory until written again). */
void lmf_discard(void *ptr, size_t bytes);
/* Bytes of the pages overlapping [ptr, ptr + bytes) that are in memory (mincore). */
size_t lmf_resident_bytes(const void *ptr, size_t bytes);
void lmf_free(void *p);
char *lmf_strdup(const char *s);

/* ---- a growing string: printf-style appends (Prometheus pages and the like) ---- */
typedef struct lmf_strbuf {
    char *s; /* NUL-terminated once anything was appended; NULL before */
    size_t len, cap;
    int oom; /* an append ran out of memory: later appends do nothing */
} lmf_strbuf;
void lmf_strbuf_printf(lmf_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The string, the caller's to free ("" when nothing was appended), or NULL after an
 * out-of-memory append (the buffer is freed). b is empty again. */
char *lmf_strbuf_take(lmf_strbuf *b);

/* A bump allocator reset as a whole (per-step activations). */
typedef struct lmf_arena {
    uint8_t *base;
    size_t size, used, peak;
} lmf_arena;
int lmf_arena_init(lmf_arena *a, size_t bytes);
void *lmf_arena_alloc(lmf_arena *a, size_t bytes); /* 64-byte aligned, not zeroed */
void lmf_arena_reset(lmf_arena *a);
void lmf_arena_free(lmf_arena *a);

/* ---- files ---- */
typedef struct lmf_mapped_file {
    const uint8_t *data;
    size_t size;
    int fd;
} lmf_mapped_file;
/* Maps a whole file read-only. An empty file maps to data == NULL, size == 0. */
int lmf_file_map(lmf_mapped_file *m, const char *path);
void lmf_file_unmap(lmf_mapped_file *m);
/* Reads a whole (text) file into a NUL-terminated buffer the caller frees. */
int lmf_file_read_all(const char *path, char **out, size_t *len);
/* Writes path via path.tmp-XXXX + fsync + rename + fsync(dir): a crash leaves either the
 * old file or the new one, never a torn one. */
int lmf_file_write_atomic(const char *path, const void *data, size_t len);
/* Streaming form of the above: open a temp file, write, then commit or abort. */
typedef struct lmf_atomic_file {
    FILE *fp;
    char *path, *tmp_path;
} lmf_atomic_file;
int lmf_atomic_open(lmf_atomic_file *f, const char *path);
int lmf_atomic_write(lmf_atomic_file *f, const void *data, size_t len);
int lmf_atomic_commit(lmf_atomic_file *f);
void lmf_atomic_abort(lmf_atomic_file *f);
int lmf_path_exists(const char *path);
int lmf_mkdir_p(const char *path);
/* Joins dir and name into a new string the caller frees. */
char *lmf_path_join(const char *dir, const char *name);
/* Copies a file byte for byte (atomic at the destination). */
int lmf_file_copy(const char *src, const char *dst);

/* ---- random numbers: counter-free splitmix64/xoshiro256** (seeded, reproducible) ---- */
typedef struct lmf_rng {
    uint64_t s[4];
} lmf_rng;
void lmf_rng_seed(lmf_rng *r, uint64_t seed);
uint64_t lmf_rng_u64(lmf_rng *r);
float lmf_rng_uniform(lmf_rng *r); /* [0, 1) */
float lmf_rng_normal(lmf_rng *r);  /* mean 0, std 1 */

/* ---- hashing (hash tables; not cryptographic) ---- */
uint64_t lmf_hash_bytes(const void *data, size_t n); /* FNV-1a, finalised */
uint64_t lmf_hash_u64(uint64_t x);                   /* 64-bit mix */

/* ---- threads: one OpenMP pool shared by our kernels and the GEMM library ---- */
void lmf_threads_set(int n); /* n <= 0: all cores */
int lmf_threads_get(void);
double lmf_time_sec(void); /* monotonic clock */
size_t lmf_peak_rss_bytes(void);

#endif
