/* Byte-level BPE trainer: GPT-2 pre-tokenizer without a regex engine, word counting, and the
 * merge loop with incremental pair counts (pair -> words index + lazy max-heap), then the Hugging
 * Face tokenizer.json / tokenizer_config.json writer. See include/lmforge/bpe_train.h for the id
 * layout and tie-breaking. */
#include "lmforge/bpe_train.h"

#include "lmforge/core.h"
#include "lmforge/json.h"
#include "text/unicode.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t off; /* into trainer.wbytes */
    uint32_t len;
    int64_t freq;
} word_entry;

typedef struct {
    int32_t a, b;
    int64_t count;
    int32_t *words; /* every word that has contained the pair (a superset; stale ones skipped) */
    int32_t n_words, cap_words;
    int32_t stamp; /* merge step that last touched it, to push each changed pair once */
    int banned;    /* would produce a special token's string */
} pair_entry;

typedef struct {
    int64_t count;
    int32_t pair;
} heap_entry;

struct lmf_bpe_trainer {
    int vocab_size, min_frequency, n_special;
    char **special;
    /* distinct pre-tokenized words and their counts */
    char *wbytes;
    size_t wb_len, wb_cap;
    word_entry *words;
    int32_t n_words, cap_words;
    int32_t *wslots; /* open addressing, -1 empty */
    uint32_t wmask;
    /* vocabulary: byte-level strings by id, with a string -> id index */
    char **tok;
    uint32_t *tlen;
    int32_t n_tok, cap_tok;
    int32_t *tslots;
    uint32_t tmask;
    int32_t (*merges)[2];
    int32_t n_merges, cap_merges;
    int trained;
};

/* Grows the array *pp to at least need elements; doubling keeps appends amortised O(1). */
static int grow(void *pp, int32_t *cap, int64_t need, size_t elem, const char *what) {
    if (need <= *cap) return 0;
    int64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    if (c > INT32_MAX) return lmf_errorf(LMF_ERANGE, "BPE trainer: too many %s", what);
    void *q = realloc(*(void **)pp, (size_t)c * elem);
    if (!q) return lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory for %s", what);
    *(void **)pp = q;
    *cap = (int32_t)c;
    return 0;
}

/* A fresh open-addressing table of 2^k slots, all -1. */
static int32_t *new_slots(uint32_t n_slots) {
    int32_t *s = malloc(n_slots * sizeof *s);
    if (s) memset(s, 0xff, n_slots * sizeof *s);
    return s;
}

/* ---- vocabulary ---- */

static int32_t tok_lookup(const lmf_bpe_trainer *t, const char *s, size_t n) {
    for (uint32_t i = (uint32_t)lmf_hash_bytes(s, n) & t->tmask;; i = (i + 1) & t->tmask) {
        int32_t id = t->tslots[i];
        if (id < 0 || (t->tlen[id] == n && !memcmp(t->tok[id], s, n))) return id;
    }
}

static void tok_index(lmf_bpe_trainer *t, int32_t id) {
    uint32_t i = (uint32_t)lmf_hash_bytes(t->tok[id], t->tlen[id]) & t->tmask;
    while (t->tslots[i] >= 0) i = (i + 1) & t->tmask;
    t->tslots[i] = id;
}

/* Appends a token (takes ownership of s) and returns its id, or a negative code. */
static int32_t tok_add(lmf_bpe_trainer *t, char *s, uint32_t n) {
    int32_t cap = t->cap_tok;
    if (grow(&t->tok, &cap, t->n_tok + 1, sizeof *t->tok, "tokens") ||
        grow(&t->tlen, &t->cap_tok, t->n_tok + 1, sizeof *t->tlen, "tokens")) {
        free(s);
        return LMF_ENOMEM;
    }
    if ((uint32_t)(t->n_tok + 1) * 2 > t->tmask + 1) {
        uint32_t n_slots = (t->tmask + 1) * 2;
        int32_t *slots = new_slots(n_slots);
        if (!slots) {
            free(s);
            return lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory for the vocabulary index");
        }
        free(t->tslots);
        t->tslots = slots;
        t->tmask = n_slots - 1;
        for (int32_t id = 0; id < t->n_tok; id++) tok_index(t, id);
    }
    t->tok[t->n_tok] = s;
    t->tlen[t->n_tok] = n;
    tok_index(t, t->n_tok);
    return t->n_tok++;
}

