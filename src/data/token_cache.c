/* The tokenized_path cache file (see include/lmforge/token_cache.h). */
#include "lmforge/token_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/encode.h"
#include "lmforge/error.h"

static const char cache_magic[8] = {'L', 'M', 'F', 'T', 'O', 'K', 'C', 0};
enum { CACHE_VERSION = 1 };

/* FNV-1a, streamed: the trailing checksum covers the whole file before it. */
static uint64_t fnv_update(uint64_t h, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
#define FNV_START 0xcbf29ce484222325ull

typedef struct writer {
    lmf_atomic_file f;
    uint64_t hash; /* FNV-1a over every byte written */
    int rc;
} writer;

static void put(writer *w, const void *p, size_t n) {
    if (w->rc || n == 0) return;
    w->hash = fnv_update(w->hash, p, n);
    w->rc = lmf_atomic_write(&w->f, p, n);
}

static void put_set(writer *w, const lmf_example *ex, int64_t n) {
    for (int64_t i = 0; i < n && !w->rc; i++) {
        uint32_t len = (uint32_t)ex[i].n;
        put(w, &len, 4);
        put(w, ex[i].ids, (size_t)len * 4);
        put(w, ex[i].labels, (size_t)len * 4);
    }
}

int lmf_token_cache_save(const char *path, const char *description, const lmf_example *train,
                         int64_t n_train, const lmf_example *eval, int64_t n_eval) {
    writer w = {.hash = FNV_START};
    if ((w.rc = lmf_atomic_open(&w.f, path))) return lmf_error_prefix(w.rc, "tokenized_path");
    uint32_t version = CACHE_VERSION, dlen = (uint32_t)strlen(description);
    uint64_t counts[2] = {(uint64_t)n_train, (uint64_t)n_eval};
    put(&w, cache_magic, 8);
    put(&w, &version, 4);
    put(&w, &dlen, 4);
    put(&w, description, dlen);
    put(&w, counts, 16);
    put_set(&w, train, n_train);
    put_set(&w, eval, n_eval);
    uint64_t h = w.hash;
    put(&w, &h, 8);
    if (w.rc) {
        lmf_atomic_abort(&w.f);
        return lmf_error_prefix(w.rc, "tokenized_path: writing %s", path);
    }
    int rc = lmf_atomic_commit(&w.f);
    return rc ? lmf_error_prefix(rc, "tokenized_path: writing %s", path) : 0;
}

/* The first key=value line of `want` that `have` lacks, for the mismatch message. */
static void first_difference(const char *have, const char *want, char *key, size_t n, char *was,
                             size_t wn) {
    snprintf(key, n, "(unknown)");
    snprintf(was, wn, "?");
    for (const char *line = want; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *eq = memchr(line, '=', len);
        size_t klen = eq ? (size_t)(eq - line) : len;
        int found = 0;
        for (const char *h = have; *h;) {
            const char *he = strchr(h, '\n');
            size_t hl = he ? (size_t)(he - h) : strlen(h);
            if (hl == len && !memcmp(h, line, len)) found = 1;
            if (!found && hl > klen && !memcmp(h, line, klen) && h[klen] == '=')
                snprintf(was, wn, "%.*s", (int)(hl - klen - 1), h + klen + 1);
            h += hl + (he != NULL);
        }
        if (!found) {
            snprintf(key, n, "%.*s", (int)klen, line);
            return;
        }
        line += len + (end != NULL);
    }
}

typedef struct reader {
    const uint8_t *p, *end;
} reader;

static int get(reader *r, void *out, size_t n) {
    if ((size_t)(r->end - r->p) < n) return -1;
    memcpy(out, r->p, n);
    r->p += n;
    return 0;
}

static int get_set(reader *r, int64_t n, lmf_example **out, const char *path) {
    *out = NULL;
    if (n < 0 || (uint64_t)n > (uint64_t)(r->end - r->p) / 4)
        return lmf_errorf(LMF_EFORMAT, "%s: corrupt example count", path);
    lmf_example *ex = calloc((size_t)n + 1, sizeof *ex);
    if (!ex) return lmf_errorf(LMF_ENOMEM, "%s: out of memory", path);
    for (int64_t i = 0; i < n; i++) {
        uint32_t len;
        if (get(r, &len, 4) || len == 0 || (uint64_t)len * 8 > (uint64_t)(r->end - r->p)) {
            lmf_examples_free(ex, i);
            return lmf_errorf(LMF_EFORMAT, "%s: example %lld is truncated or corrupt", path,
                              (long long)i);
        }
        ex[i].n = (int)len;
        ex[i].ids = malloc((size_t)len * 4);
        ex[i].labels = malloc((size_t)len * 4);
        if (!ex[i].ids || !ex[i].labels) {
            lmf_examples_free(ex, i + 1);
            return lmf_errorf(LMF_ENOMEM, "%s: out of memory", path);
        }
        get(r, ex[i].ids, (size_t)len * 4);
        get(r, ex[i].labels, (size_t)len * 4);
    }
    *out = ex;
    return 0;
}

int lmf_token_cache_load(const char *path, const char *description, lmf_example **train,
                         int64_t *n_train, lmf_example **eval, int64_t *n_eval) {
    *train = *eval = NULL;
    *n_train = *n_eval = 0;
    if (!lmf_path_exists(path)) return LMF_ENOENT;
    lmf_mapped_file mf;
    int rc = lmf_file_map(&mf, path);
    if (rc) return rc;
    reader r = {mf.data, mf.data + mf.size};
    char magic[8];
    uint32_t version = 0, dlen = 0;
    uint64_t counts[2], stored;
    if (mf.size < 32 || get(&r, magic, 8) || memcmp(magic, cache_magic, 8) ||
        get(&r, &version, 4) || version != CACHE_VERSION) {
        rc = lmf_errorf(LMF_EFORMAT,
                        "%s: not a token cache of this lmforge version (delete it or set "
                        "overwrite_cache: true)",
                        path);
        goto done;
    }
    memcpy(&stored, mf.data + mf.size - 8, 8);
    if (fnv_update(FNV_START, mf.data, mf.size - 8) != stored) {
        rc = lmf_errorf(LMF_EFORMAT,
                        "%s: truncated or corrupt (checksum mismatch); delete it or set "
                        "overwrite_cache: true",
                        path);
        goto done;
    }
    r.end = mf.data + mf.size - 8;
    if (get(&r, &dlen, 4) || dlen > (size_t)(r.end - r.p)) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: corrupt header", path);
        goto done;
    }
    if (dlen != strlen(description) || memcmp(r.p, description, dlen)) {
        char *have = malloc(dlen + 1), key[64], was[256];
        if (!have) {
            rc = lmf_errorf(LMF_ENOMEM, "out of memory");
            goto done;
        }
        memcpy(have, r.p, dlen);
        have[dlen] = 0;
        first_difference(have, description, key, sizeof key, was, sizeof was);
        free(have);
        rc = lmf_errorf(LMF_EINVAL,
                        "tokenized_path %s was made with other settings (%s was %s); set "
                        "overwrite_cache: true to tokenise again",
                        path, key, was);
        goto done;
    }
    r.p += dlen;
    if (get(&r, counts, 16)) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: corrupt header", path);
        goto done;
    }
    if ((rc = get_set(&r, (int64_t)counts[0], train, path))) goto done;
    if ((rc = get_set(&r, (int64_t)counts[1], eval, path))) {
        lmf_examples_free(*train, (int64_t)counts[0]);
        *train = NULL;
        goto done;
    }
    if (r.p != r.end) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: trailing bytes after the examples", path);
        lmf_examples_free(*train, (int64_t)counts[0]);
        lmf_examples_free(*eval, (int64_t)counts[1]);
        *train = *eval = NULL;
        goto done;
    }
    *n_train = (int64_t)counts[0], *n_eval = (int64_t)counts[1];
done:
    lmf_file_unmap(&mf);
    return rc;
}
