/* Normalizers (Prepend, Replace, NFC) and pre-tokenizers (ByteLevel, Split, Metaspace) as HF runs
 * them on each piece of text left between added tokens. The Split regexes of GPT-2, Llama-3 and
 * Qwen2 are implemented by hand (recognised by their exact pattern text) instead of with a regex
 * engine; each branch below follows the backtracking (leftmost-first) semantics of Oniguruma that
 * HF uses. */
#include "text/tokenizer_internal.h"

#include "lmforge/core.h"
#include "text/nfc.h"

#include <stdlib.h>
#include <string.h>

static const char RX_GPT2_TEXT[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char RX_LLAMA3_TEXT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RX_QWEN2_TEXT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int lmf_regex_lookup(const char *pattern) {
    if (!strcmp(pattern, RX_GPT2_TEXT)) return RX_GPT2;
    if (!strcmp(pattern, RX_LLAMA3_TEXT)) return RX_LLAMA3;
    if (!strcmp(pattern, RX_QWEN2_TEXT)) return RX_QWEN2;
    return 0;
}

/* L/N/WS class bits of the character at s[i] (input is valid UTF-8); *len gets its length. */
static inline int cls_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
    const int mask = LMF_UC_L | LMF_UC_N | LMF_UC_WS;
    if (s[i] < 0x80) {
        *len = 1;
        return lmf_uc_class(s[i]) & mask;
    }
    uint32_t cp;
    int k = lmf_utf8_next(s + i, n - i, &cp);
    *len = k > 0 ? (size_t)k : 1;
    return k > 0 ? lmf_uc_class(cp) & mask : 0;
}

/* End of the run of characters starting at i whose class satisfies want (0: "other"). */
static size_t run(const uint8_t *s, size_t n, size_t i, int want, size_t max_chars) {
    size_t len;
    for (size_t c = 0; i < n && c < max_chars; c++) {
        int k = cls_at(s, n, i, &len);
        if (want ? !(k & want) : k != 0) break;
        i += len;
    }
    return i;
}

static int is_crlf(uint8_t c) {
    return c == '\r' || c == '\n';
}

/* \s+(?!\S)|\s+ from i (a whitespace character): the run minus its last character when a
 * non-space follows and that leaves at least one. */
static size_t ws_tail(const uint8_t *s, size_t n, size_t i) {
    size_t len, p = i, k = i;
    while (k < n && (cls_at(s, n, k, &len) & LMF_UC_WS)) {
        p = k;
        k += len;
    }
    if (k == n || p == i) return k;
    return p;
}

/* 's 't 're 've 'm 'll 'd (case-insensitive for Llama-3/Qwen2, where Oniguruma's case folding
 * also lets U+017F LATIN SMALL LETTER LONG S match s). Returns the end or 0. */
static size_t contraction(const uint8_t *s, size_t n, size_t i, int icase) {
    if (s[i] != '\'' || i + 1 >= n) return 0;
    uint8_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
    if (icase) {
        if (a == 0xC5 && b == 0xBF) return i + 3; /* ſ */
        if (a < 0x80) a |= 32;
        if (b < 0x80 && ((b | 32) >= 'a' && (b | 32) <= 'z')) b |= 32;
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
}

static size_t next_gpt2(const uint8_t *s, size_t n, size_t i) {
    size_t e = contraction(s, n, i, 0), len, len1;
    if (e) return e;
    int c0 = cls_at(s, n, i, &len);
    if (s[i] == ' ' && i + 1 < n) {
        int c1 = cls_at(s, n, i + 1, &len1);
        if (c1 & LMF_UC_L) return run(s, n, i + 1, LMF_UC_L, SIZE_MAX);
        if (c1 & LMF_UC_N) return run(s, n, i + 1, LMF_UC_N, SIZE_MAX);
        if (c1 == 0) return run(s, n, i + 1, 0, SIZE_MAX);
    }
    if (c0 & LMF_UC_L) return run(s, n, i, LMF_UC_L, SIZE_MAX);
    if (c0 & LMF_UC_N) return run(s, n, i, LMF_UC_N, SIZE_MAX);
    if (c0 == 0) return run(s, n, i, 0, SIZE_MAX);
    return ws_tail(s, n, i);
}

static size_t next_llama3(const uint8_t *s, size_t n, size_t i, size_t max_digits) {
    size_t e = contraction(s, n, i, 1), len, len1;
    if (e) return e;
    int c0 = cls_at(s, n, i, &len);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!is_crlf(s[i]) && !(c0 & (LMF_UC_L | LMF_UC_N)) && i + len < n &&
        (cls_at(s, n, i + len, &len1) & LMF_UC_L))
        return run(s, n, i + len, LMF_UC_L, SIZE_MAX);
    if (c0 & LMF_UC_L) return run(s, n, i, LMF_UC_L, SIZE_MAX);
    if (c0 & LMF_UC_N) return run(s, n, i, LMF_UC_N, max_digits);
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    size_t j = 0;
    if (s[i] == ' ' && i + 1 < n && cls_at(s, n, i + 1, &len1) == 0) {
        j = run(s, n, i + 1, 0, SIZE_MAX);
    } else if (c0 == 0) {
        j = run(s, n, i, 0, SIZE_MAX);
    }
    if (j) {
        while (j < n && is_crlf(s[j])) j++;
        return j;
    }
    /* \s*[\r\n]+ : up to and including the last \r or \n of the whitespace run */
    size_t k = i, last = SIZE_MAX;
    while (k < n && (cls_at(s, n, k, &len) & LMF_UC_WS)) {
        if (is_crlf(s[k])) last = k;
        k += len;
    }
    if (last != SIZE_MAX) return last + 1;
    return ws_tail(s, n, i);
}

