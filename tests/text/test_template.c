/* Chat templates against hand-derived renderings of LLaMA-Factory's template.py definitions
 * and of the Llama-3.2 / Qwen2.5 Jinja chat templates in shared/data/tokenizers.
 * `test_template --examples` prints the renderings used in docs/templates.md. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/error.h"
#include "lmforge/template.h"
#include "test.h"

#define SYS      "You are a bot."
#define CU(u)    "<|im_start|>user\n" u "<|im_end|>\n<|im_start|>assistant\n"
#define CA(a)    a "<|im_end|>\n"
#define CS(s)    "<|im_start|>system\n" s "<|im_end|>\n"
#define TE       "<think>\n\n</think>\n\n"
#define QWEN_SYS "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
#define L3U(u)                                                                                     \
    "<|start_header_id|>user<|end_header_id|>\n\n" u                                               \
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
#define L3S(s) "<|start_header_id|>system<|end_header_id|>\n\n" s "<|eot_id|>"
#define ALPACA_SYS                                                                                 \
    "Below is an instruction that describes a task. Write a response that appropriately "          \
    "completes the request.\n\n"
#define AI(u) "### Instruction:\n" u "\n\n### Response:\n"

static const lmf_message ONE[] = {{"user", "Hi"}, {"assistant", "Hello!"}};
static const lmf_message ONE_SYS[] = {{"system", SYS}, {"user", "Hi"}, {"assistant", "Hello!"}};
static const lmf_message THREE[] = {
    {"system", SYS},        {"user", "Hi"},  {"assistant", "Hello!"},  {"user", "How are you?"},
    {"assistant", "Fine."}, {"user", "Bye"}, {"assistant", "See you."}};
static const lmf_message GEN[] = {
    {"system", SYS}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "How are you?"}};

/* Renders msgs with encode_multiturn; NULL on error. Display strings <bos>/<eos>. */
static char *render(const char *name, const lmf_message *m, int n, const char *system,
                    const lmf_template_opts *opts, lmf_turn **keep, int *n_keep) {
    const lmf_template *t = lmf_template_find(name);
    lmf_turn *turns = NULL;
    int nt = 0;
    char *s = NULL;
    if (!t || lmf_template_encode_multiturn(t, m, n, system, opts, &turns, &nt)) return NULL;
    if (lmf_turns_to_string(turns, nt, "<bos>", "<eos>", &s)) s = NULL;
    if (keep) {
        *keep = turns;
        *n_keep = nt;
    } else {
        lmf_turns_free(turns, nt);
    }
    return s;
}

static char *render_gen(const char *name, const lmf_message *m, int n, const char *system,
                        const lmf_template_opts *opts) {
    const lmf_template *t = lmf_template_find(name);
    lmf_chat_pieces p;
    char *s = NULL;
    if (!t || lmf_template_render_generation_prompt(t, m, n, system, opts, &p)) return NULL;
    if (lmf_chat_pieces_to_string(&p, "<bos>", "<eos>", &s)) s = NULL;
    lmf_chat_pieces_free(&p);
    return s;
}

static char *pieces_str(const lmf_chat_pieces *p) {
    char *s = NULL;
    return lmf_chat_pieces_to_string(p, "<bos>", "<eos>", &s) ? NULL : s;
}

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        char *g_ = (got);                                                                          \
        CHECK_MSG(g_ &&strcmp(g_, (want)) == 0, "got [%s] want [%s] (%s)", g_ ? g_ : "(null)",     \
                  (want), lmf_last_error());                                                       \
        free(g_);                                                                                  \
    } while (0)

typedef struct expect {
    const char *name;
    const char *one, *one_sys, *three, *gen;
} expect;