static int is_special(const lmf_bpe_trainer *t, const char *s, size_t n) {
    for (int i = 0; i < t->n_special; i++)
        if (strlen(t->special[i]) == n && !memcmp(t->special[i], s, n)) return 1;
    return 0;
}

int lmf_bpe_trainer_create(lmf_bpe_trainer **out, const lmf_bpe_train_opts *o) {
    *out = NULL;
    if (o->n_special < 0 || o->min_frequency < 0)
        return lmf_errorf(LMF_EINVAL, "BPE trainer: negative special token count or min frequency");
    if (o->vocab_size < 256 + o->n_special)
        return lmf_errorf(LMF_EINVAL,
                          "BPE trainer: vocab size %d is below the 256 byte tokens + %d special "
                          "token(s)",
                          o->vocab_size, o->n_special);
    lmf_bpe_trainer *t = calloc(1, sizeof *t);
    if (!t) return lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory");
    int rc = LMF_ENOMEM;
    t->vocab_size = o->vocab_size;
    t->min_frequency = o->min_frequency;
    t->wmask = 1023;
    t->tmask = 1023;
    t->wslots = new_slots(t->wmask + 1);
    t->tslots = new_slots(t->tmask + 1);
    t->special = calloc(o->n_special ? (size_t)o->n_special : 1, sizeof *t->special);
    if (!t->wslots || !t->tslots || !t->special) goto fail;
    for (int b = 0; b < 256; b++) {
        char buf[4];
        int n = lmf_utf8_put(lmf_bytelevel_cp((uint8_t)b), buf);
        char *s = malloc((size_t)n + 1);
        if (!s) goto fail;
        memcpy(s, buf, (size_t)n);
        s[n] = 0;
        if ((rc = tok_add(t, s, (uint32_t)n)) < 0) goto fail;
    }
    for (int i = 0; i < o->n_special; i++) {
        const char *sp = o->special_tokens[i];
        rc = LMF_EINVAL;
        if (!sp || !*sp) {
            lmf_errorf(rc, "BPE trainer: special token %d is empty", i + 1);
            goto fail;
        }
        /* A special token spelled like a byte-level token would give the vocab a duplicate key. */
        if (is_special(t, sp, strlen(sp)) || tok_lookup(t, sp, strlen(sp)) >= 0) {
            lmf_errorf(rc, "BPE trainer: special token \"%s\" is repeated or is a byte token", sp);
            goto fail;
        }
        if (!(t->special[i] = lmf_strdup(sp))) {
            rc = lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory");
            goto fail;
        }
        t->n_special = i + 1;
    }
    *out = t;
    return 0;
fail:
    if (rc == LMF_ENOMEM) lmf_errorf(rc, "BPE trainer: out of memory");
    lmf_bpe_trainer_free(t);
    return rc;
}

void lmf_bpe_trainer_free(lmf_bpe_trainer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_special; i++) free(t->special[i]);
    free(t->special);
    for (int32_t i = 0; i < t->n_tok; i++) free(t->tok[i]);
    free(t->tok);
    free(t->tlen);
    free(t->tslots);
    free(t->wbytes);
    free(t->words);
    free(t->wslots);
    free(t->merges);
    free(t);
}

/* ---- corpus: pre-tokenization and word counts ---- */

