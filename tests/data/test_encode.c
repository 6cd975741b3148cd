/* Label masks on hand-worked multi-turn conversations: the llama3 template with the real
 * Llama-3.2 tokenizer (../shared/data, skipped when absent) and the qwen template with a
 * byte-level ChatML tokenizer written here. For each of default, train_on_prompt and
 * mask_history, the decoded input and the decoded trained spans must equal the strings the
 * template's published format gives. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "lmforge/core.h"
#include "lmforge/encode.h"
#include "test.h"

#ifndef LMF_SOURCE_DIR
#define LMF_SOURCE_DIR "."
#endif

static lmf_msg msgs[4] = {
    {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "How are you?"}, {"assistant", "Fine."}};

/* Decoded text of the trained spans, joined with "|". */
static char *trained_spans(const lmf_tokenizer *tok, const lmf_example *e) {
    size_t cap = 4096, len = 0;
    char *out = calloc(cap, 1);
    for (int i = 0; i < e->n;) {
        if (e->labels[i] == LMF_IGNORE_INDEX) {
            i++;
            continue;
        }
        int j = i;
        while (j < e->n && e->labels[j] != LMF_IGNORE_INDEX) j++;
        char *t;
        size_t n;
        lmf_tokenizer_decode(tok, e->labels + i, j - i, 0, &t, &n);
        if (len) out[len++] = '|';
        memcpy(out + len, t, n < cap - len - 2 ? n : cap - len - 2);
        len += n < cap - len - 2 ? n : cap - len - 2;
        free(t);
        i = j;
    }
    return out;
}

static void check_case(const lmf_tokenizer *tok, const char *tpl, const char *system, int top,
                       int mh, const char *want_text, const char *want_spans) {
    lmf_record rec = {(char *)system, "", 4, msgs, NULL, "hand", 0};
    lmf_encode_options o = {tok, lmf_template_find(tpl), 0, 4096, top, mh, 1};
    lmf_example e;
    int cut;
    CHECK(o.tpl && lmf_encode_sft(&o, &rec, &e, &cut) == 0);
    char *text;
    size_t n;
    lmf_tokenizer_decode(tok, e.ids, e.n, 0, &text, &n);
    CHECK_MSG(!strcmp(text, want_text), "%s: decoded input\n%s\nwant\n%s", tpl, text, want_text);
    char *spans = trained_spans(tok, &e);
    CHECK_MSG(!strcmp(spans, want_spans), "%s top=%d mh=%d: trained spans\n%s\nwant\n%s", tpl, top,
              mh, spans, want_spans);
    CHECK(!cut);
    free(text), free(spans);
    lmf_example_free(&e);
}

/* A byte-level BPE tokenizer with no merges and ChatML special tokens (Qwen2.5's layout). */
static void write_chatml_tokenizer(const char *dir) {
    int cs[256], n = 0;
    for (int b = 0; b < 256; b++) cs[b] = -1;
    for (int b = '!'; b <= '~'; b++) cs[b] = b;
    for (int b = 0xA1; b <= 0xAC; b++) cs[b] = b;
    for (int b = 0xAE; b <= 0xFF; b++) cs[b] = b;
    for (int b = 0; b < 256; b++)
        if (cs[b] < 0) cs[b] = 256 + n++;
    cJSON *vocab = cJSON_CreateObject();
    for (int b = 0; b < 256; b++) {
        char u[4] = {0};
        if (cs[b] < 0x80)
            u[0] = (char)cs[b];
        else
            u[0] = (char)(0xC0 | (cs[b] >> 6)), u[1] = (char)(0x80 | (cs[b] & 0x3F));
        cJSON_AddNumberToObject(vocab, u, b);
    }
    const char *json_fmt =
        "{\"version\":\"1.0\",\"added_tokens\":[%s],\"normalizer\":null,"
        "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":"
        "true,\"use_regex\":true},"
        "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
        "\"trim_offsets\":true,"
        "\"use_regex\":true},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
        "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_"
        "fallback\":false,"
        "\"ignore_merges\":false,\"vocab\":%s,\"merges\":[]}}";
    const char *added = "{\"id\":256,\"content\":\"<|endoftext|>\",\"single_word\":false,"
                        "\"lstrip\":false,\"rstrip\":false,"
                        "\"normalized\":false,\"special\":true},{\"id\":257,\"content\":\"<|im_"
                        "start|>\",\"single_word\":false,"
                        "\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},{"
                        "\"id\":258,\"content\":"
                        "\"<|im_end|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                        "\"normalized\":false,"
                        "\"special\":true}";
    char *v = cJSON_PrintUnformatted(vocab);
    size_t len = strlen(json_fmt) + strlen(added) + strlen(v) + 1;
    char *json = malloc(len);
    snprintf(json, len, json_fmt, added, v);
    char *p = lmf_path_join(dir, "tokenizer.json");
    lmf_file_write_atomic(p, json, strlen(json));
    free(p);
    const char *tcfg =
        "{\"bos_token\": null, \"eos_token\": \"<|im_end|>\", \"pad_token\": \"<|endoftext|>\"}";
    p = lmf_path_join(dir, "tokenizer_config.json");
    lmf_file_write_atomic(p, tcfg, strlen(tcfg));
    free(p), free(json), free(v);
    cJSON_Delete(vocab);
}

int main(void) {
    char dir[64] = "/tmp/lmf-test-encode-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    lmf_tokenizer *tok = NULL;
    write_chatml_tokenizer(dir);
    CHECK(lmf_tokenizer_load(&tok, dir) == 0);
    if (tok) {
        const char *full =
            "<|im_start|>system\nYou are a bot.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
            "<|im_start|>assistant\nFine.<|im_end|>\n";
        check_case(tok, "qwen", "You are a bot.", 0, 0, full,
                   "Hello!<|im_end|>\n|Fine.<|im_end|>\n");
        check_case(tok, "qwen", "You are a bot.", 1, 0, full, full);
        check_case(tok, "qwen", "You are a bot.", 0, 1, full, "Fine.<|im_end|>\n");
        const char *dflt =
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!"
            "<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\nFine."
            "<|im_end|>\n";
        check_case(tok, "qwen", "", 0, 0, dflt, "Hello!<|im_end|>\n|Fine.<|im_end|>\n");
        lmf_tokenizer_free(tok);
    }
    char *unused[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char *p = lmf_path_join(dir, unused[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);

    char *llama = lmf_path_join(LMF_SOURCE_DIR, "../shared/data/tokenizers/llama-3.2");
    char *tj = lmf_path_join(llama, "tokenizer.json");
    if (!lmf_path_exists(tj)) {
        printf("SKIP: ../shared/data not present (llama3 label masks)\n");
    } else if (lmf_tokenizer_load(&tok, llama) == 0) {
        const char *full =
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a "
            "bot.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant"
            "<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow "
            "are "
            "you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nFine.<|eot_id|>";
        check_case(tok, "llama3", "You are a bot.", 0, 0, full, "Hello!<|eot_id|>|Fine.<|eot_id|>");
        check_case(tok, "llama3", "You are a bot.", 1, 0, full, full);
        check_case(tok, "llama3", "You are a bot.", 0, 1, full, "Fine.<|eot_id|>");
        lmf_tokenizer_free(tok);
    } else {
        CHECK_MSG(0, "llama-3.2 tokenizer failed to load: %s", lmf_last_error());
    }
    free(llama), free(tj);
    return test_summary("test_encode");
}