static const expect EXPECT[] = {
    {"default", "Human: Hi<eos>\nAssistant:Hello!<eos>\n",
     "System: " SYS "<eos>\nHuman: Hi<eos>\nAssistant:Hello!<eos>\n",
     "System: " SYS "<eos>\nHuman: Hi<eos>\nAssistant:Hello!<eos>\n"
     "Human: How are you?<eos>\nAssistant:Fine.<eos>\nHuman: Bye<eos>\nAssistant:See you.<eos>\n",
     "System: " SYS "<eos>\nHuman: Hi<eos>\nAssistant:Hello!<eos>\n"
     "Human: How are you?<eos>\nAssistant:"},
    {"empty", "HiHello!", SYS "HiHello!", SYS "HiHello!How are you?Fine.ByeSee you.",
     SYS "HiHello!How are you?"},
    {"alpaca", ALPACA_SYS AI("Hi") "Hello!<eos>\n\n", SYS AI("Hi") "Hello!<eos>\n\n",
     SYS AI("Hi") "Hello!<eos>\n\n" AI("How are you?") "Fine.<eos>\n\n" AI(
         "Bye") "See you.<eos>\n\n",
     SYS AI("Hi") "Hello!<eos>\n\n" AI("How are you?")},
    {"llama2", "<bos>[INST] Hi [/INST]Hello!<eos>",
     "<bos>[INST] <<SYS>>\n" SYS "\n<</SYS>>\n\nHi [/INST]Hello!<eos>",
     "<bos>[INST] <<SYS>>\n" SYS "\n<</SYS>>\n\nHi [/INST]Hello!<eos>"
     "<bos>[INST] How are you? [/INST]Fine.<eos><bos>[INST] Bye [/INST]See you.<eos>",
     "<bos>[INST] <<SYS>>\n" SYS "\n<</SYS>>\n\nHi [/INST]Hello!<eos>"
     "<bos>[INST] How are you? [/INST]"},
    {"llama3", "<bos>" L3U("Hi") "Hello!<|eot_id|>", "<bos>" L3S(SYS) L3U("Hi") "Hello!<|eot_id|>",
     "<bos>" L3S(SYS) L3U("Hi") "Hello!<|eot_id|>" L3U("How are you?") "Fine.<|eot_id|>" L3U(
         "Bye") "See you.<|eot_id|>",
     "<bos>" L3S(SYS) L3U("Hi") "Hello!<|eot_id|>" L3U("How are you?")},
    {"mistral", "<bos>[INST] Hi[/INST] Hello!<eos>", "<bos>[INST] " SYS "\n\nHi[/INST] Hello!<eos>",
     "<bos>[INST] " SYS "\n\nHi[/INST] Hello!<eos>[INST] How are you?[/INST] Fine.<eos>"
     "[INST] Bye[/INST] See you.<eos>",
     "<bos>[INST] " SYS "\n\nHi[/INST] Hello!<eos>[INST] How are you?[/INST]"},
    {"qwen", CS(QWEN_SYS) CU("Hi") CA("Hello!"), CS(SYS) CU("Hi") CA("Hello!"),
     CS(SYS) CU("Hi") CA("Hello!") CU("How are you?") CA("Fine.") CU("Bye") CA("See you."),
     CS(SYS) CU("Hi") CA("Hello!") CU("How are you?")},
    {"chatml", CU("Hi") CA("Hello!"), CS(SYS) CU("Hi") CA("Hello!"),
     CS(SYS) CU("Hi") CA("Hello!") CU("How are you?") CA("Fine.") CU("Bye") CA("See you."),
     CS(SYS) CU("Hi") CA("Hello!") CU("How are you?")},
    {"qwen3", CU("Hi") TE CA("Hello!"), CS(SYS) CU("Hi") TE CA("Hello!"),
     CS(SYS) CU("Hi") TE CA("Hello!") CU("How are you?") TE CA("Fine.") CU("Bye") TE CA("See you."),
     CS(SYS) CU("Hi") CA("Hello!") CU("How are you?")},
    {"qwen3_nothink", CU("Hi") CA("Hello!"), CS(SYS) CU("Hi") CA("Hello!"),
     CS(SYS) CU("Hi") CA("Hello!") CU("How are you?") CA("Fine.") CU("Bye") CA("See you."),
     CS(SYS) CU("Hi") CA("Hello!") CU("How are you?")},
    {"zephyr",
     "<|system|>\nYou are Zephyr, a helpful "
     "assistant.<eos><|user|>\nHi<eos><|assistant|>\nHello!<eos>",
     "<|system|>\n" SYS "<eos><|user|>\nHi<eos><|assistant|>\nHello!<eos>",
     "<|system|>\n" SYS "<eos><|user|>\nHi<eos><|assistant|>\nHello!<eos>"
     "<|user|>\nHow are you?<eos><|assistant|>\nFine.<eos><|user|>\nBye<eos><|assistant|>\nSee "
     "you.<eos>",
     "<|system|>\n" SYS "<eos><|user|>\nHi<eos><|assistant|>\nHello!<eos>"
     "<|user|>\nHow are you?<eos><|assistant|>\n"},
    {"falcon", "User: Hi\nFalcon:Hello!\n", SYS "User: Hi\nFalcon:Hello!\n",
     SYS "User: Hi\nFalcon:Hello!\nUser: How are you?\nFalcon:Fine.\nUser: Bye\nFalcon:See you.\n",
     SYS "User: Hi\nFalcon:Hello!\nUser: How are you?\nFalcon:"},
};
#define N_EXPECT ((int)(sizeof EXPECT / sizeof EXPECT[0]))

