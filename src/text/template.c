/* Chat templates: LLaMA-Factory's template table (the subset lmforge supports) and its
 * encode_multiturn / encode_oneturn re-implemented at the string level. Output is a list of
 * pieces per prompt and response; see include/lmforge/template.h for the contract. */
#include "lmforge/template.h"

#include <stdlib.h>
#include <string.h>

#include "lmforge/error.h"

/* ---- template table ---- */

enum { S_END = 0, S_TEXT, S_BOS, S_EOS };

/* One formatter slot: text with at most one "{{content}}" placeholder, or a bos/eos slot. */
typedef struct slot {
    int kind;
    const char *text;
} slot;

#define MAX_SLOTS 4
#define T(s)                                                                                       \
    { S_TEXT, s }
#define BOS                                                                                        \
    { S_BOS, NULL }
#define EOS                                                                                        \
    { S_EOS, NULL }
#define CONTENT T("{{content}}")

struct lmf_template {
    const char *name;
    slot prefix[MAX_SLOTS], system[MAX_SLOTS], user[MAX_SLOTS], assistant[MAX_SLOTS];
    const char *default_system;
    const char *stop_words[3]; /* NULL-terminated */
    int efficient_eos, replace_eos;
    /* Llama2Template: the formatted system text is prepended to the first user message's
     * content (one element) instead of being its own element. */
    int fuse_system;
    /* ReasoningTemplate: empty <think> blocks added per enable_thinking. */
    int reasoning;
};

#define CHATML_USER  T("<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n")
#define CHATML_ASST  T("{{content}}<|im_end|>\n")
#define CHATML_SYS   T("<|im_start|>system\n{{content}}<|im_end|>\n")
#define QWEN_DEFAULT "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

/* Transcribed from LLaMA-Factory's register_template calls (register_template's defaults
 * spelled out: system defaults to "{{content}}", assistant to "{{content}}" + eos, or
 * "{{content}}" alone with efficient_eos). Sorted by name. */
static const lmf_template TEMPLATES[] = {
    {.name = "alpaca",
     .system = {CONTENT},
     .user = {T("### Instruction:\n{{content}}\n\n### Response:\n")},
     .assistant = {CONTENT, EOS, T("\n\n")},
     .default_system = "Below is an instruction that describes a task. Write a response that "
                       "appropriately completes the request.\n\n"},
    {.name = "chatml",
     .system = {CHATML_SYS},
     .user = {CHATML_USER},
     .assistant = {CHATML_ASST},
     .stop_words = {"<|im_end|>", "<|im_start|>"},
     .replace_eos = 1},
    {.name = "default",
     .system = {T("System: {{content}}"), EOS, T("\n")},
     .user = {T("Human: {{content}}"), EOS, T("\nAssistant:")},
     .assistant = {CONTENT, EOS, T("\n")}},
    {.name = "empty", .system = {CONTENT}, .user = {CONTENT}, .assistant = {CONTENT}},
    {.name = "falcon",
     .system = {CONTENT},
     .user = {T("User: {{content}}\nFalcon:")},
     .assistant = {T("{{content}}\n")},
     .efficient_eos = 1},
    {.name = "llama2",
     .system = {T("<<SYS>>\n{{content}}\n<</SYS>>\n\n")},
     .user = {BOS, T("[INST] {{content}} [/INST]")},
     .assistant = {CONTENT, EOS},
     .fuse_system = 1},
    {.name = "llama3",
     .prefix = {BOS},
     .system = {T("<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>")},
     .user = {T("<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")},
     .assistant = {T("{{content}}<|eot_id|>")},
     .stop_words = {"<|eot_id|>", "<|eom_id|>"},
     .replace_eos = 1},
    {.name = "mistral",
     .prefix = {BOS},
     .system = {T("{{content}}\n\n")},
     .user = {T("[INST] {{content}}[/INST]")},
     .assistant = {T(" {{content}}"), EOS},
     .fuse_system = 1},
    {.name = "qwen",
     .system = {CHATML_SYS},
     .user = {CHATML_USER},
     .assistant = {CHATML_ASST},
     .default_system = QWEN_DEFAULT,
     .stop_words = {"<|im_end|>"},
     .replace_eos = 1},
    {.name = "qwen3",
     .system = {CHATML_SYS},
     .user = {CHATML_USER},
     .assistant = {CHATML_ASST},
     .stop_words = {"<|im_end|>"},
     .replace_eos = 1,
     .reasoning = 1},
    {.name = "qwen3_nothink",
     .system = {CHATML_SYS},
     .user = {CHATML_USER},
     .assistant = {CHATML_ASST},
     .stop_words = {"<|im_end|>"},
     .replace_eos = 1},
    {.name = "zephyr",
     .system = {T("<|system|>\n{{content}}"), EOS},
     .user = {T("<|user|>\n{{content}}"), EOS, T("<|assistant|>\n")},
     .assistant = {CONTENT, EOS},
     .default_system = "You are Zephyr, a helpful assistant."},
};
#define N_TEMPLATES ((int)(sizeof TEMPLATES / sizeof TEMPLATES[0]))

