/* Tokenizer unit tests: hand-computed BPE cases (merge order, unk fusing, byte fallback,
 * ignore_merges), llama.cpp's Hugging Face-generated vectors for GPT-2 and Llama-2 (ids and
 * round trip), streaming decode, config accessors, and malformed tokenizer.json files. */
#include "test.h"

#include "lmforge/core.h"
#include "lmforge/tokenizer.h"
#include "text/nfc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/lmf-tok-test-XXXXXX";

/* Writes json as tmpdir/tokenizer.json and loads it. */
static int load_json(const char *json, lmf_tokenizer **t) {
    char *path = lmf_path_join(tmpdir, "tokenizer.json");
    int rc = lmf_file_write_atomic(path, json, strlen(json));
    free(path);
    return rc ? rc : lmf_tokenizer_load(t, tmpdir);
}

static int ids_equal(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a));
}

static void check_encode(const lmf_tokenizer *t, const char *text, int add_special,
                         const int32_t *want, int nwant) {
    int32_t *ids = NULL;
    int n = 0, rc = lmf_tokenizer_encode(t, text, strlen(text), add_special, &ids, &n);
    CHECK_MSG(rc == 0 && ids_equal(ids, n, want, nwant), "encode \"%s\": rc %d, %d ids", text, rc,
              n);
    free(ids);
}

static void test_handmade(void) {
    lmf_tokenizer *t = NULL;
    /* "b c" has the lowest rank, so "abc" merges as a + (bc) -> abc, never (ab) + c */
    int rc = load_json("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, "
                       "\"ab\": 3, \"bc\": 4, \"abc\": 5, \"<unk>\": 6},"
                       "\"merges\": [\"b c\", \"a b\", [\"a\", \"bc\"]], \"unk_token\": \"<unk>\", "
                       "\"fuse_unk\": true}}",
                       &t);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    if (!rc) {
        check_encode(t, "abc", 0, (int32_t[]){5}, 1);
        check_encode(t, "abab", 0, (int32_t[]){3, 3}, 2);
        check_encode(t, "xyab", 0, (int32_t[]){6, 3}, 2); /* fused unknowns */
        check_encode(t, "", 0, NULL, 0);
        char *s = NULL;
        size_t len;
        CHECK(lmf_tokenizer_decode(t, (int32_t[]){5, 3}, 2, 0, &s, &len) == 0);
        CHECK(s && !strcmp(s, "abc ab")); /* no decoder: tokens joined by spaces, as HF */
        free(s);
        CHECK(lmf_tokenizer_vocab_size(t) == 7);
        CHECK(lmf_tokenizer_token_to_id(t, "bc") == 4);
        CHECK(lmf_tokenizer_bos(t) == -1);
        lmf_tokenizer_free(t);
    }
    /* byte fallback: "é" (C3 A9) is not in the vocab; ignore_merges emits a whole word */
    rc = load_json(
        "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"ignore_merges\": true, "
        "\"vocab\": {\"<0xC3>\": 0, \"<0xA9>\": 1, \"x\": 2, \"y\": 3, \"xyx\": 4, \"xy\": 5},"
        "\"merges\": [\"x y\"]},"
        "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"},"
        "{\"type\": \"Fuse\"}]}}",
        &t);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    if (!rc) {
        check_encode(t, "x\xC3\xA9y", 0, (int32_t[]){2, 0, 1, 3}, 4);
        check_encode(t, "xyx", 0, (int32_t[]){4}, 1);
        check_encode(t, "xyxy", 0, (int32_t[]){5, 5}, 2);
        char *s = NULL;
        CHECK(lmf_tokenizer_decode(t, (int32_t[]){2, 0, 1, 3}, 4, 0, &s, NULL) == 0);
        CHECK(s && !strcmp(s, "x\xC3\xA9y"));
        free(s);
        /* a lone lead byte decodes to one U+FFFD per byte, as HF's ByteFallback */
        CHECK(lmf_tokenizer_decode(t, (int32_t[]){0, 2}, 2, 0, &s, NULL) == 0);
        CHECK(s && !strcmp(s, "\xEF\xBF\xBDx"));
        free(s);
        int32_t *ids;
        int n;
        CHECK(lmf_tokenizer_encode(t, "\xC3(", 2, 0, &ids, &n) == LMF_EINVAL); /* invalid UTF-8 */
        lmf_tokenizer_free(t);
    }
}

