/* Decoding ids to text through the tokenizer.json decoder chain (ByteLevel; Replace, ByteFallback,
 * Fuse, Strip; Metaspace), with each step's per-token behaviour copied from HF tokenizers so the
 * output equals Tokenizer.decode(); and the streaming detokenizer built on it. */
#include "lmforge/tokenizer.h"

#include "lmforge/core.h"
#include "text/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

static const char REPLACEMENT[] = "\xEF\xBF\xBD";

/* "<0xXX>" -> byte, else -1 (as HF's ByteFallback: six bytes, hex digits in either case). */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'                 ? c - '0'
                : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10
                                                     : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int flush_bytes(lmf_pieces *out, lmf_sbuf *bytes, int raw) {
    int rc = 0;
    if (!bytes->len) return 0;
    if (raw || lmf_utf8_valid((const uint8_t *)bytes->p, bytes->len)) {
        rc = lmf_pieces_add(out, bytes->p, bytes->len, 0);
    } else {
        for (size_t i = 0; i < bytes->len && !rc; i++) rc = lmf_pieces_add(out, REPLACEMENT, 3, 0);
    }
    bytes->len = 0;
    return rc;
}

/* Start of the last UTF-8 character of s[0..n) (n > 0). */
static size_t last_char(const char *s, size_t n) {
    size_t i = n - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80) i--;
    return i;
}

/* One decoder step from in to out (out is cleared first). */
static int dec_step(const lmf_dec_step *st, const lmf_pieces *in, lmf_pieces *out, lmf_sbuf *tmp,
                    int raw) {
    int rc = 0;
    lmf_pieces_clear(out);
    tmp->len = 0;
    if (st->kind == DEC_FUSE || st->kind == DEC_BYTELEVEL) {
        for (size_t k = 0; k < in->n; k++) {
            const char *s = in->buf.p + in->off[k];
            size_t n = in->len[k], mark = tmp->len;
            if (st->kind == DEC_FUSE) {
                if ((rc = lmf_sbuf_add(tmp, s, n))) return rc;
                continue;
            }
            /* a token whose characters are not all in the byte alphabet passes through as is */
            int all = 1;
            for (size_t i = 0; i < n && all;) {
                uint32_t cp;
                int l = lmf_utf8_next((const uint8_t *)s + i, n - i, &cp), b;
                if (l < 0 || (b = lmf_bytelevel_byte(cp)) < 0) {
                    all = 0;
                    break;
                }
                if ((rc = lmf_sbuf_addc(tmp, (char)b))) return rc;
                i += (size_t)l;
            }
            if (!all) {
                tmp->len = mark;
                if ((rc = lmf_sbuf_add(tmp, s, n))) return rc;
            }
        }
        if (st->kind == DEC_FUSE || raw)
            return lmf_pieces_add(out, tmp->p ? tmp->p : "", tmp->len, 0);
        lmf_sbuf lossy = {0};
        rc = lmf_utf8_lossy(&lossy, (const uint8_t *)(tmp->p ? tmp->p : ""), tmp->len);
        if (!rc) rc = lmf_pieces_add(out, lossy.p ? lossy.p : "", lossy.len, 0);
        free(lossy.p);
        return rc;
    }
    for (size_t k = 0; k < in->n && !rc; k++) {
        const char *s = in->buf.p + in->off[k];
        size_t n = in->len[k];
        if (st->kind == DEC_BYTEFALLBACK) {
            int b = byte_token(s, n);
            if (b >= 0) {
                rc = lmf_sbuf_addc(tmp, (char)b);
            } else if (!(rc = flush_bytes(out, tmp, raw))) {
                rc = lmf_pieces_add(out, s, n, 0);
            }
        } else if (st->kind == DEC_REPLACE || st->kind == DEC_METASPACE) {
            size_t start = out->buf.len;
            int drop = st->kind == DEC_METASPACE && k == 0 && st->prepend_scheme != PREPEND_NEVER;
            if ((rc = lmf_pieces_add(out, "", 0, 0))) return rc;
            for (size_t i = 0; i < n && !rc;) {
                if (st->alen && i + st->alen <= n && !memcmp(s + i, st->a, st->alen)) {
                    if (st->kind == DEC_REPLACE)
                        rc = lmf_sbuf_add(&out->buf, st->b, st->blen);
                    else if (!drop)
                        rc = lmf_sbuf_addc(&out->buf, ' ');
                    i += st->alen;
                } else {
                    rc = lmf_sbuf_addc(&out->buf, s[i++]);
                }
            }
            out->len[out->n - 1] = out->buf.len - start;
        } else { /* DEC_STRIP: up to start/stop copies of the content character at either end */
            size_t b = 0, e = n;
            for (int i = 0; i < st->start && b < e; i++) {
                if (e - b < st->alen || memcmp(s + b, st->a, st->alen)) break;
                b += st->alen;
            }
            for (int i = 0; i < st->stop && b < e; i++) {
                size_t lc = last_char(s + b, e - b) + b;
                if (e - lc != st->alen || memcmp(s + lc, st->a, st->alen)) break;
                e = lc;
            }
            rc = lmf_pieces_add(out, s + b, e - b, 0);
        }
    }
    if (!rc && st->kind == DEC_BYTEFALLBACK) rc = flush_bytes(out, tmp, raw);
    return rc;
}

