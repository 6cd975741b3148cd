/* OpenAI request parsing and validation (src/serve/openai_request.c), response rendering
 * (openai_render.c) and stop-string matching (stop_match.c), against hand-written requests and
 * expected values: every bad field is refused with status 400 and its name in param. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "serve/openai_render.h"
#include "serve/openai_request.h"
#include "serve/stop_match.h"
#include "test.h"

static lmf_oai_defaults defaults(void) {
    lmf_oai_defaults d;
    lmf_sampling_defaults(&d.sampling);
    d.sampling.temperature = 0.7f;
    return d;
}

static int parse(const char *body, lmf_oai_kind kind, lmf_oai_request *r, lmf_oai_error *e) {
    lmf_oai_defaults d = defaults();
    return lmf_oai_parse(body, strlen(body), kind, &d, r, e);
}

/* The request is refused with status 400 naming param. */
static void refused(const char *body, lmf_oai_kind kind, const char *param) {
    lmf_oai_request r;
    lmf_oai_error e = {0};
    int rc = parse(body, kind, &r, &e);
    CHECK_MSG(rc < 0, "accepted: %s", body);
    if (rc >= 0) {
        lmf_oai_request_free(&r);
        return;
    }
    CHECK_MSG(e.status == 400, "%s: status %d", body, e.status);
    CHECK_MSG(!strcmp(e.param, param), "%s: param \"%s\", expected \"%s\" (%s)", body, e.param,
              param, e.message);
    CHECK_MSG(e.message[0] != 0, "%s: no message", body);
}

static void test_chat_ok(void) {
    lmf_oai_request r;
    lmf_oai_error e;
    const char *body =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
        "\"text\":\"b\"}]}],\"max_completion_tokens\":7,\"temperature\":0,\"top_p\":0.5,"
        "\"top_k\":-1,\"seed\":3,\"stop\":[\"x\",\"yz\"],\"n\":2,\"logprobs\":true,"
        "\"top_logprobs\":3,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
        "\"user\":\"ignored\"}";
    CHECK(parse(body, LMF_OAI_CHAT, &r, &e) == 0);
    CHECK(!strcmp(r.model, "m"));
    CHECK(r.n_messages == 2 && !strcmp(r.messages[0].role, "system") &&
          !strcmp(r.messages[1].content, "ab"));
    CHECK(r.max_tokens == 7 && r.sampling.temperature == 0 && r.sampling.top_p == 0.5f);
    CHECK(r.sampling.top_k == 0 && r.has_seed && r.seed == 3);
    CHECK(r.n_stop == 2 && !strcmp(r.stop[1], "yz"));
    CHECK(r.n == 2 && r.logprobs && r.top_logprobs == 3 && r.sampling.top_logprobs == 3);
    CHECK(r.stream && r.include_usage);
    lmf_oai_request_free(&r);
    /* absent fields take the server's defaults */
    CHECK(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", LMF_OAI_CHAT, &r, &e) ==
          0);
    CHECK(r.model == NULL && r.max_tokens == 0 && r.n == 1 && !r.stream);
    CHECK_NEAR(r.sampling.temperature, 0.7, 1e-6);
    lmf_oai_request_free(&r);
}

static void test_completion_ok(void) {
    lmf_oai_request r;
    lmf_oai_error e;
    CHECK(parse("{\"prompt\":[1,2,3],\"logprobs\":2,\"max_tokens\":4,\"stop\":\"\\n\"}",
                LMF_OAI_COMPLETION, &r, &e) == 0);
    CHECK(r.n_prompt_ids == 3 && r.prompt_ids[2] == 3 && r.logprobs && r.top_logprobs == 2);
    CHECK(r.n_stop == 1 && !strcmp(r.stop[0], "\n"));
    lmf_oai_request_free(&r);
    CHECK(parse("{\"prompt\":[\"one\"]}", LMF_OAI_COMPLETION, &r, &e) == 0);
    CHECK(r.prompt && !strcmp(r.prompt, "one") && !r.logprobs);
    lmf_oai_request_free(&r);
    CHECK(parse("{\"prompt\":[[5,6]]}", LMF_OAI_COMPLETION, &r, &e) == 0);
    CHECK(r.n_prompt_ids == 2 && r.prompt_ids[0] == 5);
    lmf_oai_request_free(&r);
}