/* NFC against values from the Unicode data (composition, reordering, singletons, Hangul). */
static void test_nfc(void) {
    static const char *const cases[][2] = {
        {"e\xCC\x81", "\xC3\xA9"},             /* e + acute -> é */
        {"a\xCC\x82\xCC\xA3", "\xE1\xBA\xAD"}, /* a + circumflex + dot below -> ậ */
        {"\xE2\x84\xAB", "\xC3\x85"},          /* ANGSTROM SIGN -> Å */
        {"\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81"}, /* jamo -> 각 */
        {"\xE0\xA5\x98", "\xE0\xA4\x95\xE0\xA4\xBC"}, /* excluded: क़ stays decomposed */
        {"abc \xE4\xB8\xAD", "abc \xE4\xB8\xAD"},
        {"\xCC\x81x", "\xCC\x81x"}, /* leading mark */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lmf_sbuf b = {0};
        CHECK(lmf_nfc(&b, cases[i][0], strlen(cases[i][0])) == 0);
        CHECK_MSG(b.p && !strcmp(b.p, cases[i][1]), "NFC case %zu", i);
        free(b.p);
    }
}

static void test_malformed(void) {
    static const struct {
        const char *json, *needle;
        int code;
    } cases[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {", "invalid JSON", LMF_EFORMAT},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "Unigram", LMF_EUNSUPPORTED},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": "
         "[\"a b\", \"a c\"]}}",
         "merges[1]: token \"c\" is not in the vocab", LMF_EFORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
         "merged token \"ab\"", LMF_EFORMAT},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
         "\"pre_tokenizer\": "
         "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+|\\\\d\"}, \"behavior\": "
         "\"Isolated\"}}",
         "regex \"\\w+|\\d\" is not supported", LMF_EUNSUPPORTED},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": "
         "{\"type\": \"Lowercase\"}}",
         "normalizer type \"Lowercase\"", LMF_EUNSUPPORTED},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": "
         "{\"type\": \"WordPiece\"}}",
         "decoder type \"WordPiece\"", LMF_EUNSUPPORTED},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}", "model.vocab",
         LMF_EFORMAT},
        {"[1, 2]", "\"model\"", LMF_EFORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lmf_tokenizer *t = NULL;
        int rc = load_json(cases[i].json, &t);
        CHECK_MSG(rc == cases[i].code && !t && strstr(lmf_last_error(), cases[i].needle) &&
                      strstr(lmf_last_error(), "tokenizer.json"),
                  "case %zu: rc %d, message \"%s\"", i, rc, lmf_last_error());
        lmf_tokenizer_free(t);
    }
    lmf_tokenizer *t = NULL;
    CHECK(lmf_tokenizer_load(&t, "/nonexistent-lmf-dir") < 0 && !t);
}

/* Reads NAME.inp (strings split by "__ggml_vocab_test__" lines) and NAME.out (ids per line). */
static int read_vectors(const char *dir, const char *name, char ***strs, char ***outs, int *n) {
    char path[4096], *inp = NULL, *out = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/%s.inp", dir, name);
    if (lmf_file_read_all(path, &inp, &len)) return -1;
    snprintf(path, sizeof path, "%s/%s.out", dir, name);
    if (lmf_file_read_all(path, &out, &len)) {
        free(inp);
        return -1;
    }
    static const char sep[] = "__ggml_vocab_test__\n";
    int cap = 64;
    *strs = calloc((size_t)cap, sizeof **strs);
    *outs = calloc((size_t)cap, sizeof **outs);
    *n = 0;
    char *p = inp, *q = out, *hit;
    while ((hit = strstr(p, sep)) && *n < cap) {
        size_t l = (size_t)(hit - p);
        if (l > 0) l--; /* the newline before the separator is not part of the string */
        (*strs)[*n] = strndup(p, l);
        char *nl = strchr(q, '\n');
        (*outs)[*n] = strndup(q, nl ? (size_t)(nl - q) : strlen(q));
        q = nl ? nl + 1 : q + strlen(q);
        p = hit + strlen(sep);
        (*n)++;
    }
    free(inp);
    free(out);
    return 0;
}