static const char *const NAMES[] = {"alpaca",        "chatml", "default", "empty", "falcon",
                                    "llama2",        "llama3", "mistral", "qwen",  "qwen3",
                                    "qwen3_nothink", "zephyr", NULL};

/* LLaMA-Factory's default thought_words; the empty block is their concatenation. */
static const char THINK_OPEN[] = "<think>\n";
static const char THINK_CLOSE[] = "\n</think>\n\n";
static const char THINK_EMPTY[] = "<think>\n\n</think>\n\n";

const char *const *lmf_template_names(int *n) {
    if (n) *n = N_TEMPLATES;
    return NAMES;
}

const lmf_template *lmf_template_find(const char *name) {
    for (int i = 0; name && i < N_TEMPLATES; i++)
        if (strcmp(TEMPLATES[i].name, name) == 0) return &TEMPLATES[i];
    char list[512] = "";
    for (int i = 0; i < N_TEMPLATES; i++) {
        if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, TEMPLATES[i].name, sizeof list - strlen(list) - 1);
    }
    lmf_errorf(LMF_ENOENT, "template \"%s\": unknown template; valid names: %s",
               name ? name : "(null)", list);
    return NULL;
}

const char *lmf_template_name(const lmf_template *t) {
    return t->name;
}

const char *lmf_template_default_system(const lmf_template *t) {
    return t->default_system ? t->default_system : "";
}

const char *const *lmf_template_stop_words(const lmf_template *t, int *n) {
    int k = 0;
    while (k < 2 && t->stop_words[k]) k++;
    if (n) *n = k;
    return t->stop_words;
}

const char *lmf_template_eos_override(const lmf_template *t) {
    return t->replace_eos ? t->stop_words[0] : NULL;
}

int lmf_template_efficient_eos(const lmf_template *t) {
    return t->efficient_eos;
}

/* ---- pieces ---- */

void lmf_chat_pieces_free(lmf_chat_pieces *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) free(p->v[i].text);
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
}

void lmf_turns_free(lmf_turn *turns, int n_turns) {
    if (!turns) return;
    for (int i = 0; i < n_turns; i++) {
        lmf_chat_pieces_free(&turns[i].prompt);
        lmf_chat_pieces_free(&turns[i].response);
    }
    free(turns);
}

static int grow(lmf_chat_pieces *p) {
    if (p->n < p->cap) return 0;
    int cap = p->cap ? p->cap * 2 : 8;
    lmf_chat_piece *v = realloc(p->v, (size_t)cap * sizeof *v);
    if (!v) return lmf_errorf(LMF_ENOMEM, "template: out of memory for %d pieces", cap);
    p->v = v;
    p->cap = cap;
    return 0;
}

/* Takes ownership of text (freed on failure). Empty text adds nothing: LLaMA-Factory skips
 * empty elements, and an empty piece would tokenize to nothing anyway. */
static int push_text_owned(lmf_chat_pieces *p, char *text) {
    if (!text) return lmf_errorf(LMF_ENOMEM, "template: out of memory for piece text");
    if (!*text) {
        free(text);
        return 0;
    }
    int rc = grow(p);
    if (rc) {
        free(text);
        return rc;
    }
    p->v[p->n++] = (lmf_chat_piece){LMF_CHAT_PIECE_TEXT, text};
    return 0;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *r = malloc(n + 1);
    if (r) memcpy(r, s, n + 1);
    return r;
}

static int push_kind(lmf_chat_pieces *p, int kind) {
    int rc = grow(p);
    if (rc) return rc;
    p->v[p->n++] = (lmf_chat_piece){kind, NULL};
    return 0;
}

/* Moves all of src's pieces to the end of dst (src is left empty). */
static int append_pieces(lmf_chat_pieces *dst, lmf_chat_pieces *src) {
    for (int i = 0; i < src->n; i++) {
        int rc = grow(dst);
        if (rc) return rc;
        dst->v[dst->n++] = src->v[i];
        src->v[i].text = NULL;
    }
    lmf_chat_pieces_free(src);
    return 0;
}

