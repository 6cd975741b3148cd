/* NFC as UAX #15 specifies it: full canonical decomposition (recursive table lookups plus the
 * Hangul arithmetic), a stable sort of each run of non-starters by combining class, then the
 * composition pass that blocks a mark when an earlier mark of the same or higher class sits
 * between it and the starter. ASCII-only runs skip all of this. */
#include "text/nfc.h"

#include "lmforge/error.h"

#include <stdlib.h>

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7 };
enum { LCOUNT = 19, VCOUNT = 21, TCOUNT = 28, NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static uint32_t ccc_of(uint32_t cp) {
    if (cp < 0x300) return 0;
    int lo = 0, hi = lmf_nfc_n_ccc - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        if (cp < lmf_nfc_ccc_ranges[mid].lo)
            hi = mid - 1;
        else if (cp > lmf_nfc_ccc_ranges[mid].hi)
            lo = mid + 1;
        else
            return lmf_nfc_ccc_ranges[mid].ccc;
    }
    return 0;
}

static const lmf_nfc_map *find_decomp(uint32_t cp) {
    int lo = 0, hi = lmf_nfc_n_decomp - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        if (cp < lmf_nfc_decomp[mid].a)
            hi = mid - 1;
        else if (cp > lmf_nfc_decomp[mid].a)
            lo = mid + 1;
        else
            return &lmf_nfc_decomp[mid];
    }
    return NULL;
}

static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE &&
        b < TBASE + TCOUNT)
        return a + (b - TBASE);
    int lo = 0, hi = lmf_nfc_n_comp - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        const lmf_nfc_map *m = &lmf_nfc_comp[mid];
        if (a < m->a || (a == m->a && b < m->b))
            hi = mid - 1;
        else if (a > m->a || b > m->b)
            lo = mid + 1;
        else
            return m->c;
    }
    return 0;
}

typedef struct cpbuf {
    uint32_t *v;
    size_t n, cap;
} cpbuf;

static int cp_push(cpbuf *b, uint32_t cp) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        uint32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v) return lmf_errorf(LMF_ENOMEM, "tokenizer: NFC: out of memory");
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = cp;
    return 0;
}

static int decompose(cpbuf *b, uint32_t cp, int depth) {
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        uint32_t s = cp - SBASE, t = s % TCOUNT;
        int rc = cp_push(b, LBASE + s / NCOUNT);
        if (!rc) rc = cp_push(b, VBASE + (s % NCOUNT) / TCOUNT);
        if (!rc && t) rc = cp_push(b, TBASE + t);
        return rc;
    }
    const lmf_nfc_map *d = cp < 0xC0 || depth > 8 ? NULL : find_decomp(cp);
    if (!d) return cp_push(b, cp);
    int rc = decompose(b, d->b, depth + 1);
    if (!rc && d->c) rc = decompose(b, d->c, depth + 1);
    return rc;
}

int lmf_nfc(lmf_sbuf *out, const char *s, size_t n) {
    cpbuf b = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc;) {
        uint32_t cp;
        int k = lmf_utf8_next((const uint8_t *)s + i, n - i, &cp);
        if (k < 0) {
            k = 1;
            cp = 0xFFFD;
        }
        rc = decompose(&b, cp, 0);
        i += (size_t)k;
    }
    /* canonical ordering: insertion sort of each non-starter run by class (stable) */
    for (size_t i = 1; i < b.n && !rc; i++) {
        uint32_t c = ccc_of(b.v[i]), x = b.v[i];
        if (!c) continue;
        size_t j = i;
        while (j > 0 && ccc_of(b.v[j - 1]) > c) {
            b.v[j] = b.v[j - 1];
            j--;
        }
        b.v[j] = x;
    }
    if (b.n && !rc) {
        size_t starter = 0, w = 1;
        uint32_t last = ccc_of(b.v[0]) ? 256 : 0;
        for (size_t r = 1; r < b.n; r++) {
            uint32_t ch = b.v[r], c = ccc_of(ch), comp = compose(b.v[starter], ch);
            if (comp && (last < c || last == 0)) {
                b.v[starter] = comp;
                continue;
            }
            if (c == 0) starter = w;
            last = c;
            b.v[w++] = ch;
        }
        b.n = w;
    }
    for (size_t i = 0; i < b.n && !rc; i++) {
        char u[4];
        rc = lmf_sbuf_add(out, u, (size_t)lmf_utf8_put(b.v[i], u));
    }
    free(b.v);
    return rc;
}