static void test_refusals(void) {
    lmf_oai_request r;
    lmf_oai_error e;
    CHECK(parse("{\"messages\": [", LMF_OAI_CHAT, &r, &e) < 0 && e.status == 400 && !e.param[0]);
    CHECK(strstr(e.message, "JSON") != NULL);
    CHECK(parse("[1,2]", LMF_OAI_CHAT, &r, &e) < 0 && e.status == 400);
    CHECK(parse("", LMF_OAI_CHAT, &r, &e) < 0 && e.status == 400);
    const char *U = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    char b[512];
#define REFUSED(kind, param, ...)                                                                  \
    do {                                                                                           \
        snprintf(b, sizeof b, __VA_ARGS__);                                                        \
        refused(b, kind, param);                                                                   \
    } while (0)
    REFUSED(LMF_OAI_CHAT, "messages", "{}");
    REFUSED(LMF_OAI_CHAT, "messages", "{\"messages\":\"hi\"}");
    REFUSED(LMF_OAI_CHAT, "messages", "{\"messages\":[]}");
    REFUSED(LMF_OAI_CHAT, "messages[0]", "{\"messages\":[1]}");
    REFUSED(LMF_OAI_CHAT, "messages[0].role", "{\"messages\":[{\"content\":\"x\"}]}");
    REFUSED(LMF_OAI_CHAT, "messages[0].role",
            "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}");
    REFUSED(LMF_OAI_CHAT, "messages[0].content", "{\"messages\":[{\"role\":\"user\"}]}");
    REFUSED(LMF_OAI_CHAT, "messages[0].content",
            "{\"messages\":[{\"role\":\"user\",\"content\":5}]}");
    REFUSED(LMF_OAI_CHAT, "messages[0].content",
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}");
    REFUSED(LMF_OAI_CHAT, "model", "{\"model\":5,%s}", U);
    REFUSED(LMF_OAI_CHAT, "max_tokens", "{\"max_tokens\":-1,%s}", U);
    REFUSED(LMF_OAI_CHAT, "max_tokens", "{\"max_tokens\":0,%s}", U);
    REFUSED(LMF_OAI_CHAT, "max_tokens", "{\"max_tokens\":\"10\",%s}", U);
    REFUSED(LMF_OAI_CHAT, "max_tokens", "{\"max_tokens\":1.5,%s}", U);
    REFUSED(LMF_OAI_CHAT, "max_completion_tokens", "{\"max_completion_tokens\":-3,%s}", U);
    REFUSED(LMF_OAI_CHAT, "temperature", "{\"temperature\":\"hot\",%s}", U);
    REFUSED(LMF_OAI_CHAT, "temperature", "{\"temperature\":2.5,%s}", U);
    REFUSED(LMF_OAI_CHAT, "temperature", "{\"temperature\":true,%s}", U);
    REFUSED(LMF_OAI_CHAT, "top_p", "{\"top_p\":0,%s}", U);
    REFUSED(LMF_OAI_CHAT, "top_p", "{\"top_p\":1.5,%s}", U);
    REFUSED(LMF_OAI_CHAT, "top_k", "{\"top_k\":-2,%s}", U);
    REFUSED(LMF_OAI_CHAT, "min_p", "{\"min_p\":1,%s}", U);
    REFUSED(LMF_OAI_CHAT, "presence_penalty", "{\"presence_penalty\":3,%s}", U);
    REFUSED(LMF_OAI_CHAT, "frequency_penalty", "{\"frequency_penalty\":-2.5,%s}", U);
    REFUSED(LMF_OAI_CHAT, "repetition_penalty", "{\"repetition_penalty\":0,%s}", U);
    REFUSED(LMF_OAI_CHAT, "seed", "{\"seed\":\"1\",%s}", U);
    REFUSED(LMF_OAI_CHAT, "n", "{\"n\":0,%s}", U);
    REFUSED(LMF_OAI_CHAT, "n", "{\"n\":100,%s}", U);
    REFUSED(LMF_OAI_CHAT, "stop", "{\"stop\":5,%s}", U);
    REFUSED(LMF_OAI_CHAT, "stop[1]", "{\"stop\":[\"a\",2],%s}", U);
    REFUSED(LMF_OAI_CHAT, "logprobs", "{\"logprobs\":3,%s}", U);
    REFUSED(LMF_OAI_CHAT, "top_logprobs", "{\"top_logprobs\":2,%s}", U);
    REFUSED(LMF_OAI_CHAT, "top_logprobs", "{\"logprobs\":true,\"top_logprobs\":21,%s}", U);
    REFUSED(LMF_OAI_CHAT, "stream", "{\"stream\":\"yes\",%s}", U);
    REFUSED(LMF_OAI_CHAT, "stream_options", "{\"stream_options\":{\"include_usage\":true},%s}", U);
    REFUSED(LMF_OAI_CHAT, "stream_options.include_usage",
            "{\"stream\":true,\"stream_options\":{\"include_usage\":1},%s}", U);
    REFUSED(LMF_OAI_COMPLETION, "prompt", "{}");
    REFUSED(LMF_OAI_COMPLETION, "prompt", "{\"prompt\":5}");
    REFUSED(LMF_OAI_COMPLETION, "prompt", "{\"prompt\":[]}");
    REFUSED(LMF_OAI_COMPLETION, "prompt", "{\"prompt\":[\"a\",\"b\"]}");
    REFUSED(LMF_OAI_COMPLETION, "prompt[1]", "{\"prompt\":[1,-2]}");
    REFUSED(LMF_OAI_COMPLETION, "prompt[0]", "{\"prompt\":[1.5]}");
    REFUSED(LMF_OAI_COMPLETION, "logprobs", "{\"prompt\":\"a\",\"logprobs\":true}");
    REFUSED(LMF_OAI_COMPLETION, "logprobs", "{\"prompt\":\"a\",\"logprobs\":6}");
    REFUSED(LMF_OAI_COMPLETION, "echo", "{\"prompt\":\"a\",\"echo\":true}");
    REFUSED(LMF_OAI_COMPLETION, "max_tokens", "{\"prompt\":\"a\",\"max_tokens\":-5}");
#undef REFUSED
}

