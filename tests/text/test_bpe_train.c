/* Byte-level BPE trainer: merges worked out by hand on tiny corpora, vocab size and special
 * tokens in the written tokenizer.json, min_frequency, determinism and the error paths.
 * `test_bpe_train --train CORPUS VOCAB_SIZE OUT_DIR` only trains (default specials, min
 * frequency 2): the reference test's stand-in while `lmforge tokenizer` lacks `train`. */
#include "test.h"

#include "lmforge/bpe_train.h"
#include "lmforge/core.h"
#include "lmforge/json.h"

#include <stdlib.h>
#include <string.h>

static const char *specials2[] = {"<|endoftext|>", "<|im_end|>"};

static lmf_bpe_trainer *train_text(const char *text, int vocab, int min_freq, int n_special) {
    lmf_bpe_train_opts o = {vocab, min_freq, specials2, n_special};
    lmf_bpe_trainer *t = NULL;
    if (lmf_bpe_trainer_create(&t, &o) || lmf_bpe_trainer_add_text(t, text, strlen(text)) ||
        lmf_bpe_trainer_train(t)) {
        fprintf(stderr, "training failed: %s\n", lmf_last_error());
        lmf_bpe_trainer_free(t);
        return NULL;
    }
    return t;
}

static int merge_is(const lmf_bpe_trainer *t, int i, const char *l, const char *r) {
    const char *a, *b;
    if (lmf_bpe_trainer_merge(t, i, &a, &b)) return 0;
    if (strcmp(a, l) || strcmp(b, r)) fprintf(stderr, "merge %d: (%s, %s)\n", i, a, b);
    return !strcmp(a, l) && !strcmp(b, r);
}

/* "aaab aaab aab" pre-tokenizes to aaab, Ġaaab, Ġaab (Ġ = byte-level space). Counts:
 * (a,a) 5 -> "aa"; words [aa a b] [Ġ aa a b] [Ġ aa b]: (a,b) 2, (aa,a) 2, (Ġ,aa) 2 tie and
 * "a" < "aa" < "Ġ" -> (a,b); words [aa ab] [Ġ aa ab] [Ġ aa b]: (aa,ab) 2 -> "aaab"; words
 * [aaab] [Ġ aaab] [Ġ aa b]: every pair now occurs once, below min_frequency 2. */
static void test_hand_merges(void) {
    lmf_bpe_trainer *t = train_text("aaab aaab aab", 1000, 2, 0);
    CHECK(t != NULL);
    if (!t) return;
    CHECK_MSG(lmf_bpe_trainer_n_merges(t) == 3, "%d merges", lmf_bpe_trainer_n_merges(t));
    CHECK(merge_is(t, 0, "a", "a"));
    CHECK(merge_is(t, 1, "a", "b"));
    CHECK(merge_is(t, 2, "aa", "ab"));
    CHECK(lmf_bpe_trainer_vocab_size(t) == 259);
    lmf_bpe_trainer_free(t);

    /* min_frequency 1 goes on through the pairs seen once: (aa,b) first ("aa" < "Ġ"), then
     * (Ġ,aaab) before (Ġ,aab) ("aaab" < "aab"), then nothing is left to merge. */
    t = train_text("aaab aaab aab", 1000, 1, 0);
    CHECK(t && lmf_bpe_trainer_n_merges(t) == 6);
    CHECK(t && merge_is(t, 3, "aa", "b"));
    CHECK(t && merge_is(t, 4, "\xc4\xa0", "aaab"));
    CHECK(t && merge_is(t, 5, "\xc4\xa0", "aab"));
    CHECK(t && lmf_bpe_trainer_vocab_size(t) == 262);
    lmf_bpe_trainer_free(t);

    /* The vocabulary size bounds the merges: 256 bytes + 2 specials + 3 merges. */
    t = train_text("aaab aaab aab", 261, 1, 2);
    CHECK(t && lmf_bpe_trainer_n_merges(t) == 3 && lmf_bpe_trainer_vocab_size(t) == 261);
    lmf_bpe_trainer_free(t);
}

/* GPT-2 split details: contractions, numbers apart from letters, \s+(?!\S) leaving one space
 * to the next word, and special tokens cut out of the corpus. */