int lmf_tok_decode_bytes(const lmf_tokenizer *t, const int32_t *ids, int n, int skip_special,
                         int raw, lmf_sbuf *out) {
    lmf_pieces a = {0}, b = {0};
    lmf_sbuf tmp = {0};
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const char *tok = lmf_tokenizer_id_to_token(t, ids[i]);
        if (!tok) continue; /* HF drops ids it has no token for */
        if (skip_special && lmf_tokenizer_is_special(t, ids[i])) continue;
        rc = lmf_pieces_add(&a, tok, strlen(tok), 0);
    }
    for (int k = 0; k < t->n_dec && !rc; k++) {
        rc = dec_step(&t->dec[k], &a, &b, &tmp, raw);
        lmf_pieces swap = a;
        a = b;
        b = swap;
    }
    for (size_t k = 0; k < a.n && !rc; k++) {
        if (!t->has_decoder && k > 0 && (rc = lmf_sbuf_addc(out, ' '))) break;
        rc = lmf_sbuf_add(out, a.buf.p + a.off[k], a.len[k]);
    }
    if (!rc && !out->p) rc = lmf_sbuf_add(out, "", 0);
    lmf_pieces_free(&a);
    lmf_pieces_free(&b);
    free(tmp.p);
    return rc;
}

int lmf_tokenizer_decode(const lmf_tokenizer *t, const int32_t *ids, int n, int skip_special,
                         char **text, size_t *len) {
    lmf_sbuf out = {0};
    *text = NULL;
    if (len) *len = 0;
    int rc = lmf_tok_decode_bytes(t, ids, n, skip_special, 0, &out);
    if (rc) {
        free(out.p);
        return rc;
    }
    *text = out.p;
    if (len) *len = out.len;
    return 0;
}

void lmf_detok_stream_init(lmf_detok_stream *s, const lmf_tokenizer *t) {
    memset(s, 0, sizeof *s);
    s->t = t;
}

/* ids[s->prefix .. to) decoded (raw: bytes as they are, else as text). */
static int decode_window(const lmf_detok_stream *s, int to, int raw, lmf_sbuf *out) {
    return lmf_tok_decode_bytes(s->t, s->ids + s->prefix, to - s->prefix, 0, raw, out);
}

/* Decodes a window of recent ids, not all of them (all of them on every push made a
 * generation O(n^2): at 2,000 tokens ~0.3 ms a token on the engine thread): the window starts
 * at the id before the last returned text (context for the decoders' per-position rules:
 * Metaspace's first-token space, byte-fallback runs), and what it decodes past that text is
 * the new text. While the raw bytes end inside a character nothing is returned (hold), so
 * replacement characters for a half-received character never escape; finish (hold = 0)
 * returns them as HF's decode does. */
static int stream_emit(lmf_detok_stream *s, int hold, char **out) {
    lmf_sbuf raw = {0}, old = {0}, text = {0};
    int rc = 0, emit = 1;
    if (hold) {
        rc = decode_window(s, s->n, 1, &raw);
        emit = !rc && lmf_utf8_complete_prefix((const uint8_t *)raw.p, raw.len) == raw.len;
    }
    if (!rc && emit) rc = decode_window(s, s->n, 0, &text);
    if (!rc && emit) rc = decode_window(s, s->read, 0, &old);
    if (hold && text.len <= old.len) emit = 0;
    size_t from = old.len < text.len ? old.len : text.len, len = emit ? text.len - from : 0;
    if (!rc && !(*out = malloc(len + 1))) rc = lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
    if (!rc) {
        if (len) memcpy(*out, text.p + from, len);
        (*out)[len] = 0;
        if (emit) s->prefix = s->read, s->read = s->n;
    }
    free(raw.p);
    free(old.p);
    free(text.p);
    return rc;
}

int lmf_detok_stream_push(lmf_detok_stream *s, int32_t id, char **out) {
    *out = NULL;
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        int32_t *v = realloc(s->ids, (size_t)cap * sizeof *v);
        if (!v) return lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
        s->ids = v;
        s->cap = cap;
    }
    s->ids[s->n++] = id;
    return stream_emit(s, 1, out);
}

int lmf_detok_stream_finish(lmf_detok_stream *s, char **out) {
    *out = NULL;
    return stream_emit(s, 0, out);
}

void lmf_detok_stream_free(lmf_detok_stream *s) {
    free(s->ids);
    memset(s, 0, sizeof *s);
}