static void test_every_template(void) {
    int n_names = 0;
    const char *const *names = lmf_template_names(&n_names);
    CHECK_MSG(n_names == N_EXPECT, "%d templates, %d with expectations", n_names, N_EXPECT);
    CHECK(names[n_names] == NULL);
    for (int i = 0; i < n_names; i++) {
        const lmf_template *t = lmf_template_find(names[i]);
        CHECK_MSG(t && strcmp(lmf_template_name(t), names[i]) == 0, "%s", names[i]);
    }
    for (int i = 0; i < N_EXPECT; i++) {
        const expect *e = &EXPECT[i];
        CHECK_STR(render(e->name, ONE, 2, NULL, NULL, NULL, NULL), e->one);
        CHECK_STR(render(e->name, ONE_SYS, 3, NULL, NULL, NULL, NULL), e->one_sys);
        /* the system argument is equivalent to a leading system message */
        CHECK_STR(render(e->name, ONE, 2, SYS, NULL, NULL, NULL), e->one_sys);
        /* "" and NULL both mean "use the template's default" */
        CHECK_STR(render(e->name, ONE, 2, "", NULL, NULL, NULL), e->one);
        CHECK_STR(render(e->name, THREE, 7, NULL, NULL, NULL, NULL), e->three);
        CHECK_STR(render_gen(e->name, GEN, 4, NULL, NULL), e->gen);
    }
}