static void test_pretokenizer(void) {
    /* "it's" -> "it", "'s": the pair (',s) is counted twice, (s,') never. */
    lmf_bpe_trainer *t = train_text("it's it's", 1000, 2, 0);
    CHECK(t && lmf_bpe_trainer_n_merges(t) >= 2);
    int seen_quote_s = 0, seen_t_quote = 0;
    for (int i = 0; t && i < lmf_bpe_trainer_n_merges(t); i++) {
        const char *a, *b;
        lmf_bpe_trainer_merge(t, i, &a, &b);
        seen_quote_s |= !strcmp(a, "'") && !strcmp(b, "s");
        seen_t_quote |= !strcmp(b, "'") || !strcmp(b, "'s");
    }
    CHECK(seen_quote_s && !seen_t_quote);
    lmf_bpe_trainer_free(t);

    /* "x   y" x 2: words x, "ĠĠ" (the run minus its last space), "Ġy": (Ġ,Ġ) and (Ġ,y) tie at 2;
     * "Ġ" left ties, "y" < "Ġ" on the right, so (Ġ,y) comes first. */
    t = train_text("x   y\nx   y", 1000, 2, 0);
    CHECK(t && merge_is(t, 0, "\xc4\xa0", "y") && merge_is(t, 1, "\xc4\xa0", "\xc4\xa0"));
    CHECK(t && lmf_bpe_trainer_n_merges(t) == 2);
    lmf_bpe_trainer_free(t);

    /* Digits never merge with letters; the special token's bytes never enter a merge. */
    /* Invalid UTF-8 and control bytes are plain byte symbols, not errors. */
    t = train_text("\xff\xfe\xff\xfe \x85\r\n\x01\x01", 1000, 2, 0);
    CHECK(t && merge_is(t, 0, "\xc3\xbf", "\xc3\xbe")); /* bytes 0xff, 0xfe are ÿ, þ */
    lmf_bpe_trainer_free(t);

    t = train_text("ab12<|endoftext|>ab12<|endoftext|>ab12", 1000, 1, 1);
    CHECK(t && lmf_bpe_trainer_n_merges(t) == 2);
    CHECK(t && merge_is(t, 0, "1", "2") && merge_is(t, 1, "a", "b"));
    lmf_bpe_trainer_free(t);
}

static char *read_file(const char *dir, const char *name, size_t *len) {
    char *path = lmf_path_join(dir, name), *text = NULL;
    if (lmf_file_read_all(path, &text, len)) text = NULL;
    free(path);
    return text;
}

/* The written tokenizer.json: vocab of exactly the trained size with specials last, in
 * added_tokens as special; the config names the first special as eos/pad. */
static void test_files(const char *dir) {
    const char *corpus =
        "The quick brown fox jumps over the lazy dog. The dog didn't mind; the fox ran on.\n"
        "Numbers like 12345 and 2024 appear, and so does café, naïve, 東京 and emoji 🙂.\n";
    char *big = malloc(strlen(corpus) * 50 + 1);
    big[0] = 0;
    for (int i = 0; i < 50; i++) strcat(big, corpus);
    lmf_bpe_train_opts o = {300, 2, specials2, 2};
    char d1[512], d2[512];
    snprintf(d1, sizeof d1, "%s/a", dir);
    snprintf(d2, sizeof d2, "%s/b", dir);
    for (int k = 0; k < 2; k++) {
        lmf_bpe_trainer *t = NULL;
        int rc = lmf_bpe_trainer_create(&t, &o);
        if (!rc) rc = lmf_bpe_trainer_add_text(t, big, strlen(big));
        if (!rc) rc = lmf_bpe_trainer_train(t);
        if (!rc) rc = lmf_bpe_trainer_save(t, k ? d2 : d1);
        CHECK_MSG(rc == 0, "%s", lmf_last_error());
        CHECK(t && lmf_bpe_trainer_vocab_size(t) == 300);
        lmf_bpe_trainer_free(t);
    }
    free(big);
    size_t l1 = 0, l2 = 0, c1 = 0, c2 = 0;
    char *f1 = read_file(d1, "tokenizer.json", &l1), *f2 = read_file(d2, "tokenizer.json", &l2);
    char *g1 = read_file(d1, "tokenizer_config.json", &c1);
    char *g2 = read_file(d2, "tokenizer_config.json", &c2);
    CHECK(f1 && f2 && l1 == l2 && !memcmp(f1, f2, l1));
    CHECK(g1 && g2 && c1 == c2 && !memcmp(g1, g2, c1));
    cJSON *doc = NULL, *cfg = NULL;
    CHECK(f1 && lmf_json_parse(f1, l1, "tokenizer.json", &doc) == 0);
    CHECK(g1 && lmf_json_parse(g1, c1, "tokenizer_config.json", &cfg) == 0);
    if (doc) {
        cJSON *model = cJSON_GetObjectItem(doc, "model");
        cJSON *vocab = cJSON_GetObjectItem(model, "vocab");
        CHECK(cJSON_GetArraySize(vocab) == 300);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(model, "merges")) == 300 - 256 - 2);
        cJSON *eot = cJSON_GetObjectItem(vocab, "<|endoftext|>");
        cJSON *ime = cJSON_GetObjectItem(vocab, "<|im_end|>");
        CHECK(eot && eot->valueint == 298 && ime && ime->valueint == 299);
        cJSON *sp = cJSON_GetObjectItem(vocab, "\xc4\xa0"); /* byte 32 keeps id 32 */
        CHECK(sp && sp->valueint == 32);
        cJSON *added = cJSON_GetObjectItem(doc, "added_tokens");
        CHECK(cJSON_GetArraySize(added) == 2);
        cJSON *a0 = cJSON_GetArrayItem(added, 0);
        CHECK(a0 && cJSON_GetObjectItem(a0, "id")->valueint == 298 &&
              !strcmp(cJSON_GetObjectItem(a0, "content")->valuestring, "<|endoftext|>") &&
              cJSON_IsTrue(cJSON_GetObjectItem(a0, "special")));
        cJSON *pre = cJSON_GetObjectItem(doc, "pre_tokenizer");
        CHECK(pre && !strcmp(cJSON_GetObjectItem(pre, "type")->valuestring, "ByteLevel") &&
              cJSON_IsFalse(cJSON_GetObjectItem(pre, "add_prefix_space")));
    }
    if (cfg) {
        CHECK(!strcmp(cJSON_GetObjectItem(cfg, "eos_token")->valuestring, "<|endoftext|>"));
        CHECK(!strcmp(cJSON_GetObjectItem(cfg, "pad_token")->valuestring, "<|endoftext|>"));
        cJSON *dec = cJSON_GetObjectItem(cfg, "added_tokens_decoder");
        CHECK(dec && cJSON_GetObjectItem(dec, "299") != NULL);
    }
    cJSON_Delete(doc);
    cJSON_Delete(cfg);
    free(f1);
    free(f2);
    free(g1);
    free(g2);
}