static int prepend_text(lmf_chat_pieces *p, const char *text) {
    int rc = grow(p);
    if (rc) return rc;
    char *copy = dup_str(text);
    if (!copy) return lmf_errorf(LMF_ENOMEM, "template: out of memory for piece text");
    memmove(p->v + 1, p->v, (size_t)p->n * sizeof *p->v);
    p->v[0] = (lmf_chat_piece){LMF_CHAT_PIECE_TEXT, copy};
    p->n++;
    return 0;
}

/* Replaces the first "{{content}}" in fmt with content (StringFormatter.apply). */
static char *fill(const char *fmt, const char *content) {
    const char *hole = strstr(fmt, "{{content}}");
    if (!hole) return dup_str(fmt);
    size_t a = (size_t)(hole - fmt), c = strlen(content), b = strlen(hole + 11);
    char *r = malloc(a + c + b + 1);
    if (!r) return NULL;
    memcpy(r, fmt, a);
    memcpy(r + a, content, c);
    memcpy(r + a + c, hole + 11, b + 1);
    return r;
}

static int apply_slots(lmf_chat_pieces *out, const slot *s, const char *content) {
    for (int i = 0; i < MAX_SLOTS && s[i].kind != S_END; i++) {
        int rc = s[i].kind == S_TEXT  ? push_text_owned(out, fill(s[i].text, content))
                 : s[i].kind == S_BOS ? push_kind(out, LMF_CHAT_PIECE_BOS)
                                      : push_kind(out, LMF_CHAT_PIECE_EOS);
        if (rc) return rc;
    }
    return 0;
}

int lmf_chat_pieces_to_string(const lmf_chat_pieces *p, const char *bos, const char *eos,
                              char **out) {
    size_t len = 0, lb = bos ? strlen(bos) : 0, le = eos ? strlen(eos) : 0;
    for (int i = 0; i < p->n; i++)
        len += p->v[i].kind == LMF_CHAT_PIECE_TEXT  ? strlen(p->v[i].text)
               : p->v[i].kind == LMF_CHAT_PIECE_BOS ? lb
                                                    : le;
    char *s = malloc(len + 1), *w = s;
    if (!s) return lmf_errorf(LMF_ENOMEM, "template: out of memory for a %zu-byte string", len);
    for (int i = 0; i < p->n; i++) {
        const char *src = p->v[i].kind == LMF_CHAT_PIECE_TEXT  ? p->v[i].text
                          : p->v[i].kind == LMF_CHAT_PIECE_BOS ? (bos ? bos : "")
                                                               : (eos ? eos : "");
        size_t k = strlen(src);
        memcpy(w, src, k);
        w += k;
    }
    *w = 0;
    *out = s;
    return 0;
}

int lmf_turns_to_string(const lmf_turn *turns, int n_turns, const char *bos, const char *eos,
                        char **out) {
    char *acc = dup_str("");
    if (!acc) return lmf_errorf(LMF_ENOMEM, "template: out of memory");
    for (int i = 0; i < 2 * n_turns; i++) {
        const lmf_chat_pieces *p = i % 2 ? &turns[i / 2].response : &turns[i / 2].prompt;
        char *part = NULL;
        int rc = lmf_chat_pieces_to_string(p, bos, eos, &part);
        if (rc) {
            free(acc);
            return rc;
        }
        size_t la = strlen(acc), lp = strlen(part);
        char *grown = realloc(acc, la + lp + 1);
        if (!grown) {
            free(acc);
            free(part);
            return lmf_errorf(LMF_ENOMEM, "template: out of memory");
        }
        memcpy(grown + la, part, lp + 1);
        free(part);
        acc = grown;
    }
    *out = acc;
    return 0;
}

/* ---- message validation ---- */

/* Checks roles and order as LLaMA-Factory's sharegpt converter enforces them: optional leading
 * system, then user at even and assistant at odd positions. final_role is the role the last
 * message must have. *first gets the index of the first non-system message and *sys the
 * effective system text (leading system message, else the argument, else the default). */