size_t lmf_regex_next(int rx, const uint8_t *s, size_t n, size_t i) {
    switch (rx) {
    case RX_GPT2:
        return next_gpt2(s, n, i);
    case RX_LLAMA3:
        return next_llama3(s, n, i, 3);
    default:
        return next_llama3(s, n, i, 1);
    }
}

int lmf_pieces_add(lmf_pieces *p, const char *s, size_t n, int first) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        size_t *o = realloc(p->off, cap * sizeof *o), *l;
        if (o) p->off = o;
        l = realloc(p->len, cap * sizeof *l);
        if (l) p->len = l;
        int *f = realloc(p->first, cap * sizeof *f);
        if (f) p->first = f;
        if (!o || !l || !f) return lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
        p->cap = cap;
    }
    p->off[p->n] = p->buf.len;
    p->len[p->n] = n;
    p->first[p->n] = first;
    p->n++;
    return lmf_sbuf_add(&p->buf, s, n);
}

void lmf_pieces_clear(lmf_pieces *p) {
    p->n = 0;
    p->buf.len = 0;
}

void lmf_pieces_free(lmf_pieces *p) {
    free(p->buf.p), free(p->off), free(p->len), free(p->first);
    memset(p, 0, sizeof *p);
}

/* Applies the normalizer steps to s into out. */
static int normalize(const struct lmf_tokenizer *t, const char *s, size_t n, lmf_sbuf *out,
                     lmf_sbuf *tmp) {
    int rc;
    out->len = 0;
    if ((rc = lmf_sbuf_add(out, s, n))) return rc;
    for (int k = 0; k < t->n_norm; k++) {
        const lmf_norm_step *st = &t->norm[k];
        if (out->len == 0) break; /* HF's Prepend leaves an empty string empty; Replace too */
        tmp->len = 0;
        if (st->kind == NORM_PREPEND) {
            if ((rc = lmf_sbuf_add(tmp, st->a, st->alen))) return rc;
            if ((rc = lmf_sbuf_add(tmp, out->p, out->len))) return rc;
        } else if (st->kind == NORM_REPLACE) {
            for (size_t i = 0; i < out->len;) {
                if (st->alen && i + st->alen <= out->len && !memcmp(out->p + i, st->a, st->alen)) {
                    if ((rc = lmf_sbuf_add(tmp, st->b, st->blen))) return rc;
                    i += st->alen;
                } else {
                    if ((rc = lmf_sbuf_addc(tmp, out->p[i]))) return rc;
                    i++;
                }
            }
        } else { /* NORM_NFC; pure ASCII is already in NFC */
            size_t i = 0;
            while (i < out->len && !(out->p[i] & 0x80)) i++;
            if (i == out->len) continue;
            if ((rc = lmf_nfc(tmp, out->p, out->len))) return rc;
        }
        lmf_sbuf swap = *out;
        *out = *tmp;
        *tmp = swap;
    }
    return 0;
}

