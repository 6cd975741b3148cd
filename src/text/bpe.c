/* Byte-pair-encoding model as HF tokenizers' BPE: vocab/merges tables, byte fallback, unk
 * fusing, ignore_merges, and the linked-list + min-heap merge loop (lowest merge rank first, then
 * leftmost), including HF's rule for skipping stale heap entries. */
#include "text/tokenizer_internal.h"

#include "lmforge/core.h"
#include "lmforge/json.h"

#include <stdlib.h>
#include <string.h>

int32_t lmf_bpe_lookup(const lmf_bpe *m, const char *s, size_t n) {
    for (uint32_t i = (uint32_t)lmf_hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slots[i];
        if (id < 0) return -1;
        if (m->tlen[id] == n && !memcmp(m->tok[id], s, n)) return id;
    }
}

static int merge_find(const lmf_bpe *m, int32_t a, int32_t b, uint32_t *rank, int32_t *new_id) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = (uint32_t)lmf_hash_u64(key) & m->mmask;; i = (i + 1) & m->mmask) {
        if (m->mkeys[i] == UINT64_MAX) return 0;
        if (m->mkeys[i] == key) {
            *rank = m->mrank[i];
            *new_id = m->mnew[i];
            return 1;
        }
    }
}

static uint32_t pow2_at_least(size_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int add_merge(lmf_bpe *m, const char *a, size_t alen, const char *b, size_t blen,
                     uint32_t rank, const char *file, char **joined, size_t *jcap) {
    int32_t ia = lmf_bpe_lookup(m, a, alen), ib = lmf_bpe_lookup(m, b, blen);
    if (ia < 0 || ib < 0)
        return lmf_errorf(LMF_EFORMAT, "%s: model.merges[%u]: token \"%.*s\" is not in the vocab",
                          file, rank, (int)(ia < 0 ? alen : blen), ia < 0 ? a : b);
    if (alen + blen + 1 > *jcap) {
        char *p = realloc(*joined, alen + blen + 1);
        if (!p) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
        *joined = p;
        *jcap = alen + blen + 1;
    }
    memcpy(*joined, a, alen);
    memcpy(*joined + alen, b, blen);
    int32_t inew = lmf_bpe_lookup(m, *joined, alen + blen);
    if (inew < 0)
        return lmf_errorf(LMF_EFORMAT,
                          "%s: model.merges[%u]: merged token \"%.*s\" is not in the vocab", file,
                          rank, (int)(alen + blen), *joined);
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    for (uint32_t i = (uint32_t)lmf_hash_u64(key) & m->mmask;; i = (i + 1) & m->mmask) {
        /* a repeated pair: HF collects merges into a map, so the last rank wins */
        if (m->mkeys[i] == key || m->mkeys[i] == UINT64_MAX) {
            m->mkeys[i] = key;
            m->mrank[i] = rank;
            m->mnew[i] = inew;
            return 0;
        }
    }
}

static int load_vocab(lmf_bpe *m, const cJSON *vocab, const char *file) {
    if (!cJSON_IsObject(vocab))
        return lmf_errorf(LMF_EFORMAT, "%s: model.vocab: expected an object", file);
    int32_t max_id = -1, count = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 16777216.0 ||
            e->valuedouble != (double)(int32_t)e->valuedouble)
            return lmf_errorf(LMF_EFORMAT, "%s: model.vocab[\"%s\"]: expected a non-negative id",
                              file, e->string);
        if ((int32_t)e->valuedouble > max_id) max_id = (int32_t)e->valuedouble;
        count++;
    }
    m->n_ids = max_id + 1;
    m->mask = pow2_at_least((size_t)count * 2) - 1;
    m->tok = calloc((size_t)m->n_ids + 1, sizeof *m->tok);
    m->tlen = calloc((size_t)m->n_ids + 1, sizeof *m->tlen);
    m->slots = malloc(((size_t)m->mask + 1) * sizeof *m->slots);
    if (!m->tok || !m->tlen || !m->slots) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
    memset(m->slots, 0xff, ((size_t)m->mask + 1) * sizeof *m->slots);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id = (int32_t)e->valuedouble;
        size_t n = strlen(e->string);
        if (m->tok[id])
            return lmf_errorf(LMF_EFORMAT, "%s: model.vocab: id %d used twice (\"%s\")", file, id,
                              e->string);
        if (!(m->tok[id] = lmf_strdup(e->string)))
            return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
        m->tlen[id] = (uint32_t)n;
        uint32_t i = (uint32_t)lmf_hash_bytes(e->string, n) & m->mask;
        while (m->slots[i] >= 0) i = (i + 1) & m->mask;
        m->slots[i] = id;
    }
    return 0;
}