static void test_turn_split(void) {
    lmf_turn *tu = NULL;
    int nt = 0;
    free(render("qwen", THREE, 7, NULL, NULL, &tu, &nt));
    CHECK(nt == 3);
    if (nt == 3) {
        CHECK_STR(pieces_str(&tu[0].prompt), CS(SYS) CU("Hi"));
        CHECK_STR(pieces_str(&tu[1].prompt), CU("How are you?"));
        CHECK_STR(pieces_str(&tu[1].response), CA("Fine."));
        /* system and user are separate elements (tokenized separately) */
        CHECK(tu[0].prompt.n == 2);
    }
    lmf_turns_free(tu, nt);

    free(render("default", THREE, 7, NULL, NULL, &tu, &nt));
    if (nt == 3) {
        /* eos is a slot: "Hello!", EOS, "\n" */
        const lmf_chat_pieces *r = &tu[0].response;
        CHECK(r->n == 3 && r->v[0].kind == LMF_CHAT_PIECE_TEXT &&
              strcmp(r->v[0].text, "Hello!") == 0 && r->v[1].kind == LMF_CHAT_PIECE_EOS &&
              r->v[1].text == NULL && r->v[2].kind == LMF_CHAT_PIECE_TEXT &&
              strcmp(r->v[2].text, "\n") == 0);
        CHECK_STR(pieces_str(&tu[0].prompt), "System: " SYS "<eos>\nHuman: Hi<eos>\nAssistant:");
    }
    lmf_turns_free(tu, nt);

    free(render("llama2", THREE, 7, NULL, NULL, &tu, &nt));
    if (nt == 3) {
        /* Llama2Template fuses the system text into the first user element */
        CHECK(tu[0].prompt.n == 2 && tu[0].prompt.v[0].kind == LMF_CHAT_PIECE_BOS);
        CHECK_STR(pieces_str(&tu[1].prompt), "<bos>[INST] How are you? [/INST]");
        CHECK_STR(pieces_str(&tu[2].response), "See you.<eos>");
    }
    lmf_turns_free(tu, nt);

    free(render("mistral", THREE, 7, NULL, NULL, &tu, &nt));
    if (nt == 3) {
        CHECK(tu[0].prompt.n == 2 && tu[0].prompt.v[0].kind == LMF_CHAT_PIECE_BOS &&
              strcmp(tu[0].prompt.v[1].text, "[INST] " SYS "\n\nHi[/INST]") == 0);
        CHECK(tu[1].prompt.n == 1); /* bos only once, in the prefix */
    }
    lmf_turns_free(tu, nt);

    free(render("llama3", ONE, 2, NULL, NULL, &tu, &nt));
    if (nt == 1) {
        CHECK(tu[0].prompt.v[0].kind == LMF_CHAT_PIECE_BOS);
        CHECK(tu[0].response.n == 1 && tu[0].response.v[0].kind == LMF_CHAT_PIECE_TEXT);
    }
    lmf_turns_free(tu, nt);

    /* efficient_eos: no eos anywhere; the supervised step (lmf_sft_build) adds the eos
     * labels and the final eos, as LLaMA-Factory's processor does */
    free(render("falcon", THREE, 7, NULL, NULL, &tu, &nt));
    if (nt == 3) {
        CHECK_STR(pieces_str(&tu[0].response), "Hello!\n");
        CHECK_STR(pieces_str(&tu[2].response), "See you.\n");
        CHECK_STR(pieces_str(&tu[1].prompt), "User: How are you?\nFalcon:");
    }
    lmf_turns_free(tu, nt);
}

static void test_template_properties(void) {
    const lmf_template *t = lmf_template_find("llama3");
    int n = 0;
    CHECK(t && strcmp(lmf_template_eos_override(t), "<|eot_id|>") == 0);
    const char *const *sw = t ? lmf_template_stop_words(t, &n) : NULL;
    CHECK(n == 2 && strcmp(sw[0], "<|eot_id|>") == 0 && strcmp(sw[1], "<|eom_id|>") == 0);
    t = lmf_template_find("qwen");
    CHECK(t && strcmp(lmf_template_eos_override(t), "<|im_end|>") == 0);
    CHECK(t && strcmp(lmf_template_default_system(t), QWEN_SYS) == 0);
    t = lmf_template_find("chatml");
    sw = t ? lmf_template_stop_words(t, &n) : NULL;
    CHECK(n == 2 && strcmp(sw[1], "<|im_start|>") == 0);
    t = lmf_template_find("llama2");
    CHECK(t && lmf_template_eos_override(t) == NULL && lmf_template_efficient_eos(t) == 0);
    CHECK(t && strcmp(lmf_template_default_system(t), "") == 0);
    t = lmf_template_find("mistral");
    CHECK(t && lmf_template_stop_words(t, &n) && n == 0);
    t = lmf_template_find("falcon");
    CHECK(t && lmf_template_efficient_eos(t) == 1);
    t = lmf_template_find("qwen3");
    CHECK(t && strcmp(lmf_template_name(t), "qwen3") == 0 &&
          strcmp(lmf_template_default_system(t), "") == 0);
}