static void check_stream(const lmf_tokenizer *t, const int32_t *ids, int n, const char *what) {
    lmf_detok_stream s;
    lmf_detok_stream_init(&s, t);
    char *all = calloc(1, 1), *piece, *full = NULL;
    size_t alen = 0;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        if (lmf_detok_stream_push(&s, ids[i], &piece)) {
            ok = 0;
            break;
        }
        size_t pl = strlen(piece);
        /* every piece must end on a character boundary: no lone lead/continuation at its end */
        if (pl && ((unsigned char)piece[pl - 1] >= 0xC0)) ok = 0;
        all = realloc(all, alen + pl + 1);
        memcpy(all + alen, piece, pl + 1);
        alen += pl;
        free(piece);
    }
    if (ok && lmf_detok_stream_finish(&s, &piece) == 0) {
        size_t pl = strlen(piece);
        all = realloc(all, alen + pl + 1);
        memcpy(all + alen, piece, pl + 1);
        free(piece);
    } else {
        ok = 0;
    }
    CHECK_MSG(ok && lmf_tokenizer_decode(t, ids, n, 0, &full, NULL) == 0 && !strcmp(all, full),
              "%s: streamed text differs from decode", what);
    free(all);
    free(full);
    lmf_detok_stream_free(&s);
}

static void test_vectors(const char *shared, const char *name, const char *tokdir) {
    char dir[2048], vec[2048];
    snprintf(dir, sizeof dir, "%s/%s", shared, tokdir);
    snprintf(vec, sizeof vec, "%s/vectors", shared);
    lmf_tokenizer *t = NULL;
    int rc = lmf_tokenizer_load(&t, dir);
    CHECK_MSG(rc == 0, "%s: %s", dir, lmf_last_error());
    char **strs = NULL, **outs = NULL;
    int n = 0;
    CHECK(read_vectors(vec, name, &strs, &outs, &n) == 0 && n >= 40);
    int matched = 0, round = 0, n_all = 0;
    int32_t *all = NULL; /* every vector's ids end to end: one long stream */
    for (int i = 0; t && i < n; i++) {
        int32_t want[512], *ids = NULL;
        int nw = 0, got = 0;
        for (char *p = outs[i], *end; nw < 512; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            want[nw++] = (int32_t)v;
        }
        rc = lmf_tokenizer_encode(t, strs[i], strlen(strs[i]), 0, &ids, &got);
        if (rc == 0 && ids_equal(ids, got, want, nw))
            matched++;
        else
            fprintf(stderr, "%s: vector %d \"%s\": ids differ\n", name, i, strs[i]);
        char *text = NULL;
        if (rc == 0 && lmf_tokenizer_decode(t, ids, got, 0, &text, NULL) == 0 &&
            !strcmp(text, strs[i]))
            round++;
        else
            fprintf(stderr, "%s: vector %d \"%s\": decode(encode(s)) != s\n", name, i, strs[i]);
        if (rc == 0) check_stream(t, ids, got, name);
        int32_t *grown = rc == 0 ? realloc(all, sizeof *all * (size_t)(n_all + got)) : NULL;
        if (grown) {
            all = grown;
            memcpy(all + n_all, ids, sizeof *ids * (size_t)got);
            n_all += got;
        }
        free(text);
        free(ids);
    }
    if (t) check_stream(t, all, n_all, name); /* windows over many vectors' boundaries */
    free(all);
    CHECK_MSG(matched == n, "%s: %d of %d vectors match", name, matched, n);
    CHECK_MSG(round == n, "%s: %d of %d round trips exact", name, round, n);
    printf("%s: %d/%d vectors match, %d round trips exact\n", name, matched, n, round);
    for (int i = 0; i < n; i++) free(strs[i]), free(outs[i]);
    free(strs);
    free(outs);
    lmf_tokenizer_free(t);
}