/* The space in s at which s = a + " " + b with a, b and ab all in the vocab, or NULL. */
static const char *resolve_spaces(const lmf_bpe *m, const char *s) {
    size_t n = strlen(s);
    char *ab = malloc(n);
    const char *hit = NULL;
    for (size_t i = 1; ab && !hit && i + 1 < n; i++) {
        if (s[i] != ' ') continue;
        memcpy(ab, s, i);
        memcpy(ab + i, s + i + 1, n - i - 1);
        if (lmf_bpe_lookup(m, s, i) >= 0 && lmf_bpe_lookup(m, s + i + 1, n - i - 1) >= 0 &&
            lmf_bpe_lookup(m, ab, n - 1) >= 0)
            hit = s + i;
    }
    free(ab);
    return hit;
}

static int load_merges(lmf_bpe *m, const cJSON *merges, const char *file) {
    if (!cJSON_IsArray(merges))
        return lmf_errorf(LMF_EFORMAT, "%s: model.merges: expected an array", file);
    int count = cJSON_GetArraySize(merges), rc = 0;
    m->mmask = pow2_at_least((size_t)count * 2) - 1;
    size_t cap = (size_t)m->mmask + 1;
    m->mkeys = malloc(cap * sizeof *m->mkeys);
    m->mrank = malloc(cap * sizeof *m->mrank);
    m->mnew = malloc(cap * sizeof *m->mnew);
    if (!m->mkeys || !m->mrank || !m->mnew)
        return lmf_errorf(LMF_ENOMEM, "%s: out of memory", file);
    memset(m->mkeys, 0xff, cap * sizeof *m->mkeys);
    char *joined = NULL;
    size_t jcap = 0;
    uint32_t rank = 0;
    for (const cJSON *e = merges->child; e; e = e->next, rank++) {
        const char *a, *b;
        size_t alen, blen;
        if (cJSON_IsString(e)) {
            a = e->valuestring;
            const char *sp = strchr(a, ' ');
            if (sp && strchr(sp + 1, ' ') && (sp = resolve_spaces(m, a))) {
                /* Tokens containing spaces (Llama-2 has "  ", "▁ ") make "a b" ambiguous; HF
                 * 0.20 refuses such files, we take the first split that the vocab supports. */
            } else if (!sp || strchr(sp + 1, ' ')) {
                rc = lmf_errorf(LMF_EFORMAT, "%s: model.merges[%u]: \"%s\" is not two tokens", file,
                                rank, a);
                goto done;
            }
            alen = (size_t)(sp - a);
            b = sp + 1;
            blen = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            a = e->child->valuestring;
            b = e->child->next->valuestring;
            alen = strlen(a);
            blen = strlen(b);
        } else {
            rc = lmf_errorf(LMF_EFORMAT, "%s: model.merges[%u]: expected \"a b\" or [a, b]", file,
                            rank);
            goto done;
        }
        if ((rc = add_merge(m, a, alen, b, blen, rank, file, &joined, &jcap))) goto done;
    }
done:
    free(joined);
    return rc;
}

int lmf_bpe_init(lmf_bpe *m, const cJSON *model, const char *file) {
    memset(m, 0, sizeof *m);
    m->unk = -1;
    int rc;
    const char *type = NULL, *unk = NULL, *s;
    if ((rc = lmf_json_get_str(model, "type", file, &type)) < 0) return rc;
    if (rc == 0 || strcmp(type, "BPE") != 0)
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: model.type \"%s\" is not supported (only BPE)",
                          file, type ? type : "(missing)");
    double dropout;
    if ((rc = lmf_json_get_num(model, "dropout", file, &dropout)) < 0) return rc;
    if (rc == 1 && dropout != 0.0)
        return lmf_errorf(LMF_EUNSUPPORTED, "%s: model.dropout is not supported", file);
    if ((rc = lmf_json_get_bool(model, "fuse_unk", file, &m->fuse_unk)) < 0) return rc;
    if ((rc = lmf_json_get_bool(model, "byte_fallback", file, &m->byte_fallback)) < 0) return rc;
    if ((rc = lmf_json_get_bool(model, "ignore_merges", file, &m->ignore_merges)) < 0) return rc;
    static const char *const unsupported[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        s = NULL;
        if ((rc = lmf_json_get_str(model, unsupported[i], file, &s)) < 0) return rc;
        if (s && s[0])
            return lmf_errorf(LMF_EUNSUPPORTED, "%s: model.%s \"%s\" is not supported", file,
                              unsupported[i], s);
    }
    if ((rc = load_vocab(m, cJSON_GetObjectItemCaseSensitive(model, "vocab"), file))) return rc;
    if ((rc = load_merges(m, cJSON_GetObjectItemCaseSensitive(model, "merges"), file))) return rc;
    if ((rc = lmf_json_get_str(model, "unk_token", file, &unk)) < 0) return rc;
    if (unk && (m->unk = lmf_bpe_lookup(m, unk, strlen(unk))) < 0)
        return lmf_errorf(LMF_EFORMAT, "%s: model.unk_token \"%s\" is not in the vocab", file, unk);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_tok[b] = lmf_bpe_lookup(m, name, 6);
    }
    return 0;
}