static int add_word(lmf_bpe_trainer *t, const char *s, size_t n) {
    if (n == 0) return 0;
    if (n > UINT32_MAX) return lmf_errorf(LMF_ERANGE, "BPE trainer: a word of %zu bytes", n);
    uint32_t i = (uint32_t)lmf_hash_bytes(s, n) & t->wmask;
    for (;; i = (i + 1) & t->wmask) {
        int32_t w = t->wslots[i];
        if (w < 0) break;
        if (t->words[w].len == n && !memcmp(t->wbytes + t->words[w].off, s, n)) {
            t->words[w].freq++;
            return 0;
        }
    }
    int rc = grow(&t->words, &t->cap_words, (int64_t)t->n_words + 1, sizeof *t->words, "words");
    if (rc) return rc;
    if (t->wb_len + n > t->wb_cap) {
        size_t cap = t->wb_cap ? t->wb_cap : 4096;
        while (cap < t->wb_len + n) cap *= 2;
        char *p = realloc(t->wbytes, cap);
        if (!p) return lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory for the corpus words");
        t->wbytes = p;
        t->wb_cap = cap;
    }
    memcpy(t->wbytes + t->wb_len, s, n);
    t->words[t->n_words] = (word_entry){t->wb_len, (uint32_t)n, 1};
    t->wb_len += n;
    t->wslots[i] = t->n_words++;
    if ((uint32_t)t->n_words * 2 > t->wmask + 1) {
        uint32_t n_slots = (t->wmask + 1) * 2;
        int32_t *slots = new_slots(n_slots);
        if (!slots) return lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory for the word index");
        for (int32_t w = 0; w < t->n_words; w++) {
            uint32_t j = (uint32_t)lmf_hash_bytes(t->wbytes + t->words[w].off, t->words[w].len);
            for (j &= n_slots - 1; slots[j] >= 0; j = (j + 1) & (n_slots - 1)) {
            }
            slots[j] = w;
        }
        free(t->wslots);
        t->wslots = slots;
        t->wmask = n_slots - 1;
    }
    return 0;
}

enum { C_OTHER, C_LETTER, C_NUMBER, C_SPACE };

/* Class and byte length of the character at s[i]. Invalid UTF-8 bytes count as one-byte "other"
 * characters: they cannot occur in the Rust strings HF splits, and byte-level BPE can still
 * represent them. */
static int char_class(const uint8_t *s, size_t n, size_t i, size_t *len) {
    uint32_t cp;
    int r = lmf_utf8_next(s + i, n - i, &cp);
    if (r <= 0) {
        *len = 1;
        return C_OTHER;
    }
    *len = (size_t)r;
    int c = lmf_uc_class(cp);
    if (c & LMF_UC_WS) return C_SPACE;
    if (c & LMF_UC_L) return C_LETTER;
    if (c & LMF_UC_N) return C_NUMBER;
    return C_OTHER;
}

/* Splits s[0..n) as GPT-2's regex does:
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * The alternatives are tried in order at each position, so a hand-written scanner reproduces it:
 * the only backtracking is \s+(?!\S), which leaves the last space of a run to the next word. */
static int pretokenize(lmf_bpe_trainer *t, const uint8_t *s, size_t n) {
    size_t i = 0, len;
    while (i < n) {
        size_t j = i;
        if (s[i] == '\'' && i + 1 < n) {
            uint8_t c = s[i + 1], d = i + 2 < n ? s[i + 2] : 0;
            if (c == 's' || c == 't' || c == 'm' || c == 'd')
                j = i + 2;
            else if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
                j = i + 3;
        }
        if (j == i) {
            int cls = char_class(s, n, i, &len);
            if (s[i] == ' ' && i + 1 < n) {
                size_t l1;
                int c1 = char_class(s, n, i + 1, &l1);
                if (c1 != C_SPACE) {
                    cls = c1;
                    j = i + 1;
                }
            }
            if (cls != C_SPACE) {
                while (j < n && char_class(s, n, j, &len) == cls) j += len;
            } else {
                size_t last = i, m = 0;
                while (j < n && char_class(s, n, j, &len) == C_SPACE) {
                    last = j;
                    j += len;
                    m++;
                }
                if (j < n && m >= 2) j = last; /* \s+(?!\S) backs off one character */
            }
        }
        int rc = add_word(t, (const char *)s + i, j - i);
        if (rc) return rc;
        i = j;
    }
    return 0;
}