/* Leading system message wins over the argument (LLaMA-Factory's sharegpt converter). */
static void test_system_precedence(void) {
    CHECK_STR(render("qwen", ONE_SYS, 3, "Other.", NULL, NULL, NULL),
              CS(SYS) CU("Hi") CA("Hello!"));
    const lmf_message empty_sys[] = {{"system", ""}, {"user", "Hi"}, {"assistant", "Hello!"}};
    CHECK_STR(render("qwen", empty_sys, 3, NULL, NULL, NULL, NULL),
              CS(QWEN_SYS) CU("Hi") CA("Hello!"));
    CHECK_STR(render("qwen3", empty_sys, 3, NULL, NULL, NULL, NULL), CU("Hi") TE CA("Hello!"));
    CHECK_STR(render_gen("qwen", ONE, 1, NULL, NULL), CS(QWEN_SYS) CU("Hi"));
}

static void test_qwen3_thinking(void) {
    lmf_template_opts off = {.enable_thinking = 0};
    lmf_turn *tu = NULL;
    int nt = 0;
    /* enable_thinking=1: empty block starts the (trained) response */
    free(render("qwen3", ONE, 2, NULL, NULL, &tu, &nt));
    if (nt == 1) {
        CHECK_STR(pieces_str(&tu[0].prompt), CU("Hi"));
        CHECK_STR(pieces_str(&tu[0].response), TE CA("Hello!"));
        CHECK(tu[0].response.n == 2); /* the block is its own element */
    }
    lmf_turns_free(tu, nt);
    /* enable_thinking=0: empty block ends the (masked) prompt */
    free(render("qwen3", ONE, 2, NULL, &off, &tu, &nt));
    if (nt == 1) {
        CHECK_STR(pieces_str(&tu[0].prompt), CU("Hi") TE);
        CHECK_STR(pieces_str(&tu[0].response), CA("Hello!"));
    }
    lmf_turns_free(tu, nt);

    const lmf_message th[] = {
        {"user", "Hi"},
        {"assistant", "<think>\nsay hi\n</think>\n\nHello!"},
        {"user", "2+2?"},
        {"assistant", "\n<think>\na\n</think>\n\nb<think>\nc\n</think>\n\n4"}};
    /* thinking on: existing thoughts are kept and trained, no empty block added */
    CHECK_STR(render("qwen3", th, 4, NULL, NULL, NULL, NULL),
              CU("Hi") CA("<think>\nsay hi\n</think>\n\nHello!") CU("2+2?")
                  CA("\n<think>\na\n</think>\n\nb<think>\nc\n</think>\n\n4"));
    /* thinking off: every thought removed (leading newlines stripped), empty block in prompt */
    free(render("qwen3", th, 4, NULL, &off, &tu, &nt));
    if (nt == 2) {
        CHECK_STR(pieces_str(&tu[0].prompt), CU("Hi") TE);
        CHECK_STR(pieces_str(&tu[0].response), CA("Hello!"));
        CHECK_STR(pieces_str(&tu[1].prompt), CU("2+2?") TE);
        CHECK_STR(pieces_str(&tu[1].response), CA("b4"));
    }
    lmf_turns_free(tu, nt);
    /* an unterminated think block is not a thought: kept as is, and it blocks the empty block */
    const lmf_message open[] = {{"user", "Hi"}, {"assistant", "<think>\nhmm Hello!"}};
    CHECK_STR(render("qwen3", open, 2, NULL, &off, NULL, NULL), CU("Hi") CA("<think>\nhmm Hello!"));

    /* generation: history thoughts dropped; open turn gets the block only with thinking off */
    CHECK_STR(render_gen("qwen3", th, 3, NULL, NULL), CU("Hi") CA("Hello!") CU("2+2?"));
    CHECK_STR(render_gen("qwen3", th, 3, NULL, &off), CU("Hi") CA("Hello!") CU("2+2?") TE);
    /* qwen3_nothink keeps contents verbatim and never adds blocks */
    CHECK_STR(render_gen("qwen3_nothink", th, 3, NULL, &off),
              CU("Hi") CA("<think>\nsay hi\n</think>\n\nHello!") CU("2+2?"));
    CHECK_STR(render("qwen3_nothink", ONE, 2, NULL, &off, NULL, NULL), CU("Hi") CA("Hello!"));
}