void lmf_bpe_free(lmf_bpe *m) {
    if (m->tok)
        for (int32_t i = 0; i < m->n_ids; i++) free(m->tok[i]);
    free(m->tok);
    free(m->tlen);
    free(m->slots);
    free(m->mkeys);
    free(m->mrank);
    free(m->mnew);
    memset(m, 0, sizeof *m);
}

int lmf_ids_push(lmf_ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

typedef struct bpe_heap_ent {
    uint32_t rank, pos;
    int32_t new_id;
} bpe_heap_ent;

static int ent_less(const bpe_heap_ent *x, const bpe_heap_ent *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static int heap_push(lmf_bpe_scratch *s, size_t *n, bpe_heap_ent e) {
    if (*n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        bpe_heap_ent *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = (*n)++;
    while (i > 0 && ent_less(&e, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
    return 0;
}

static bpe_heap_ent heap_pop(lmf_bpe_scratch *s, size_t *n) {
    bpe_heap_ent top = s->heap[0], last = s->heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && ent_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!ent_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (*n) s->heap[i] = last;
    return top;
}

static int sym_push(lmf_bpe_scratch *s, size_t *n, int32_t id) {
    if (*n == s->sym_cap) {
        size_t cap = s->sym_cap ? s->sym_cap * 2 : 64;
        int32_t *a = realloc(s->sym, cap * sizeof *a), *b, *c;
        if (a) s->sym = a;
        b = realloc(s->prev, cap * sizeof *b);
        if (b) s->prev = b;
        c = realloc(s->next, cap * sizeof *c);
        if (c) s->next = c;
        if (!a || !b || !c) return lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
        s->sym_cap = cap;
    }
    s->sym[*n] = id;
    s->prev[*n] = (int32_t)*n - 1;
    s->next[*n] = (int32_t)*n + 1;
    (*n)++;
    return 0;
}

/* Initial symbols of a word: one per character, "<0xXX>" tokens for characters outside the
 * vocab with byte_fallback, else unk (fused when fuse_unk); HF's order of these cases kept. */
static int split_word(const lmf_bpe *m, lmf_bpe_scratch *s, const char *w, size_t n, size_t *ns) {
    int rc;
    int32_t pending_unk = -1;
    *ns = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = lmf_utf8_next((const uint8_t *)w + i, n - i, &cp);
        size_t clen = k > 0 ? (size_t)k : 1;
        int32_t id = lmf_bpe_lookup(m, w + i, clen);
        if (id >= 0) {
            if (pending_unk >= 0 && (rc = sym_push(s, ns, pending_unk))) return rc;
            pending_unk = -1;
            if ((rc = sym_push(s, ns, id))) return rc;
        } else {
            int all = m->byte_fallback;
            for (size_t j = 0; all && j < clen; j++) all = m->byte_tok[(uint8_t)w[i + j]] >= 0;
            if (all) {
                for (size_t j = 0; j < clen; j++)
                    if ((rc = sym_push(s, ns, m->byte_tok[(uint8_t)w[i + j]]))) return rc;
            } else if (m->unk >= 0) {
                if (pending_unk >= 0 && !m->fuse_unk && (rc = sym_push(s, ns, pending_unk)))
                    return rc;
                pending_unk = m->unk;
            }
        }
        i += clen;
    }
    if (pending_unk >= 0 && (rc = sym_push(s, ns, pending_unk))) return rc;
    return 0;
}

static int merge_all(const lmf_bpe *m, lmf_bpe_scratch *s, size_t ns, lmf_ids *out) {
    int rc;
    size_t nh = 0;
    if (ns) s->next[ns - 1] = -1;
    uint32_t rank;
    int32_t nid;
    for (size_t i = 0; i + 1 < ns; i++)
        if (merge_find(m, s->sym[i], s->sym[i + 1], &rank, &nid) &&
            (rc = heap_push(s, &nh, (bpe_heap_ent){rank, (uint32_t)i, nid})))
            return rc;
    while (nh) {
        bpe_heap_ent top = heap_pop(s, &nh);
        int32_t pos = (int32_t)top.pos, nx = s->next[pos];
        if (s->sym[pos] < 0 || nx < 0) continue;
        /* stale entry: HF only checks that the pair still merges into the same token */
        if (!merge_find(m, s->sym[pos], s->sym[nx], &rank, &nid) || nid != top.new_id) continue;
        s->sym[pos] = top.new_id;
        s->sym[nx] = -1;
        s->next[pos] = s->next[nx];
        if (s->next[nx] >= 0) s->prev[s->next[nx]] = pos;
        int32_t pv = s->prev[pos], nn = s->next[pos];
        if (pv >= 0 && merge_find(m, s->sym[pv], s->sym[pos], &rank, &nid) &&
            (rc = heap_push(s, &nh, (bpe_heap_ent){rank, (uint32_t)pv, nid})))
            return rc;
        if (nn >= 0 && merge_find(m, s->sym[pos], s->sym[nn], &rank, &nid) &&
            (rc = heap_push(s, &nh, (bpe_heap_ent){rank, (uint32_t)pos, nid})))
            return rc;
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = s->next[i])
        if ((rc = lmf_ids_push(out, s->sym[i]))) return rc;
    return 0;
}

enum { CACHE_MAX_WORD = 64, CACHE_MAX_ENTRIES = 1 << 16 };

static int cache_grow(lmf_bpe_scratch *s) {
    uint32_t cap = s->c_mask ? (s->c_mask + 1) * 2 : 1024, mask = cap - 1;
    uint32_t *wo = malloc(cap * sizeof *wo), *wl = malloc(cap * sizeof *wl);
    uint32_t *io = malloc(cap * sizeof *io), *il = malloc(cap * sizeof *il);
    if (!wo || !wl || !io || !il) {
        free(wo), free(wl), free(io), free(il);
        return lmf_errorf(LMF_ENOMEM, "tokenizer: out of memory");
    }
    memset(wl, 0xff, cap * sizeof *wl);
    for (uint32_t i = 0; s->c_mask && i <= s->c_mask; i++) {
        if (s->c_word_len[i] == UINT32_MAX) continue;
        uint32_t j =
            (uint32_t)lmf_hash_bytes(s->c_words.p + s->c_word_off[i], s->c_word_len[i]) & mask;
        while (wl[j] != UINT32_MAX) j = (j + 1) & mask;
        wo[j] = s->c_word_off[i], wl[j] = s->c_word_len[i];
        io[j] = s->c_ids_off[i], il[j] = s->c_ids_len[i];
    }
    free(s->c_word_off), free(s->c_word_len), free(s->c_ids_off), free(s->c_ids_len);
    s->c_word_off = wo, s->c_word_len = wl, s->c_ids_off = io, s->c_ids_len = il;
    s->c_mask = mask;
    return 0;
}

int lmf_bpe_word(const lmf_bpe *m, lmf_bpe_scratch *s, const char *w, size_t n, lmf_ids *out) {
    int rc;
    if (n == 0) return 0;
    if (m->ignore_merges) {
        int32_t id = lmf_bpe_lookup(m, w, n);
        if (id >= 0) return lmf_ids_push(out, id);
    }
    uint32_t slot = 0;
    int cacheable = n <= CACHE_MAX_WORD && s->c_used < CACHE_MAX_ENTRIES;
    if (cacheable) {
        if (!s->c_mask && (rc = cache_grow(s))) return rc;
        for (slot = (uint32_t)lmf_hash_bytes(w, n) & s->c_mask; s->c_word_len[slot] != UINT32_MAX;
             slot = (slot + 1) & s->c_mask) {
            if (s->c_word_len[slot] == n && !memcmp(s->c_words.p + s->c_word_off[slot], w, n)) {
                for (uint32_t i = 0; i < s->c_ids_len[slot]; i++)
                    if ((rc = lmf_ids_push(out, s->c_ids.v[s->c_ids_off[slot] + i]))) return rc;
                return 0;
            }
        }
    }
    size_t ns, start = out->n;
    if ((rc = split_word(m, s, w, n, &ns)) || (rc = merge_all(m, s, ns, out))) return rc;
    if (!cacheable) return 0;
    s->c_word_off[slot] = (uint32_t)s->c_words.len;
    s->c_ids_off[slot] = (uint32_t)s->c_ids.n;
    s->c_ids_len[slot] = (uint32_t)(out->n - start);
    if ((rc = lmf_sbuf_add(&s->c_words, w, n))) return rc;
    for (size_t i = start; i < out->n; i++)
        if ((rc = lmf_ids_push(&s->c_ids, out->v[i]))) return rc;
    s->c_word_len[slot] = (uint32_t)n; /* entry becomes visible only once complete */
    if (++s->c_used * 2 > s->c_mask + 1) return cache_grow(s);
    return 0;
}

void lmf_bpe_scratch_free(lmf_bpe_scratch *s) {
    free(s->sym), free(s->prev), free(s->next), free(s->heap);
    free(s->c_word_off), free(s->c_word_len), free(s->c_ids_off), free(s->c_ids_len);
    free(s->c_words.p), free(s->c_ids.v);
    memset(s, 0, sizeof *s);
}