static void test_config(const char *shared) {
    char dir[2048];
    lmf_tokenizer *t = NULL;
    snprintf(dir, sizeof dir, "%s/tinyllama-1.1b-chat-v1.0", shared);
    if (lmf_tokenizer_load(&t, dir) == 0) {
        CHECK(lmf_tokenizer_bos(t) == 1 && lmf_tokenizer_eos(t) == 2 && lmf_tokenizer_pad(t) == 2);
        CHECK(lmf_tokenizer_vocab_size(t) == 32000);
        CHECK(lmf_tokenizer_chat_template(t) && strstr(lmf_tokenizer_chat_template(t), "<|user|>"));
        CHECK(lmf_tokenizer_is_special(t, 2) && !lmf_tokenizer_is_special(t, 100));
        check_encode(t, "Hi</s>", 1, (int32_t[]){1, 6324, 2}, 3);
        char *s = NULL;
        CHECK(lmf_tokenizer_decode(t, (int32_t[]){1, 6324, 2}, 3, 1, &s, NULL) == 0 &&
              !strcmp(s, "Hi"));
        free(s);
        lmf_tokenizer_free(t);
    } else {
        CHECK_MSG(0, "%s", lmf_last_error());
    }
    snprintf(dir, sizeof dir, "%s/llama-3.2", shared);
    if (lmf_tokenizer_load(&t, dir) == 0) {
        CHECK(lmf_tokenizer_bos(t) == 128000 && lmf_tokenizer_eos(t) == 128009);
        CHECK(lmf_tokenizer_vocab_size(t) == 128256);
        CHECK(!strcmp(lmf_tokenizer_id_to_token(t, 128000), "<|begin_of_text|>"));
        CHECK(lmf_tokenizer_token_to_id(t, "<|eot_id|>") == 128009);
        CHECK(lmf_tokenizer_chat_template(t) != NULL);
        /* byte-level streaming through a 4-byte emoji split over several tokens */
        int32_t *ids = NULL;
        int n = 0;
        const char *txt = "héllo 🤦🏻‍♂️ 中文 wörld";
        CHECK(lmf_tokenizer_encode(t, txt, strlen(txt), 1, &ids, &n) == 0 && n > 5 &&
              ids[0] == 128000);
        check_stream(t, ids, n, "llama-3.2");
        /* ending inside a character: push holds the partial bytes back, finish gives U+FFFD */
        check_stream(t, ids, n - 1, "llama-3.2 cut");
        lmf_detok_stream s;
        lmf_detok_stream_init(&s, t);
        char *piece = NULL;
        int32_t e4 = lmf_tokenizer_token_to_id(t, "\xC3\xA4"); /* byte-level char for byte 0xE4 */
        CHECK(e4 >= 0 && lmf_detok_stream_push(&s, e4, &piece) == 0 && piece && !piece[0]);
        free(piece);
        CHECK(lmf_detok_stream_finish(&s, &piece) == 0 && piece && !strcmp(piece, "\xEF\xBF\xBD"));
        free(piece);
        lmf_detok_stream_free(&s);
        free(ids);
        lmf_tokenizer_free(t);
    } else {
        CHECK_MSG(0, "%s", lmf_last_error());
    }
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_handmade();
    test_nfc();
    test_malformed();
    char *path = lmf_path_join(tmpdir, "tokenizer.json");
    unlink(path);
    free(path);
    rmdir(tmpdir);

    /* ../shared next to the source tree: LMF_SRC, else derived from this file's path */
    char src[1024], shared[1100];
    const char *env = getenv("LMF_SRC");
    if (env) {
        snprintf(src, sizeof src, "%s", env);
    } else {
        snprintf(src, sizeof src, "%s", __FILE__);
        char *cut = strstr(src, "/tests/text/");
        if (cut)
            *cut = 0;
        else
            snprintf(src, sizeof src, ".");
    }
    snprintf(shared, sizeof shared, "%s/../shared/data/tokenizers", src);
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/vectors/README.md", shared);
    if (!lmf_path_exists(probe)) {
        printf("SKIP: ../shared/data not present (%s)\n", shared);
    } else {
        test_vectors(shared, "ggml-vocab-gpt-2.gguf", "gpt2");
        test_vectors(shared, "ggml-vocab-llama-spm.gguf", "tinyllama-1.1b-chat-v1.0");
        test_config(shared);
    }
    return test_summary("test_tokenizer");
}
