/* UTF-8 decoding/encoding, class lookup over the generated range table, the GPT-2 byte-level
 * alphabet and lossy conversion that replaces invalid bytes exactly as Rust (and so HF) does. */
#include "text/unicode.h"

#include "lmforge/error.h"

#include <stdlib.h>
#include <string.h>

int lmf_uc_class(uint32_t cp) {
    if (cp < 128) {
        if ((cp | 32) - 'a' < 26) return LMF_UC_L | LMF_UC_W;
        if (cp - '0' < 10) return LMF_UC_N | LMF_UC_W;
        if (cp == '_') return LMF_UC_W;
        if (cp == ' ' || (cp >= 9 && cp <= 13)) return LMF_UC_WS;
        return 0;
    }
    int lo = 0, hi = lmf_uc_n_ranges - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        if (cp < lmf_uc_ranges[mid].lo) {
            hi = mid - 1;
        } else if (cp > lmf_uc_ranges[mid].hi) {
            lo = mid + 1;
        } else {
            return (int)lmf_uc_ranges[mid].cls;
        }
    }
    return 0;
}

/* Bounds for the second byte after each lead byte (Unicode Table 3-7, well-formed sequences). */
int lmf_utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
    uint8_t b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    uint32_t c;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        c = b & 0x07;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        return -1;
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) return -i;
        uint8_t x = s[i];
        if (x < lo || x > hi) return -i;
        lo = 0x80;
        hi = 0xBF;
        c = (c << 6) | (x & 0x3F);
    }
    *cp = c;
    return need + 1;
}

int lmf_utf8_valid(const uint8_t *s, size_t n) {
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        int k = lmf_utf8_next(s + i, n - i, &cp);
        if (k < 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

int lmf_utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t lmf_utf8_complete_prefix(const uint8_t *s, size_t n) {
    /* A character is at most 4 bytes: only the last 3 bytes can start an unfinished one. */
    size_t start = n > 3 ? n - 3 : 0;
    for (size_t i = start; i < n; i++) {
        uint32_t cp;
        if (s[i] < 0xC2 || s[i] > 0xF4) continue;
        int k = lmf_utf8_next(s + i, n - i, &cp);
        if (k < 0 && (size_t)(-k) == n - i) return i; /* valid so far, ran out of bytes */
    }
    return n;
}

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes
 * are moved to 256.. in byte order. */
static int is_printable_byte(unsigned b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t lmf_bytelevel_cp(uint8_t b) {
    if (is_printable_byte(b)) return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++) k += !is_printable_byte(x);
    return 256 + k;
}

int lmf_bytelevel_byte(uint32_t cp) {
    if (cp < 256) return is_printable_byte(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    unsigned k = cp - 256;
    for (unsigned x = 0; x < 256; x++)
        if (!is_printable_byte(x) && k-- == 0) return (int)x;
    return -1;
}

int lmf_utf8_lossy(lmf_sbuf *out, const uint8_t *s, size_t n) {
    static const char repl[] = "\xEF\xBF\xBD";
    size_t i = 0, run = 0;
    while (i < n) {
        uint32_t cp;
        int k = lmf_utf8_next(s + i, n - i, &cp);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        if (lmf_sbuf_add(out, s + run, i - run)) return LMF_ENOMEM;
        if (lmf_sbuf_add(out, repl, 3)) return LMF_ENOMEM;
        i += (size_t)(-k);
        run = i;
    }
    return lmf_sbuf_add(out, s + run, n - run);
}

int lmf_sbuf_add(lmf_sbuf *b, const void *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory (%zu bytes)", cap);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}