int lmf_bpe_trainer_add_text(lmf_bpe_trainer *t, const char *text, size_t len) {
    if (t->trained) return lmf_errorf(LMF_EINVAL, "BPE trainer: text added after training");
    const uint8_t *s = (const uint8_t *)text;
    size_t start = 0;
    /* Special tokens are cut out first, as HF's added-token splitting does before the regex, so
     * their pieces never feed the merges. */
    for (size_t i = 0; i < len && t->n_special; i++) {
        for (int k = 0; k < t->n_special; k++) {
            if ((uint8_t)t->special[k][0] != s[i]) continue;
            size_t sl = strlen(t->special[k]);
            if (sl <= len - i && !memcmp(s + i, t->special[k], sl)) {
                int rc = pretokenize(t, s + start, i - start);
                if (rc) return rc;
                start = i + sl;
                i = start - 1;
                break;
            }
        }
    }
    return pretokenize(t, s + start, len - start);
}

int lmf_bpe_trainer_add_file(lmf_bpe_trainer *t, const char *path) {
    char *text = NULL;
    size_t len = 0;
    int rc = lmf_file_read_all(path, &text, &len);
    if (rc) return lmf_error_prefix(rc, "corpus"); /* the message already names the file */
    rc = lmf_bpe_trainer_add_text(t, text, len);
    free(text);
    if (rc) return lmf_error_prefix(rc, "corpus %s", path);
    return 0;
}

/* ---- the merge loop ---- */

typedef struct {
    lmf_bpe_trainer *t;
    int32_t **sym; /* per word: its current symbol ids */
    int32_t *n_sym, *stamp;
    pair_entry *pairs;
    int32_t n_pairs, cap_pairs;
    int32_t *pslots;
    uint32_t pmask;
    heap_entry *heap;
    int32_t n_heap, cap_heap;
    int32_t *touched;
    int32_t n_touched, cap_touched;
} merge_state;

