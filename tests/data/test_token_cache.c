/* The tokenized_path cache: a round trip gives the examples back exactly; a cache made with
 * other settings is refused naming the key; a missing file is LMF_ENOENT; a truncated,
 * bit-flipped, foreign or padded file is refused as corrupt without reading out of bounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmforge/core.h"
#include "lmforge/encode.h"
#include "lmforge/error.h"
#include "lmforge/token_cache.h"
#include "test.h"

static lmf_example make(int n, int seed) {
    lmf_example e = {malloc((size_t)n * 4), malloc((size_t)n * 4), n};
    for (int i = 0; i < n; i++) e.ids[i] = seed * 100 + i, e.labels[i] = i % 3 ? e.ids[i] : -100;
    return e;
}

static int same(const lmf_example *a, const lmf_example *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (a[i].n != b[i].n || memcmp(a[i].ids, b[i].ids, (size_t)a[i].n * 4) ||
            memcmp(a[i].labels, b[i].labels, (size_t)a[i].n * 4))
            return 0;
    return 1;
}

static int load_rc(const char *path, const char *desc) {
    lmf_example *tr, *ev;
    int64_t nt, ne;
    int rc = lmf_token_cache_load(path, desc, &tr, &nt, &ev, &ne);
    if (!rc) lmf_examples_free(tr, nt), lmf_examples_free(ev, ne);
    return rc;
}

int main(void) {
    char dir[] = "/tmp/lmf-tokc-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *path = lmf_path_join(dir, LMF_TOKEN_CACHE_FILE);
    const char *desc = "stage=sft\ncutoff_len=64\ntemplate=chatml\n";
    lmf_example tr[3] = {make(5, 1), make(1, 2), make(17, 3)}, ev[1] = {make(4, 9)};
    CHECK(lmf_token_cache_load(path, desc, &(lmf_example *){0}, &(int64_t){0}, &(lmf_example *){0},
                               &(int64_t){0}) == LMF_ENOENT);
    CHECK(lmf_token_cache_save(path, desc, tr, 3, ev, 1) == 0);
    lmf_example *gt, *ge;
    int64_t nt, ne;
    CHECK(lmf_token_cache_load(path, desc, &gt, &nt, &ge, &ne) == 0);
    CHECK(nt == 3 && ne == 1 && same(gt, tr, 3) && same(ge, ev, 1));
    lmf_examples_free(gt, nt), lmf_examples_free(ge, ne);

    CHECK(load_rc(path, "stage=sft\ncutoff_len=128\ntemplate=chatml\n") == LMF_EINVAL);
    CHECK_MSG(strstr(lmf_last_error(), "cutoff_len was 64") != NULL, "%s", lmf_last_error());

    /* Damage the file in several ways: every one is refused, none crashes. */
    char *data;
    size_t len;
    CHECK(lmf_file_read_all(path, &data, &len) == 0);
    for (size_t cut = 0; cut < len; cut += 7) {
        CHECK(lmf_file_write_atomic(path, data, cut) == 0);
        CHECK(load_rc(path, desc) == LMF_EFORMAT);
    }
    for (size_t at = 0; at < len; at += 5) {
        data[at] ^= 0x40;
        CHECK(lmf_file_write_atomic(path, data, len) == 0);
        int rc = load_rc(path, desc);
        CHECK_MSG(rc == LMF_EFORMAT, "flip at %zu: rc %d", at, rc);
        data[at] ^= 0x40;
    }
    char *padded = malloc(len + 4);
    memcpy(padded, data, len);
    memset(padded + len, 0, 4);
    CHECK(lmf_file_write_atomic(path, padded, len + 4) == 0);
    CHECK(load_rc(path, desc) == LMF_EFORMAT);
    free(padded), free(data);

    for (int i = 0; i < 3; i++) lmf_example_free(&tr[i]);
    lmf_example_free(&ev[0]);
    remove(path);
    rmdir(dir);
    free(path);
    return test_summary("test_token_cache");
}