/* The reference Jinja templates in shared/data/tokenizers, rendered by hand. */
static void test_against_jinja(void) {
    const lmf_template *t = lmf_template_find("qwen");
    lmf_turn *tu = NULL;
    int nt = 0;
    char *s = NULL;
    /* Qwen2.5: messages without system get the default system block */
    const lmf_message two[] = {
        {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "How are you?"}, {"assistant", "Fine."}};
    CHECK(t && lmf_template_encode_multiturn(t, two, 4, NULL, NULL, &tu, &nt) == 0);
    CHECK(lmf_turns_to_string(tu, nt, NULL, NULL, &s) == 0);
    CHECK_STR(s, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                 "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                 "Hello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
                 "<|im_start|>assistant\nFine.<|im_end|>\n");
    lmf_turns_free(tu, nt);
    /* add_generation_prompt=True */
    lmf_chat_pieces p;
    CHECK(lmf_template_render_generation_prompt(t, two, 3, NULL, NULL, &p) == 0);
    s = NULL;
    CHECK(lmf_chat_pieces_to_string(&p, NULL, NULL, &s) == 0);
    CHECK_STR(s, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                 "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                 "Hello!<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n"
                 "<|im_start|>assistant\n");
    lmf_chat_pieces_free(&p);

    /* Llama-3.2's template always writes a dated system block; with that text as our system
     * message the renderings agree (bos_token = <|begin_of_text|>). */
    t = lmf_template_find("llama3");
    const lmf_message l3[] = {
        {"system", "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" SYS},
        {"user", "Hi"},
        {"assistant", "Hello!"},
        {"user", "How are you?"}};
    CHECK(t && lmf_template_encode_multiturn(t, l3, 3, NULL, NULL, &tu, &nt) == 0);
    s = NULL;
    CHECK(lmf_turns_to_string(tu, nt, "<|begin_of_text|>", "<|eot_id|>", &s) == 0);
    CHECK_STR(s, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting "
                 "Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a "
                 "bot.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>");
    lmf_turns_free(tu, nt);
    CHECK(lmf_template_render_generation_prompt(t, l3, 4, NULL, NULL, &p) == 0);
    s = NULL;
    CHECK(lmf_chat_pieces_to_string(&p, "<|begin_of_text|>", "<|eot_id|>", &s) == 0);
    CHECK_STR(s, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting "
                 "Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a "
                 "bot.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n");
    lmf_chat_pieces_free(&p);
}

static int fails_with(int rc, int want, const char *needle) {
    return rc == want && strstr(lmf_last_error(), needle) != NULL;
}