static uint64_t pair_key(int32_t a, int32_t b) {
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

/* Index of pair (a, b), created with count 0 when create is set; -1 when absent, or
 * -2 when out of memory (message set). */
static int32_t pair_find(merge_state *m, int32_t a, int32_t b, int create) {
    uint64_t key = pair_key(a, b);
    uint32_t i = (uint32_t)lmf_hash_u64(key) & m->pmask;
    for (;; i = (i + 1) & m->pmask) {
        int32_t p = m->pslots[i];
        if (p < 0) break;
        if (m->pairs[p].a == a && m->pairs[p].b == b) return p;
    }
    if (!create) return -1;
    if (grow(&m->pairs, &m->cap_pairs, (int64_t)m->n_pairs + 1, sizeof *m->pairs, "pairs"))
        return -2;
    m->pairs[m->n_pairs] = (pair_entry){.a = a, .b = b, .stamp = -1};
    m->pslots[i] = m->n_pairs;
    int32_t p = m->n_pairs++;
    if ((uint32_t)m->n_pairs * 2 > m->pmask + 1) {
        uint32_t n_slots = (m->pmask + 1) * 2;
        int32_t *slots = new_slots(n_slots);
        if (!slots) {
            lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory for the pair index");
            return -2;
        }
        for (int32_t q = 0; q < m->n_pairs; q++) {
            uint32_t j = (uint32_t)lmf_hash_u64(pair_key(m->pairs[q].a, m->pairs[q].b));
            for (j &= n_slots - 1; slots[j] >= 0; j = (j + 1) & (n_slots - 1)) {
            }
            slots[j] = q;
        }
        free(m->pslots);
        m->pslots = slots;
        m->pmask = n_slots - 1;
    }
    return p;
}

static int str_cmp(const lmf_bpe_trainer *t, int32_t x, int32_t y) {
    uint32_t lx = t->tlen[x], ly = t->tlen[y];
    int c = memcmp(t->tok[x], t->tok[y], lx < ly ? lx : ly);
    return c ? c : (lx > ly) - (lx < ly);
}

/* Heap order: higher count first, then the lexicographically smaller (left, right) strings. */
static int heap_before(const merge_state *m, heap_entry x, heap_entry y) {
    if (x.count != y.count) return x.count > y.count;
    const pair_entry *p = &m->pairs[x.pair], *q = &m->pairs[y.pair];
    int c = str_cmp(m->t, p->a, q->a);
    if (!c) c = str_cmp(m->t, p->b, q->b);
    return c < 0;
}

static int heap_push(merge_state *m, int32_t pair) {
    if (grow(&m->heap, &m->cap_heap, (int64_t)m->n_heap + 1, sizeof *m->heap, "heap entries"))
        return LMF_ENOMEM;
    heap_entry e = {m->pairs[pair].count, pair};
    int32_t i = m->n_heap++;
    while (i > 0 && heap_before(m, e, m->heap[(i - 1) / 2])) {
        m->heap[i] = m->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    m->heap[i] = e;
    return 0;
}

static heap_entry heap_pop(merge_state *m) {
    heap_entry top = m->heap[0], e = m->heap[--m->n_heap];
    int32_t i = 0, n = m->n_heap;
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_before(m, m->heap[c + 1], m->heap[c])) c++;
        if (!heap_before(m, m->heap[c], e)) break;
        m->heap[i] = m->heap[c];
        i = c;
    }
    if (n) m->heap[i] = e;
    return top;
}

/* Adds delta * (every adjacent pair of word w) to the pair counts. When adding, pairs that hold
 * token `fresh` get w in their word list and are queued for a heap push (their counts grew). */
static int count_pairs(merge_state *m, int32_t w, int64_t delta, int32_t fresh, int32_t step) {
    const int32_t *s = m->sym[w];
    for (int32_t k = 0; k + 1 < m->n_sym[w]; k++) {
        int32_t p = pair_find(m, s[k], s[k + 1], delta > 0);
        if (p < -1) return LMF_ENOMEM;
        if (p < 0) continue; /* cannot happen when removing counted pairs */
        pair_entry *pe = &m->pairs[p];
        pe->count += delta;
        if (delta < 0 || (fresh >= 0 && s[k] != fresh && s[k + 1] != fresh)) continue;
        if (!pe->n_words || pe->words[pe->n_words - 1] != w) {
            if (grow(&pe->words, &pe->cap_words, (int64_t)pe->n_words + 1, sizeof *pe->words,
                     "pair word lists"))
                return LMF_ENOMEM;
            pe->words[pe->n_words++] = w;
        }
        if (fresh >= 0 && pe->stamp != step) {
            pe->stamp = step;
            if (grow(&m->touched, &m->cap_touched, (int64_t)m->n_touched + 1, sizeof *m->touched,
                     "pairs"))
                return LMF_ENOMEM;
            m->touched[m->n_touched++] = p;
        }
    }
    return 0;
}

/* Replaces every non-overlapping (a, b), left to right, in word w by id; 1 when any was found. */
static int merge_word(merge_state *m, int32_t w, int32_t a, int32_t b, int32_t id) {
    int32_t *s = m->sym[w], n = m->n_sym[w], o = 0;
    int found = 0;
    for (int32_t k = 0; k < n; k++) {
        if (k + 1 < n && s[k] == a && s[k + 1] == b) {
            s[o++] = id;
            k++;
            found = 1;
        } else {
            s[o++] = s[k];
        }
    }
    m->n_sym[w] = o;
    return found;
}