static int bytelevel_map(const struct lmf_tokenizer *t, const char *s, size_t n, lmf_sbuf *out) {
    int rc;
    for (size_t i = 0; i < n; i++)
        if ((rc = lmf_sbuf_add(out, t->bl_utf8[(uint8_t)s[i]], t->bl_len[(uint8_t)s[i]])))
            return rc;
    return 0;
}

/* One pre-tokenizer step over every piece of in, appending the resulting pieces to out. */
static int pretok_step(const struct lmf_tokenizer *t, const lmf_pretok_step *st,
                       const lmf_pieces *in, lmf_pieces *out, lmf_sbuf *tmp) {
    int rc;
    for (size_t k = 0; k < in->n; k++) {
        const uint8_t *s = (const uint8_t *)in->buf.p + in->off[k];
        size_t n = in->len[k];
        int first = in->first[k];
        if (st->kind == PT_BYTELEVEL) {
            tmp->len = 0;
            if (st->add_prefix_space && (n == 0 || s[0] != ' ') && (rc = lmf_sbuf_addc(tmp, ' ')))
                return rc;
            if ((rc = lmf_sbuf_add(tmp, s, n))) return rc;
            const uint8_t *u = (const uint8_t *)tmp->p;
            size_t un = tmp->len;
            for (size_t i = 0; i < un;) {
                size_t e = st->regex ? lmf_regex_next(st->regex, u, un, i) : un;
                size_t start = out->buf.len;
                if ((rc = lmf_pieces_add(out, "", 0, first && i == 0))) return rc;
                if ((rc = bytelevel_map(t, (const char *)u + i, e - i, &out->buf))) return rc;
                out->len[out->n - 1] = out->buf.len - start;
                i = e;
            }
        } else if (st->kind == PT_SPLIT) {
            for (size_t i = 0; i < n;) {
                size_t e = lmf_regex_next(st->regex, s, n, i);
                if ((rc = lmf_pieces_add(out, (const char *)s + i, e - i, first && i == 0)))
                    return rc;
                i = e;
            }
        } else { /* Metaspace: spaces become the replacement, optional prefix, split before it */
            tmp->len = 0;
            int prepend = st->prepend_scheme == PREPEND_ALWAYS ||
                          (st->prepend_scheme == PREPEND_FIRST && first);
            /* HF tests "starts with the replacement" after spaces became replacements */
            if (prepend && !(n && s[0] == ' ') &&
                !(n >= st->repl_len && !memcmp(s, st->repl, st->repl_len)) &&
                (rc = lmf_sbuf_add(tmp, st->repl, st->repl_len)))
                return rc;
            for (size_t i = 0; i < n; i++) {
                rc = s[i] == ' ' ? lmf_sbuf_add(tmp, st->repl, st->repl_len)
                                 : lmf_sbuf_addc(tmp, (char)s[i]);
                if (rc) return rc;
            }
            size_t b = 0;
            for (size_t i = 1; st->split && i + st->repl_len <= tmp->len; i++) {
                if (memcmp(tmp->p + i, st->repl, st->repl_len)) continue;
                if ((rc = lmf_pieces_add(out, tmp->p + b, i - b, first && b == 0))) return rc;
                b = i;
            }
            if (b < tmp->len &&
                (rc = lmf_pieces_add(out, tmp->p + b, tmp->len - b, first && b == 0)))
                return rc;
        }
    }
    return 0;
}

int lmf_tok_normalize(const struct lmf_tokenizer *t, const char *s, size_t n, lmf_sbuf *out) {
    lmf_sbuf scratch = {0};
    int rc = normalize(t, s, n, out, &scratch);
    free(scratch.p);
    return rc;
}

int lmf_tok_pretokenize(const struct lmf_tokenizer *t, const char *s, size_t n, int first,
                        lmf_pieces *out, lmf_pieces *tmp) {
    int rc = 0;
    lmf_pieces_clear(out);
    lmf_pieces_clear(tmp);
    lmf_sbuf scratch = {0};
    if (n == 0) return 0;
    if ((rc = lmf_pieces_add(out, s, n, first))) goto done;
    for (int k = 0; k < t->n_pretok; k++) {
        lmf_pieces_clear(tmp);
        if ((rc = pretok_step(t, &t->pretok[k], out, tmp, &scratch))) goto done;
        lmf_pieces swap = *out;
        *out = *tmp;
        *tmp = swap;
    }
done:
    free(scratch.p);
    return rc;
}