static void test_tokenize(void) {
    lmf_oai_tokenize t;
    lmf_oai_error e;
    const char *b = "{\"prompt\":\"hi\",\"add_special_tokens\":false}";
    CHECK(lmf_oai_parse_tokenize(b, strlen(b), &t, &e) == 0 && !strcmp(t.prompt, "hi") &&
          !t.add_special);
    lmf_oai_tokenize_free(&t);
    b = "{\"prompt\":3}";
    CHECK(lmf_oai_parse_tokenize(b, strlen(b), &t, &e) < 0 && !strcmp(e.param, "prompt"));
    int32_t *ids;
    int n;
    b = "{\"tokens\":[4,5]}";
    CHECK(lmf_oai_parse_detokenize(b, strlen(b), &ids, &n, &e) == 0 && n == 2 && ids[1] == 5);
    free(ids);
    b = "{\"tokens\":[4,\"x\"]}";
    CHECK(lmf_oai_parse_detokenize(b, strlen(b), &ids, &n, &e) < 0 &&
          !strcmp(e.param, "tokens[1]"));
}

static void test_error_json(void) {
    lmf_oai_error e;
    lmf_oai_error_set(&e, 404, "invalid_request_error", "model_not_found", "model", "no %s", "x");
    char *s = lmf_oai_error_json(&e);
    cJSON *o = cJSON_Parse(s), *err = cJSON_GetObjectItem(o, "error");
    CHECK(err && !strcmp(cJSON_GetObjectItem(err, "message")->valuestring, "no x"));
    CHECK(!strcmp(cJSON_GetObjectItem(err, "type")->valuestring, "invalid_request_error"));
    CHECK(!strcmp(cJSON_GetObjectItem(err, "param")->valuestring, "model"));
    CHECK(!strcmp(cJSON_GetObjectItem(err, "code")->valuestring, "model_not_found"));
    cJSON_Delete(o);
    free(s);
    lmf_oai_error_set(&e, 400, "invalid_request_error", NULL, NULL, "bad");
    s = lmf_oai_error_json(&e);
    o = cJSON_Parse(s);
    err = cJSON_GetObjectItem(o, "error");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(err, "param")) &&
          cJSON_IsNull(cJSON_GetObjectItem(err, "code")));
    cJSON_Delete(o);
    free(s);
}