static int has_pair(const merge_state *m, int32_t w, int32_t a, int32_t b) {
    for (int32_t k = 0; k + 1 < m->n_sym[w]; k++)
        if (m->sym[w][k] == a && m->sym[w][k + 1] == b) return 1;
    return 0;
}

/* One merge of pair index p: new (or reused) token, word updates, heap pushes. */
static int apply_merge(merge_state *m, int32_t p, int32_t step) {
    lmf_bpe_trainer *t = m->t;
    int32_t a = m->pairs[p].a, b = m->pairs[p].b;
    uint32_t n = t->tlen[a] + t->tlen[b];
    char *s = malloc(n + 1);
    if (!s) return lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory for a token");
    memcpy(s, t->tok[a], t->tlen[a]);
    memcpy(s + t->tlen[a], t->tok[b], t->tlen[b]);
    s[n] = 0;
    /* Different merge paths can spell the same string ("a"+"bc", "ab"+"c"); like HF's trainer,
     * reuse the id and still record the merge. */
    int32_t id = tok_lookup(t, s, n);
    if (id >= 0) {
        free(s);
    } else if ((id = tok_add(t, s, n)) < 0) {
        return id;
    }
    if (grow(&t->merges, &t->cap_merges, (int64_t)t->n_merges + 1, sizeof *t->merges, "merges"))
        return LMF_ENOMEM;
    t->merges[t->n_merges][0] = a;
    t->merges[t->n_merges++][1] = b;
    int32_t *list = m->pairs[p].words, n_list = m->pairs[p].n_words;
    m->n_touched = 0;
    for (int32_t k = 0; k < n_list; k++) {
        int32_t w = list[k];
        if (m->stamp[w] == step || !has_pair(m, w, a, b)) continue;
        m->stamp[w] = step;
        int64_t f = t->words[w].freq;
        int rc = count_pairs(m, w, -f, -1, step);
        merge_word(m, w, a, b, id);
        if (rc || (rc = count_pairs(m, w, f, id, step))) return rc;
    }
    /* The merged pair's own list is useless now: no word can contain (a, b) again. */
    free(m->pairs[p].words);
    m->pairs[p].words = NULL;
    m->pairs[p].n_words = m->pairs[p].cap_words = 0;
    for (int32_t k = 0; k < m->n_touched; k++)
        if (m->pairs[m->touched[k]].count > 0 && heap_push(m, m->touched[k])) return LMF_ENOMEM;
    return 0;
}

static int merge_state_init(merge_state *m) {
    lmf_bpe_trainer *t = m->t;
    m->pmask = 4095;
    m->pslots = new_slots(m->pmask + 1);
    m->sym = calloc((size_t)t->n_words, sizeof *m->sym);
    m->n_sym = calloc((size_t)t->n_words, sizeof *m->n_sym);
    m->stamp = malloc((size_t)t->n_words * sizeof *m->stamp);
    if (!m->pslots || !m->sym || !m->n_sym || !m->stamp)
        return lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory for %d words", t->n_words);
    for (int32_t w = 0; w < t->n_words; w++) {
        const uint8_t *bytes = (const uint8_t *)t->wbytes + t->words[w].off;
        m->stamp[w] = -1;
        m->n_sym[w] = (int32_t)t->words[w].len;
        if (!(m->sym[w] = malloc(t->words[w].len * sizeof **m->sym)))
            return lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory for the words");
        for (uint32_t k = 0; k < t->words[w].len; k++) m->sym[w][k] = bytes[k];
        int rc = count_pairs(m, w, t->words[w].freq, -1, -1);
        if (rc) return rc;
    }
    for (int32_t p = 0; p < m->n_pairs; p++)
        if (heap_push(m, p)) return LMF_ENOMEM;
    return 0;
}