static int check_messages(const lmf_template *t, const lmf_message *msgs, int n, const char *system,
                          const char *final_role, int *first, const char **sys) {
    if (!t) return lmf_errorf(LMF_EINVAL, "template: NULL template");
    if (n < 0 || (n > 0 && !msgs))
        return lmf_errorf(LMF_EINVAL, "template %s: no messages", t->name);
    int f = 0;
    if (n > 0 && msgs[0].role && strcmp(msgs[0].role, "system") == 0) {
        if (!msgs[0].content)
            return lmf_errorf(LMF_EINVAL, "template %s: messages[0]: content is NULL", t->name);
        system = msgs[0].content;
        f = 1;
    }
    if (n - f <= 0)
        return lmf_errorf(LMF_EINVAL, "template %s: messages: no user message", t->name);
    for (int i = f; i < n; i++) {
        const char *role = msgs[i].role;
        const char *want = (i - f) % 2 ? "assistant" : "user";
        if (!role)
            return lmf_errorf(LMF_EINVAL, "template %s: messages[%d]: role is NULL", t->name, i);
        if (strcmp(role, "observation") == 0 || strcmp(role, "function") == 0)
            return lmf_errorf(
                LMF_EUNSUPPORTED,
                "template %s: messages[%d]: role \"%s\": tool calls not supported yet", t->name, i,
                role);
        if (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "system"))
            return lmf_errorf(LMF_EINVAL, "template %s: messages[%d]: unknown role \"%s\"", t->name,
                              i, role);
        if (strcmp(role, want))
            return lmf_errorf(
                LMF_EINVAL,
                "template %s: messages[%d]: role \"%s\" out of order, expected \"%s\" "
                "(user/assistant must alternate after an optional leading system)",
                t->name, i, role, want);
        if (!msgs[i].content)
            return lmf_errorf(LMF_EINVAL, "template %s: messages[%d]: content is NULL", t->name, i);
    }
    if (strcmp(msgs[n - 1].role, final_role))
        return lmf_errorf(LMF_EINVAL, "template %s: messages[%d]: last message must be %s, got %s",
                          t->name, n - 1, final_role, msgs[n - 1].role);
    *first = f;
    *sys = (system && *system) ? system : lmf_template_default_system(t);
    return 0;
}

/* ---- thoughts (ReasoningTemplate) ---- */

/* remove_thought: deletes every non-greedy "<think>\n...\n</think>\n\n" span, then strips
 * leading newlines. Returns a new string. */
static char *remove_thought(const char *s) {
    size_t n = strlen(s), lo = strlen(THINK_OPEN), lc = strlen(THINK_CLOSE);
    char *r = malloc(n + 1), *w = r;
    if (!r) return NULL;
    const char *p = s;
    for (;;) {
        const char *o = strstr(p, THINK_OPEN);
        const char *c = o ? strstr(o + lo, THINK_CLOSE) : NULL;
        /* No close after the first open means no later open has one either. */
        if (!c) break;
        memcpy(w, p, (size_t)(o - p));
        w += o - p;
        p = c + lc;
    }
    size_t rest = strlen(p);
    memcpy(w, p, rest + 1);
    size_t skip = strspn(r, "\n");
    memmove(r, r + skip, strlen(r + skip) + 1);
    return r;
}

/* thought_words[i].strip() not in content, for both words. */
static int lacks_thought(const char *content) {
    return !strstr(content, "<think>") && !strstr(content, "</think>");
}

/* ---- encoding (Template._encode) ---- */

/* Encodes msgs[0..n) (no system message) into one piece list per message. contents[i]
 * overrides msgs[i].content (after thought removal). */
static int encode_messages(const lmf_template *t, const lmf_message *msgs, char *const *contents,
                           int n, const char *system, lmf_chat_pieces *enc) {
    for (int i = 0; i < n; i++) {
        lmf_chat_pieces *out = &enc[i];
        const char *content = contents[i] ? contents[i] : msgs[i].content;
        char *fused = NULL;
        int rc = 0;
        if (i == 0) {
            if ((rc = apply_slots(out, t->prefix, ""))) return rc;
            if (*system && !t->fuse_system && (rc = apply_slots(out, t->system, system))) return rc;
            if (*system && t->fuse_system) {
                /* Llama2Template: system_text + user content form one element. */
                char *sys_text = fill(t->system[0].text, system);
                size_t a = sys_text ? strlen(sys_text) : 0, b = strlen(content);
                fused = sys_text ? malloc(a + b + 1) : NULL;
                if (fused) {
                    memcpy(fused, sys_text, a);
                    memcpy(fused + a, content, b + 1);
                    content = fused;
                }
                free(sys_text);
                if (!fused) return lmf_errorf(LMF_ENOMEM, "template %s: out of memory", t->name);
            }
        }
        rc = apply_slots(out, i % 2 ? t->assistant : t->user, content);
        free(fused);
        if (rc) return rc;
    }
    return 0;
}

static const lmf_template_opts DEFAULT_OPTS = {.enable_thinking = 1};

/* Copies of the assistant contents with thoughts removed where remove(i) says so; NULL
 * entries keep the original. */