static void test_render(void) {
    lmf_oai_choice_out c = {.index = 1, .text = "hi", .first = 1};
    char *ev = lmf_oai_render_chunk(LMF_OAI_CHAT, "id1", 5, "m", &c, 1, NULL);
    CHECK(!strncmp(ev, "data: {", 7) && !strcmp(ev + strlen(ev) - 2, "\n\n"));
    cJSON *o = cJSON_Parse(ev + 6);
    CHECK(!strcmp(cJSON_GetObjectItem(o, "object")->valuestring, "chat.completion.chunk"));
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    cJSON *delta = cJSON_GetObjectItem(ch, "delta");
    CHECK(!strcmp(cJSON_GetObjectItem(delta, "role")->valuestring, "assistant"));
    CHECK(!strcmp(cJSON_GetObjectItem(delta, "content")->valuestring, "hi"));
    CHECK(cJSON_GetObjectItem(ch, "index")->valueint == 1);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(ch, "finish_reason")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "usage")));
    cJSON_Delete(o);
    free(ev);
    lmf_oai_usage u = {3, 4};
    ev = lmf_oai_render_chunk(LMF_OAI_CHAT, "id1", 5, "m", NULL, 1, &u);
    o = cJSON_Parse(ev + 6);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "choices")) == 0);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "total_tokens")->valueint == 7);
    cJSON_Delete(o);
    free(ev);
    lmf_oai_choice_out w = {.index = 0, .text = "done", .finish_reason = "stop"};
    char *s = lmf_oai_render_response(LMF_OAI_COMPLETION, "c", 5, "m", &w, 1, &u);
    o = cJSON_Parse(s);
    CHECK(!strcmp(cJSON_GetObjectItem(o, "object")->valuestring, "text_completion"));
    ch = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    CHECK(!strcmp(cJSON_GetObjectItem(ch, "text")->valuestring, "done"));
    CHECK(!strcmp(cJSON_GetObjectItem(ch, "finish_reason")->valuestring, "stop"));
    cJSON_Delete(o);
    free(s);
}

static void test_stop_match(void) {
    char *stops[] = {"END", "\n\n"};
    const char *t = "abc EN";
    CHECK(lmf_stop_find(t, strlen(t), 0, stops, 2) == -1);
    CHECK(lmf_stop_safe_len(t, strlen(t), stops, 2) == 4); /* "EN" may become END */
    t = "abc END more";
    CHECK(lmf_stop_find(t, strlen(t), 6, stops, 2) == 4); /* a match spanning the old/new join */
    t = "x\n\ny END";
    CHECK(lmf_stop_find(t, strlen(t), 0, stops, 2) == 1); /* the earliest of several */
    t = "abc\n";
    CHECK(lmf_stop_safe_len(t, strlen(t), stops, 2) == 3);
    CHECK(lmf_stop_safe_len("abc", 3, stops, 0) == 3);
}

int main(void) {
    test_chat_ok();
    test_completion_ok();
    test_refusals();
    test_tokenize();
    test_error_json();
    test_render();
    test_stop_match();
    return test_summary("test_openai_json");
}