static void merge_state_free(merge_state *m) {
    for (int32_t w = 0; m->sym && w < m->t->n_words; w++) free(m->sym[w]);
    free(m->sym);
    free(m->n_sym);
    free(m->stamp);
    for (int32_t p = 0; p < m->n_pairs; p++) free(m->pairs[p].words);
    free(m->pairs);
    free(m->pslots);
    free(m->heap);
    free(m->touched);
}

int lmf_bpe_trainer_train(lmf_bpe_trainer *t) {
    if (t->trained) return lmf_errorf(LMF_EINVAL, "BPE trainer: already trained");
    if (t->n_words == 0)
        return lmf_errorf(LMF_EINVAL, "BPE trainer: the corpus is empty (no text to train on)");
    merge_state m = {.t = t};
    int rc = merge_state_init(&m);
    int64_t min_freq = t->min_frequency > 1 ? t->min_frequency : 1;
    for (int32_t step = 0; !rc && t->n_tok + t->n_special < t->vocab_size && m.n_heap;) {
        heap_entry e = heap_pop(&m);
        pair_entry *pe = &m.pairs[e.pair];
        if (pe->banned || pe->count <= 0) continue;
        /* Stale entry: counts of old pairs only fall, and a pair whose count grew was pushed again
         * with it, so every pair's best entry is an upper bound and re-pushing keeps order. */
        if (e.count != pe->count) {
            rc = heap_push(&m, e.pair);
            continue;
        }
        if (pe->count < min_freq) break;
        uint32_t la = t->tlen[pe->a], lb = t->tlen[pe->b];
        char *joined = malloc(la + lb + 1);
        if (!joined) {
            rc = lmf_errorf(LMF_ENOMEM, "BPE trainer: out of memory");
            break;
        }
        memcpy(joined, t->tok[pe->a], la);
        memcpy(joined + la, t->tok[pe->b], lb);
        pe->banned = is_special(t, joined, la + lb); /* would duplicate a special token's key */
        free(joined);
        if (pe->banned) continue;
        rc = apply_merge(&m, e.pair, step++);
    }
    merge_state_free(&m);
    if (!rc) t->trained = 1;
    return rc;
}

int lmf_bpe_trainer_vocab_size(const lmf_bpe_trainer *t) {
    return t->n_tok + t->n_special;
}

int lmf_bpe_trainer_n_merges(const lmf_bpe_trainer *t) {
    return t->n_merges;
}

int lmf_bpe_trainer_merge(const lmf_bpe_trainer *t, int i, const char **left, const char **right) {
    if (i < 0 || i >= t->n_merges)
        return lmf_errorf(LMF_ERANGE, "BPE trainer: merge %d of %d", i, t->n_merges);
    *left = t->tok[t->merges[i][0]];
    *right = t->tok[t->merges[i][1]];
    return 0;
}

/* ---- Hugging Face files ---- */

static cJSON *bytelevel(int add_prefix_space, int trim_offsets) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", trim_offsets);
    cJSON_AddBoolToObject(o, "use_regex", 1);
    return o;
}

/* The flags HF stores for an added token, in tokenizer.json's key order. */
static cJSON *added_token(const lmf_bpe_trainer *t, int k, int with_id) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (with_id) cJSON_AddNumberToObject(o, "id", t->n_tok + k);
    cJSON_AddStringToObject(o, "content", t->special[k]);
    cJSON_AddBoolToObject(o, "lstrip", 0);
    cJSON_AddBoolToObject(o, "normalized", 0);
    cJSON_AddBoolToObject(o, "rstrip", 0);
    cJSON_AddBoolToObject(o, "single_word", 0);
    cJSON_AddBoolToObject(o, "special", 1);
    return o;
}

