/* lmforge tokenizer train: learns a byte-level BPE vocabulary from text files and writes a
 * Hugging Face tokenizer folder (see include/lmforge/bpe_train.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_tokenizer_train.h"
#include "lmforge/bpe_train.h"
#include "lmforge/core.h"

#define DEFAULT_SPECIALS "<|endoftext|>,<|im_start|>,<|im_end|>"

static int usage(int code) {
    fprintf(code ? stderr : stdout,
            "usage: lmforge tokenizer train --corpus FILE [FILE...] --vocab-size N --out DIR\n"
            "                               [--min-frequency N] [--special-tokens A,B,...]\n"
            "  --min-frequency   pairs seen fewer times are not merged (default 2)\n"
            "  --special-tokens  comma-separated, take the last ids; the first is eos/pad\n"
            "                    (default \"%s\"; \"\" for none)\n",
            DEFAULT_SPECIALS);
    return code;
}

/* Splits a comma-separated list in place into at most max pointers; returns the count. */
static int split_commas(char *s, char **out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = s;
        char *c = strchr(s, ',');
        if (!c) break;
        *c = 0;
        s = c + 1;
    }
    return n;
}

int lmf_cmd_tokenizer_train(int argc, char **argv) {
    const char *out = NULL, *specials_arg = DEFAULT_SPECIALS;
    const char **corpus = calloc((size_t)argc, sizeof *corpus);
    long long vocab = 0, min_freq = 2;
    int n_corpus = 0, code = 2;
    char *specials_buf = NULL;
    char *specials[257];
    lmf_bpe_trainer *t = NULL;
    if (!corpus) return lmf_cli_fail("tokenizer train", lmf_errorf(LMF_ENOMEM, "out of memory"));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            code = usage(0);
            goto done;
        }
        if (!strcmp(a, "--corpus")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) corpus[n_corpus++] = argv[++i];
            if (!n_corpus) {
                fprintf(stderr, "lmforge tokenizer train: error: --corpus needs a file\n");
                goto done;
            }
            continue;
        }
        if (strcmp(a, "--vocab-size") && strcmp(a, "--out") && strcmp(a, "--min-frequency") &&
            strcmp(a, "--special-tokens")) {
            fprintf(stderr, "lmforge tokenizer train: error: unknown option \"%s\"\n", a);
            code = usage(2);
            goto done;
        }
        if (!(v = lmf_cli_value(argc, argv, &i, "tokenizer train"))) goto done;
        if ((!strcmp(a, "--vocab-size") && lmf_cli_int(v, a, 1, 1 << 24, &vocab)) ||
            (!strcmp(a, "--min-frequency") && lmf_cli_int(v, a, 0, 1LL << 40, &min_freq))) {
            code = lmf_cli_fail("tokenizer train", LMF_EINVAL);
            goto done;
        }
        if (!strcmp(a, "--out")) out = v;
        if (!strcmp(a, "--special-tokens")) specials_arg = v;
    }
    if (!n_corpus || !vocab || !out) {
        fprintf(stderr, "lmforge tokenizer train: error: --corpus, --vocab-size and --out are "
                        "required\n");
        code = usage(2);
        goto done;
    }
    int rc = (specials_buf = lmf_strdup(specials_arg)) ? 0 : LMF_ENOMEM;
    int n_special = rc ? 0 : split_commas(specials_buf, specials, 257);
    if (!rc && n_special > 256)
        rc = lmf_errorf(LMF_EINVAL, "--special-tokens: more than 256 tokens");
    lmf_bpe_train_opts o = {.vocab_size = (int)vocab,
                            .min_frequency = min_freq > 1 << 30 ? 1 << 30 : (int)min_freq,
                            .special_tokens = (const char *const *)specials,
                            .n_special = n_special};
    double t0 = lmf_time_sec();
    if (!rc) rc = lmf_bpe_trainer_create(&t, &o);
    for (int k = 0; !rc && k < n_corpus; k++) rc = lmf_bpe_trainer_add_file(t, corpus[k]);
    double t1 = lmf_time_sec();
    if (!rc && (rc = lmf_bpe_trainer_train(t))) /* name the files, e.g. when all are empty */
        lmf_error_prefix(rc, "corpus %s%s", corpus[0], n_corpus > 1 ? " ..." : "");
    double t2 = lmf_time_sec();
    if (!rc) rc = lmf_bpe_trainer_save(t, out);
    if (!rc)
        printf("trained %d merges, vocab size %d (asked %lld) in %.2f s (read %.2f s, merges "
               "%.2f s) -> %s\n",
               lmf_bpe_trainer_n_merges(t), lmf_bpe_trainer_vocab_size(t), vocab, t2 - t0, t1 - t0,
               t2 - t1, out);
    code = lmf_cli_fail("tokenizer train", rc);
done:
    lmf_bpe_trainer_free(t);
    free(specials_buf);
    free(corpus);
    return code;
}