static void test_errors(void) {
    const lmf_template *t = lmf_template_find("chatml");
    lmf_turn *tu = (lmf_turn *)1;
    int nt = -1;
    lmf_chat_pieces p;

    CHECK(lmf_template_find("chatml2") == NULL);
    CHECK(strstr(lmf_last_error(), "chatml2") && strstr(lmf_last_error(), "valid names") &&
          strstr(lmf_last_error(), "qwen3_nothink") && strstr(lmf_last_error(), "llama3"));
    CHECK(lmf_template_find(NULL) == NULL);

    CHECK(fails_with(lmf_template_encode_multiturn(t, NULL, 0, NULL, NULL, &tu, &nt), LMF_EINVAL,
                     "no user message"));
    CHECK(tu == NULL && nt == 0);
    const lmf_message only_sys[] = {{"system", "s"}};
    CHECK(fails_with(lmf_template_encode_multiturn(t, only_sys, 1, NULL, NULL, &tu, &nt),
                     LMF_EINVAL, "no user message"));
    const lmf_message uu[] = {{"user", "a"}, {"user", "b"}};
    CHECK(fails_with(lmf_template_encode_multiturn(t, uu, 2, NULL, NULL, &tu, &nt), LMF_EINVAL,
                     "messages[1]"));
    const lmf_message au[] = {{"system", "s"}, {"assistant", "a"}, {"user", "b"}};
    CHECK(fails_with(lmf_template_encode_multiturn(t, au, 3, NULL, NULL, &tu, &nt), LMF_EINVAL,
                     "messages[1]: role \"assistant\" out of order"));
    const lmf_message mid_sys[] = {
        {"user", "a"}, {"assistant", "b"}, {"system", "c"}, {"assistant", "d"}};
    CHECK(fails_with(lmf_template_encode_multiturn(t, mid_sys, 4, NULL, NULL, &tu, &nt), LMF_EINVAL,
                     "messages[2]"));
    const lmf_message bad_role[] = {{"user", "a"}, {"bot", "b"}};
    CHECK(fails_with(lmf_template_encode_multiturn(t, bad_role, 2, NULL, NULL, &tu, &nt),
                     LMF_EINVAL, "unknown role \"bot\""));
    const lmf_message null_content[] = {{"user", "a"}, {"assistant", NULL}};
    CHECK(fails_with(lmf_template_encode_multiturn(t, null_content, 2, NULL, NULL, &tu, &nt),
                     LMF_EINVAL, "messages[1]: content is NULL"));
    /* multiturn needs a final assistant message, generation a final user message */
    CHECK(fails_with(lmf_template_encode_multiturn(t, GEN, 4, NULL, NULL, &tu, &nt), LMF_EINVAL,
                     "messages[3]: last message must be assistant"));
    CHECK(fails_with(lmf_template_render_generation_prompt(t, ONE, 2, NULL, NULL, &p), LMF_EINVAL,
                     "messages[1]: last message must be user"));
    CHECK(p.n == 0 && p.v == NULL);
    const lmf_message tool[] = {
        {"user", "a"}, {"function", "{}"}, {"observation", "1"}, {"assistant", "b"}};
    CHECK(fails_with(lmf_template_encode_multiturn(t, tool, 4, NULL, NULL, &tu, &nt),
                     LMF_EUNSUPPORTED, "tool calls not supported yet"));
    CHECK(fails_with(lmf_template_render_generation_prompt(t, tool, 3, NULL, NULL, &p),
                     LMF_EUNSUPPORTED, "messages[1]"));
    CHECK(fails_with(lmf_template_encode_multiturn(NULL, ONE, 2, NULL, NULL, &tu, &nt), LMF_EINVAL,
                     "NULL template"));
}

/* ---- --examples: the renderings shown in docs/templates.md ---- */

static void print_escaped(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '\n')
            fputs("\\n", stdout);
        else if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void print_examples(void) {
    static const lmf_message conv[] = {{"system", SYS},
                                       {"user", "Hi"},
                                       {"assistant", "Hello!"},
                                       {"user", "How are you?"},
                                       {"assistant", "Fine."}};
    int n = 0;
    const char *const *names = lmf_template_names(&n);
    for (int i = 0; i < n; i++) {
        lmf_turn *tu = NULL;
        int nt = 0;
        char *full = render(names[i], conv, 5, NULL, NULL, &tu, &nt);
        printf("## %s\n\n```\n%s\n```\n\n", names[i], full ? full : lmf_last_error());
        for (int k = 0; k < nt; k++) {
            char *pr = pieces_str(&tu[k].prompt), *re = pieces_str(&tu[k].response);
            printf("turn %d prompt:   ", k);
            print_escaped(pr);
            printf("\nturn %d response: ", k);
            print_escaped(re);
            putchar('\n');
            free(pr);
            free(re);
        }
        char *g = render_gen(names[i], conv, 4, NULL, NULL);
        printf("generation prompt: ");
        print_escaped(g ? g : "");
        printf("\n\n");
        free(g);
        free(full);
        lmf_turns_free(tu, nt);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--examples") == 0) {
        print_examples();
        return 0;
    }
    test_every_template();
    test_turn_split();
    test_template_properties();
    test_system_precedence();
    test_qwen3_thinking();
    test_against_jinja();
    test_errors();
    return test_summary("test_template");
}
