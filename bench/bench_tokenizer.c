/* Encode throughput of the tokenizer on one core: a few MB of mixed text (English prose, code,
 * CJK, Cyrillic, emoji, whitespace runs) through each tokenizer folder given on the command line.
 * Usage: [LMF_BENCH_TEXT=FILE] bench_tokenizer [DIR...]  (default: the shared gpt2, llama-3.2 and
 * tinyllama folders next to the source tree) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/tokenizer.h"

static const char *const SNIPPETS[] = {
    "The quick brown fox jumps over the lazy dog. It wasn't the first time, and DON'T expect "
    "it to be the last; the dog, after all, had seen 1,234,567 foxes since 1999.\n",
    "def tokenize(text):\n    for i, ch in enumerate(text):\n        if ch.isspace():\n"
    "            yield i\n    return None\n\n",
    "自然语言处理是人工智能的一个重要方向。我们今天讨论分词。",
    "Привет, мир! Это тестовый текст на русском языке для проверки скорости. ",
    "Emoji 😀👍🏽 and families 👨‍👩‍👧‍👦 in chat logs.\n",
    "tabs\t\tand   spaces.\n\n",
    "<html><body class=\"main\">&nbsp;Price: $42.00 (incl. 19% VAT)</body></html>\r\n",
    "नमस्ते दुनिया, यह एक परीक्षण है। ",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua.\n",
};

int main(int argc, char **argv) {
    const char *defaults[] = {"gpt2", "llama-3.2", "tinyllama-1.1b-chat-v1.0"};
    size_t target = 4u << 20, len = 0, cap = target + 4096;
    char *text = malloc(cap);
    if (!text) return 1;
    lmf_rng rng;
    lmf_rng_seed(&rng, 42);
    const int nsnip = (int)(sizeof SNIPPETS / sizeof SNIPPETS[0]);
    /* LMF_BENCH_TEXT=FILE benchmarks a real corpus instead (the mix repeats, so the word cache
     * hits more often than on natural text) */
    const char *file = getenv("LMF_BENCH_TEXT");
    if (file) {
        free(text);
        if (lmf_file_read_all(file, &text, &len)) {
            fprintf(stderr, "bench_tokenizer: %s\n", lmf_last_error());
            return 1;
        }
    }
    while (!file && len < target) {
        const char *s = SNIPPETS[lmf_rng_u64(&rng) % (uint64_t)nsnip];
        size_t n = strlen(s);
        memcpy(text + len, s, n);
        len += n;
    }
    int ndirs = argc > 1 ? argc - 1 : 3, rc = 0;
    for (int d = 0; d < ndirs; d++) {
        char dir[1024];
        if (argc > 1)
            snprintf(dir, sizeof dir, "%s", argv[d + 1]);
        else
            snprintf(dir, sizeof dir, "%s/../shared/data/tokenizers/%s", LMF_BENCH_SRC,
                     defaults[d]);
        lmf_tokenizer *t = NULL;
        if (lmf_tokenizer_load(&t, dir)) {
            fprintf(stderr, "bench_tokenizer: %s\n", lmf_last_error());
            rc = 1;
            continue;
        }
        int32_t *ids = NULL;
        int n = 0;
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = lmf_time_sec();
            free(ids);
            if (lmf_tokenizer_encode(t, text, len, 0, &ids, &n)) {
                fprintf(stderr, "bench_tokenizer: %s\n", lmf_last_error());
                rc = 1;
                break;
            }
            double dt = lmf_time_sec() - t0;
            if (dt < best) best = dt;
        }
        double t0 = lmf_time_sec();
        char *out = NULL;
        size_t olen = 0;
        int drc = lmf_tokenizer_decode(t, ids, n, 0, &out, &olen);
        double ddt = lmf_time_sec() - t0;
        printf("%-28s encode %6.2f MB/s (%zu bytes -> %d tokens, best of 3), decode %6.1f MB/s%s\n",
               strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir, (double)len / best / 1e6, len, n,
               (double)olen / ddt / 1e6,
               drc == 0 && olen == len && !memcmp(out, text, len) ? "" : " (round trip differs)");
        free(out);
        free(ids);
        lmf_tokenizer_free(t);
    }
    free(text);
    return rc;
}