static void test_errors(const char *dir) {
    lmf_bpe_trainer *t = NULL;
    lmf_bpe_train_opts o = {257, 2, specials2, 2};
    CHECK(lmf_bpe_trainer_create(&t, &o) == LMF_EINVAL && t == NULL);
    CHECK(strstr(lmf_last_error(), "vocab size 257") != NULL);

    const char *dup[] = {"<|x|>", "<|x|>"};
    lmf_bpe_train_opts od = {1000, 2, dup, 2};
    CHECK(lmf_bpe_trainer_create(&t, &od) == LMF_EINVAL);

    lmf_bpe_train_opts ok = {1000, 2, specials2, 2};
    CHECK(lmf_bpe_trainer_create(&t, &ok) == 0);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no-such-corpus.txt", dir);
    CHECK(lmf_bpe_trainer_add_file(t, missing) < 0);
    CHECK_MSG(strstr(lmf_last_error(), "no-such-corpus.txt") != NULL, "%s", lmf_last_error());
    /* Empty: an empty file and text made only of special tokens give nothing to train on. */
    char empty[512];
    snprintf(empty, sizeof empty, "%s/empty.txt", dir);
    CHECK(lmf_file_write_atomic(empty, "", 0) == 0);
    CHECK(lmf_bpe_trainer_add_file(t, empty) == 0);
    CHECK(lmf_bpe_trainer_add_text(t, "<|endoftext|>", 13) == 0);
    CHECK(lmf_bpe_trainer_train(t) == LMF_EINVAL);
    CHECK(strstr(lmf_last_error(), "empty") != NULL);
    CHECK(lmf_bpe_trainer_save(t, dir) == LMF_EINVAL);
    lmf_bpe_trainer_free(t);
}

static int train_only(const char *corpus, const char *vocab, const char *out) {
    static const char *sp[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    lmf_bpe_train_opts o = {atoi(vocab), 2, sp, 3};
    lmf_bpe_trainer *t = NULL;
    double t0 = lmf_time_sec();
    int rc = lmf_bpe_trainer_create(&t, &o);
    if (!rc) rc = lmf_bpe_trainer_add_file(t, corpus);
    if (!rc) rc = lmf_bpe_trainer_train(t);
    if (!rc) rc = lmf_bpe_trainer_save(t, out);
    if (rc)
        fprintf(stderr, "test_bpe_train --train: error: %s\n", lmf_last_error());
    else
        printf("trained %d merges, vocab size %d in %.2f s -> %s\n", lmf_bpe_trainer_n_merges(t),
               lmf_bpe_trainer_vocab_size(t), lmf_time_sec() - t0, out);
    lmf_bpe_trainer_free(t);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "--train")) return train_only(argv[2], argv[3], argv[4]);
    char dir[] = "/tmp/lmf-bpe-train-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_hand_merges();
    test_pretokenizer();
    test_files(dir);
    test_errors(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary("test_bpe_train");
}
