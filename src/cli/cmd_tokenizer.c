/* lmforge tokenizer encode|decode: run a model folder's tokenizer over stdin. encode prints the
 * ids as a one-line JSON array; decode reads such an array and prints the text. The hidden
 * --jsonl mode handles one JSON string (encode) or id array (decode) per line and answers one
 * line each, so the parity tests can push thousands of strings through one process (jsonl
 * input strings cannot hold U+0000: cJSON's strings end at NUL). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cmd_tokenizer_train.h"
#include "lmforge/core.h"
#include "lmforge/tokenizer.h"

static void usage(FILE *fp) {
    fprintf(fp, "usage: lmforge tokenizer encode|decode --tokenizer DIR [--no-special]\n"
                "       lmforge tokenizer train ...  (see lmforge tokenizer train --help)\n\n"
                "  encode        read UTF-8 text from stdin, print its token ids as a JSON array\n"
                "  decode        read a JSON array of ids from stdin, print the text\n"
                "  --tokenizer   folder with tokenizer.json (and tokenizer_config.json)\n"
                "  --no-special  encode without the post-processor's special tokens (BOS...);\n"
                "                decode skipping special tokens\n");
}

static int read_stdin(char **out, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, stdin);
        n += got;
        if (got == 0) break;
        if (n + 1 == cap) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
    }
    if (!buf) return lmf_errorf(LMF_ENOMEM, "stdin: out of memory");
    if (ferror(stdin)) {
        free(buf);
        return lmf_errorf(LMF_EIO, "stdin: read error");
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

static void print_ids(const int32_t *ids, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    fputs("]\n", stdout);
}

/* JSON string of text[0..len) on one line (decoded text may hold U+0000, which cJSON's
 * NUL-terminated strings would cut). */
static void print_json_string(const char *text, size_t len) {
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    fputs("\"\n", stdout);
}

static int parse_ids(const char *text, size_t len, const char *what, int32_t **ids, int *n) {
    cJSON *arr = cJSON_ParseWithLength(text, len);
    int rc = 0, i = 0;
    *ids = NULL;
    *n = 0;
    if (!cJSON_IsArray(arr)) {
        rc = lmf_errorf(LMF_EFORMAT, "%s: expected a JSON array of token ids", what);
        goto done;
    }
    *ids = malloc(((size_t)cJSON_GetArraySize(arr) + 1) * sizeof **ids);
    if (!*ids) {
        rc = lmf_errorf(LMF_ENOMEM, "%s: out of memory", what);
        goto done;
    }
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 2147483647.0 ||
            e->valuedouble != (double)(int32_t)e->valuedouble) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: element %d is not a token id", what, i);
            goto done;
        }
        (*ids)[i] = (int32_t)e->valuedouble;
    }
    *n = i;
done:
    cJSON_Delete(arr);
    if (rc) {
        free(*ids);
        *ids = NULL;
    }
    return rc;
}

/* One request: encode text or decode an id array, printing the answer (JSON-quoted in jsonl). */
static int run_one(const lmf_tokenizer *t, int encode, int special, int jsonl, const char *in,
                   size_t len, const char *what) {
    int32_t *ids = NULL;
    int n, rc;
    char *text = NULL;
    size_t tlen;
    if (encode) {
        if ((rc = lmf_tokenizer_encode(t, in, len, special, &ids, &n))) return rc;
        print_ids(ids, n);
        free(ids);
        return 0;
    }
    if ((rc = parse_ids(in, len, what, &ids, &n))) return rc;
    rc = lmf_tokenizer_decode(t, ids, n, !special, &text, &tlen);
    free(ids);
    if (rc) return rc;
    if (jsonl) {
        print_json_string(text, tlen);
    } else {
        fwrite(text, 1, tlen, stdout);
    }
    free(text);
    return rc;
}

static int run_jsonl(const lmf_tokenizer *t, int encode, int special, char *buf, size_t len) {
    int rc = 0, line_no = 1;
    for (char *p = buf, *end = buf + len; p < end && !rc; line_no++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char what[64];
        snprintf(what, sizeof what, "stdin line %d", line_no);
        if (encode) {
            cJSON *s = cJSON_ParseWithLength(p, n);
            if (!cJSON_IsString(s))
                rc = lmf_errorf(LMF_EFORMAT, "%s: expected a JSON string", what);
            else
                rc = run_one(t, 1, special, 1, s->valuestring, strlen(s->valuestring), what);
            cJSON_Delete(s);
        } else {
            rc = run_one(t, 0, special, 1, p, n, what);
        }
        p += n + 1;
    }
    return rc;
}

int lmf_cmd_tokenizer(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "train")) return lmf_cmd_tokenizer_train(argc - 1, argv + 1);
    const char *dir = NULL;
    int special = 1, jsonl = 0, encode = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--tokenizer")) {
            if (!(dir = lmf_cli_value(argc, argv, &i, "tokenizer"))) return 2;
        } else if (!strcmp(argv[i], "--no-special")) {
            special = 0;
        } else if (!strcmp(argv[i], "--jsonl")) {
            jsonl = 1;
        } else if (encode < 0 && (!strcmp(argv[i], "encode") || !strcmp(argv[i], "decode"))) {
            encode = !strcmp(argv[i], "encode");
        } else {
            fprintf(stderr, "lmforge tokenizer: unknown argument \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (encode < 0 || !dir) {
        usage(stderr);
        return 2;
    }
    lmf_tokenizer *t = NULL;
    char *in = NULL;
    size_t len = 0;
    int rc = lmf_tokenizer_load(&t, dir);
    if (!rc) rc = read_stdin(&in, &len);
    if (!rc)
        rc = jsonl ? run_jsonl(t, encode, special, in, len)
                   : run_one(t, encode, special, 0, in, len, "stdin");
    free(in);
    lmf_tokenizer_free(t);
    if (fflush(stdout) && !rc) rc = lmf_errorf(LMF_EIO, "stdout: write error");
    return lmf_cli_fail("tokenizer", rc);
}