static cJSON *tokenizer_json(const lmf_bpe_trainer *t) {
    cJSON *root = cJSON_CreateObject(), *model, *vocab, *merges, *added;
    if (!root) return NULL;
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int k = 0; added && k < t->n_special; k++)
        cJSON_AddItemToArray(added, added_token(t, k, 1));
    cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddItemToObject(root, "pre_tokenizer", bytelevel(0, 1));
    cJSON_AddItemToObject(root, "post_processor", bytelevel(1, 0));
    cJSON_AddItemToObject(root, "decoder", bytelevel(1, 1));
    model = cJSON_AddObjectToObject(root, "model");
    if (!model) goto fail;
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", 0);
    cJSON_AddBoolToObject(model, "byte_fallback", 0);
    cJSON_AddBoolToObject(model, "ignore_merges", 0);
    /* Specials are in the model vocab too (as HF's trainer and GPT-2 do), so the model alone
     * already has vocab_size entries. */
    vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int32_t id = 0; vocab && id < t->n_tok; id++)
        cJSON_AddItemToObject(vocab, t->tok[id], cJSON_CreateNumber(id));
    for (int k = 0; vocab && k < t->n_special; k++)
        cJSON_AddItemToObject(vocab, t->special[k], cJSON_CreateNumber(t->n_tok + k));
    merges = cJSON_AddArrayToObject(model, "merges");
    for (int32_t i = 0; merges && i < t->n_merges; i++) {
        const char *pair[2] = {t->tok[t->merges[i][0]], t->tok[t->merges[i][1]]};
        cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
    }
    if (!vocab || !merges || !added) goto fail;
    return root;
fail:
    cJSON_Delete(root);
    return NULL;
}

static cJSON *tokenizer_config_json(const lmf_bpe_trainer *t) {
    cJSON *root = cJSON_CreateObject(), *dec;
    if (!root) return NULL;
    dec = cJSON_AddObjectToObject(root, "added_tokens_decoder");
    for (int k = 0; dec && k < t->n_special; k++) {
        char key[16];
        snprintf(key, sizeof key, "%d", t->n_tok + k);
        cJSON_AddItemToObject(dec, key, added_token(t, k, 0));
    }
    /* No BOS (GPT-2 style models start without one); the first special ends documents and pads. */
    cJSON_AddNullToObject(root, "bos_token");
    cJSON_AddBoolToObject(root, "clean_up_tokenization_spaces", 0);
    if (t->n_special) {
        cJSON_AddStringToObject(root, "eos_token", t->special[0]);
        cJSON_AddStringToObject(root, "pad_token", t->special[0]);
    } else {
        cJSON_AddNullToObject(root, "eos_token");
        cJSON_AddNullToObject(root, "pad_token");
    }
    cJSON_AddNumberToObject(root, "model_max_length", 2048);
    cJSON_AddStringToObject(root, "tokenizer_class", "PreTrainedTokenizerFast");
    if (!dec) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static int write_json(const char *dir, const char *name, cJSON *doc) {
    char *path = lmf_path_join(dir, name), *text = doc ? cJSON_Print(doc) : NULL;
    int rc = LMF_ENOMEM;
    if (!path || !text) {
        lmf_errorf(rc, "%s/%s: out of memory while building the JSON", dir, name);
    } else {
        size_t n = strlen(text);
        text[n] = '\n'; /* cJSON_Print leaves no final newline; the NUL slot takes it */
        rc = lmf_file_write_atomic(path, text, n + 1);
    }
    free(path);
    free(text);
    cJSON_Delete(doc);
    return rc;
}

int lmf_bpe_trainer_save(const lmf_bpe_trainer *t, const char *dir) {
    if (!t->trained) return lmf_errorf(LMF_EINVAL, "%s: BPE trainer saved before training", dir);
    int rc = lmf_mkdir_p(dir);
    if (rc) return rc;
    rc = write_json(dir, "tokenizer.json", tokenizer_json(t));
    if (!rc) rc = write_json(dir, "tokenizer_config.json", tokenizer_config_json(t));
    return rc;
}