static int strip_thoughts(const lmf_template *t, const lmf_message *m, int n, int upto,
                          char **contents) {
    for (int i = 1; i < upto && i < n; i += 2) {
        contents[i] = remove_thought(m[i].content);
        if (!contents[i]) return lmf_errorf(LMF_ENOMEM, "template %s: out of memory", t->name);
    }
    return 0;
}

/* Frees the per-message scratch of the render functions: the message texts, and the encoded
 * pieces too unless they were handed on (pieces_owned 0). */
static void free_scratch(char **contents, lmf_chat_pieces *enc, int nm, int pieces_owned) {
    for (int i = 0; contents && i < nm; i++) free(contents[i]);
    for (int i = 0; enc && pieces_owned && i < nm; i++) lmf_chat_pieces_free(&enc[i]);
    free(contents);
    free(enc);
}

int lmf_template_encode_multiturn(const lmf_template *t, const lmf_message *msgs, int n,
                                  const char *system, const lmf_template_opts *opts,
                                  lmf_turn **turns, int *n_turns) {
    int first = 0, rc;
    const char *sys = NULL;
    *turns = NULL;
    *n_turns = 0;
    if ((rc = check_messages(t, msgs, n, system, "assistant", &first, &sys))) return rc;
    if (!opts) opts = &DEFAULT_OPTS;
    const lmf_message *m = msgs + first;
    int nm = n - first, nt = nm / 2;
    char **contents = calloc((size_t)nm, sizeof *contents);
    lmf_chat_pieces *enc = calloc((size_t)nm, sizeof *enc);
    lmf_turn *out = calloc((size_t)nt, sizeof *out);
    if (!contents || !enc || !out) {
        rc = lmf_errorf(LMF_ENOMEM, "template %s: out of memory for %d messages", t->name, nm);
        goto fail;
    }
    if (t->reasoning && !opts->enable_thinking && (rc = strip_thoughts(t, m, nm, nm, contents)))
        goto fail;
    if ((rc = encode_messages(t, m, contents, nm, sys, enc))) goto fail;
    for (int k = 0; k < nt; k++) {
        lmf_turn *tu = &out[k];
        if ((rc = append_pieces(&tu->prompt, &enc[2 * k]))) goto fail;
        if ((rc = append_pieces(&tu->response, &enc[2 * k + 1]))) goto fail;
        const char *resp = contents[2 * k + 1] ? contents[2 * k + 1] : m[2 * k + 1].content;
        if (t->reasoning && lacks_thought(resp)) {
            if (opts->enable_thinking)
                rc = prepend_text(&tu->response, THINK_EMPTY);
            else
                rc = push_text_owned(&tu->prompt, dup_str(THINK_EMPTY));
            if (rc) goto fail;
        }
    }
    free_scratch(contents, enc, nm, 0);
    *turns = out;
    *n_turns = nt;
    return 0;
fail:
    free_scratch(contents, enc, nm, 1);
    lmf_turns_free(out, nt);
    return rc;
}

int lmf_template_render_generation_prompt(const lmf_template *t, const lmf_message *msgs, int n,
                                          const char *system, const lmf_template_opts *opts,
                                          lmf_chat_pieces *out) {
    int first = 0, rc;
    const char *sys = NULL;
    memset(out, 0, sizeof *out);
    if ((rc = check_messages(t, msgs, n, system, "user", &first, &sys))) return rc;
    if (!opts) opts = &DEFAULT_OPTS;
    const lmf_message *m = msgs + first;
    int nm = n - first;
    char **contents = calloc((size_t)nm, sizeof *contents);
    lmf_chat_pieces *enc = calloc((size_t)nm, sizeof *enc);
    if (!contents || !enc) {
        rc = lmf_errorf(LMF_ENOMEM, "template %s: out of memory for %d messages", t->name, nm);
        goto fail;
    }
    /* ReasoningTemplate.encode_oneturn drops the thoughts of every earlier assistant message
     * and adds no empty block to them; only the open final turn gets one (prompt side) when
     * thinking is disabled. */
    if (t->reasoning && (rc = strip_thoughts(t, m, nm, nm, contents))) goto fail;
    if ((rc = encode_messages(t, m, contents, nm, sys, enc))) goto fail;
    for (int i = 0; i < nm; i++)
        if ((rc = append_pieces(out, &enc[i]))) goto fail;
    if (t->reasoning && !opts->enable_thinking && (rc = push_text_owned(out, dup_str(THINK_EMPTY))))
        goto fail;
    free_scratch(contents, enc, nm, 0);
    return 0;
fail:
    free_scratch(contents, enc, nm, 1);
    lmf_chat_pieces_free(out);
    return rc;
}
