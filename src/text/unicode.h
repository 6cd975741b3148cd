/* UTF-8 and Unicode helpers for the tokenizer: decoding, the code point classes used by the
 * pre-tokenizer regexes, GPT-2's byte-level alphabet and Rust-style lossy UTF-8 conversion. */
#ifndef LMF_TEXT_UNICODE_H
#define LMF_TEXT_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* \\p{L}, \\p{N}, White_Space, and Rust regex's \\w (letters, marks, Nd, Nl, Pc, joiners) */
enum { LMF_UC_L = 1, LMF_UC_N = 2, LMF_UC_WS = 4, LMF_UC_W = 8 };

typedef struct lmf_uc_range {
    uint32_t lo, hi;
    uint32_t cls;
} lmf_uc_range;
extern const lmf_uc_range lmf_uc_ranges[];
extern const int lmf_uc_n_ranges;

/* Class bits (LMF_UC_*) of code point cp; 0 for everything else. */
int lmf_uc_class(uint32_t cp);

/* Decodes one UTF-8 character at s (n > 0 bytes available) into *cp and returns its length;
 * returns -k when the first k bytes are invalid or an incomplete character (k >= 1). */
int lmf_utf8_next(const uint8_t *s, size_t n, uint32_t *cp);
/* 1 when s[0..n) is entirely valid UTF-8. */
int lmf_utf8_valid(const uint8_t *s, size_t n);
/* Writes cp as UTF-8 into out (4 bytes room) and returns its length. */
int lmf_utf8_put(uint32_t cp, char *out);
/* Length of the longest prefix of s[0..n) that does not end inside a character that later bytes
 * could still complete (streaming decode holds such a tail back). */
size_t lmf_utf8_complete_prefix(const uint8_t *s, size_t n);

/* GPT-2 byte-level alphabet: byte b is written as code point lmf_bytelevel_cp(b). */
uint32_t lmf_bytelevel_cp(uint8_t b);
/* The byte a byte-level code point stands for, or -1 when cp is not in the alphabet. */
int lmf_bytelevel_byte(uint32_t cp);

/* Appends s[0..n) to the growable buffer *buf as Rust's String::from_utf8_lossy does: each
 * maximal invalid subpart becomes U+FFFD. Returns 0 or LMF_ENOMEM. */
struct lmf_sbuf;
int lmf_utf8_lossy(struct lmf_sbuf *out, const uint8_t *s, size_t n);

/* Growable byte buffer (always NUL-terminated when non-empty). */
typedef struct lmf_sbuf {
    char *p;
    size_t len, cap;
} lmf_sbuf;
int lmf_sbuf_add(lmf_sbuf *b, const void *s, size_t n);
static inline int lmf_sbuf_addc(lmf_sbuf *b, char c) {
    return lmf_sbuf_add(b, &c, 1);
}

#endif
