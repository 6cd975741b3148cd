/* Dataset loading: LLaMA-Factory's own demo datasets through its dataset_info.json (counts and
 * contents computed independently with Python's json module), then small hand-written files
 * for each conversion rule, skip, error message and the seeded train/eval split. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmforge/core.h"
#include "lmforge/dataset.h"
#include "test.h"

static char tmpdir[256];

static void write_file(const char *name, const char *text) {
    char *p = lmf_path_join(tmpdir, name);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    CHECK_MSG(f != NULL, "cannot write %s", p);
    free(p);
}

static int has(const char *hay, const char *needle) {
    return strstr(hay, needle) != NULL;
}

/* Loads names from dir; returns the code and leaves the records in train/eval. */
static int load(const char *dir, const char *names, const char *stage, int64_t max_samples,
                double val_size, uint64_t seed, lmf_record_set *train, lmf_record_set *eval) {
    lmf_dataset_options o = {.dataset_dir = dir,
                             .dataset = names,
                             .stage = stage,
                             .max_samples = max_samples,
                             .val_size = val_size,
                             .seed = seed};
    lmf_error_clear();
    return lmf_dataset_load(&o, train, eval);
}

static int msg_is(const lmf_record *r, int i, const char *role, const char *content) {
    return i < r->n_msgs && !strcmp(r->msgs[i].role, role) && !strcmp(r->msgs[i].content, content);
}

/* ---- part 1: LLaMA-Factory's demo data ---- */

/* Expected numbers come from /usr/bin/python3's json module over the files in
 * ../shared/data/llamafactory (SOURCES.md: commit ff6d4d12), e.g.
 *   len(json.load(open("identity.json"))) == 91; alpaca_en_demo: 999 records whose "output"
 *   strings total 701777 UTF-8 bytes; glaive_toolcall_en_demo: 300 records, 1914 messages, none
 *   starting with a system turn, all passing LLaMA-Factory's role checks; c4_demo.jsonl: 300
 *   non-blank lines whose "text" strings total 740630 bytes, the first 1176 bytes. */
static void test_demo_data(void) {
    char dir[1024];
    const char *env = getenv("LMF_SHARED_DATA");
    if (env) {
        snprintf(dir, sizeof dir, "%s/llamafactory", env);
    } else {
        /* __FILE__ is <src>/tests/data/test_dataset.c; the data sits in <src>/../shared. */
        snprintf(dir, sizeof dir, "%s", __FILE__);
        char *cut = strstr(dir, "/tests/data/test_dataset.c");
        if (cut) *cut = 0;
        strncat(dir, "/../shared/data/llamafactory", sizeof dir - strlen(dir) - 1);
    }
    char info[1100];
    snprintf(info, sizeof info, "%s/dataset_info.json", dir);
    if (!lmf_path_exists(info)) {
        printf("SKIP: ../shared/data not present (%s)\n", info);
        return;
    }
    lmf_record_set tr, ev;
    int rc = load(dir, "identity", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(tr.n == 91 && ev.n == 0);
    if (tr.n == 91) {
        CHECK(tr.items[0].n_msgs == 2 && msg_is(&tr.items[0], 0, "user", "hi"));
        CHECK(msg_is(&tr.items[0], 1, "assistant",
                     "Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I "
                     "assist you today?"));
        CHECK(!strcmp(tr.items[0].system, "") && !strcmp(tr.items[0].tools, ""));
        CHECK(!strcmp(tr.items[90].dataset, "identity") && tr.items[90].index == 90);
    }
    lmf_record_set_free(&tr);

    rc = load(dir, "alpaca_en_demo", NULL, 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(tr.n == 999);
    if (tr.n == 999) {
        size_t bytes = 0;
        for (int64_t i = 0; i < tr.n; i++) bytes += strlen(tr.items[i].msgs[1].content);
        CHECK_MSG(bytes == 701777, "%zu", bytes);
        CHECK(msg_is(&tr.items[5], 0, "user",
                     "Given the parameters of a triangle, find out its perimeter.\nSide 1 = 4\n"
                     "Side 2 = 6\nSide 3 = 8"));
        CHECK(strlen(tr.items[5].msgs[1].content) == 277);
        CHECK(msg_is(&tr.items[998], 1, "assistant", "No one can stop time from moving forward."));
    }
    lmf_record_set_free(&tr);

    rc = load(dir, "glaive_toolcall_en_demo", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(tr.n == 300);
    if (tr.n == 300) {
        int64_t msgs = 0;
        for (int64_t i = 0; i < tr.n; i++) msgs += tr.items[i].n_msgs;
        CHECK_MSG(msgs == 1914, "%lld", (long long)msgs);
        const lmf_record *r = &tr.items[0];
        static const char *roles[] = {"user",        "assistant", "user", "function",
                                      "observation", "assistant", "user", "assistant"};
        CHECK(r->n_msgs == 8);
        for (int i = 0; i < 8 && i < r->n_msgs; i++) CHECK(!strcmp(r->msgs[i].role, roles[i]));
        CHECK(msg_is(r, 2, "user", "I have chicken, bell peppers, and rice."));
        CHECK(strlen(r->tools) == 276 && !strncmp(r->tools, "[{\"name\": \"search_recipes\"", 26));
        CHECK(!strcmp(r->system, ""));
    }
    lmf_record_set_free(&tr);

    rc = load(dir, "c4_demo", "pt", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(tr.n == 300);
    if (tr.n == 300) {
        size_t bytes = 0;
        for (int64_t i = 0; i < tr.n; i++) bytes += strlen(tr.items[i].text);
        CHECK_MSG(bytes == 740630, "%zu", bytes);
        CHECK(strlen(tr.items[0].text) == 1176 && tr.items[0].n_msgs == 0);
        CHECK(!strncmp(tr.items[0].text, "Don\xe2\x80\x99t think you need all the bells", 34));
    }
    lmf_record_set_free(&tr);

    rc = load(dir, "dpo_en_demo", "sft", 0, 0, 0, &tr, &ev);
    CHECK(rc == LMF_EUNSUPPORTED &&
          has(lmf_last_error(), "ranking datasets are not supported yet") &&
          has(lmf_last_error(), "dpo_en_demo"));
    rc = load(dir, "alpaca_zh_demo", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_ENOENT && has(lmf_last_error(), "file not found") &&
                  has(lmf_last_error(), "alpaca_zh_demo") &&
                  has(lmf_last_error(), "llamafactory/alpaca_zh_demo.json"),
              "%s", lmf_last_error());
    rc = load(dir, "alpaca_en", "sft", 0, 0, 0, &tr, &ev);
    CHECK(rc == LMF_EUNSUPPORTED &&
          has(lmf_last_error(), "only local file_name datasets are supported") &&
          has(lmf_last_error(), "\"alpaca_en\""));
    rc = load(dir, "identity,alpaca_en_demo", "sft", 10, 0, 0, &tr, &ev);
    CHECK(rc == 0 && tr.n == 20 && !strcmp(tr.items[10].dataset, "alpaca_en_demo"));
    lmf_record_set_free(&tr);

    lmf_dataset_info di;
    rc = lmf_dataset_info_load(dir, &di);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    const lmf_dataset_attr *a = rc ? NULL : lmf_dataset_info_find(&di, "glaive_toolcall_en_demo");
    CHECK(a && a->formatting == LMF_FORMAT_SHAREGPT && !strcmp(a->messages, "conversations") &&
          !strcmp(a->role_tag, "from") && !strcmp(a->tools, "tools"));
    if (!rc) lmf_dataset_info_free(&di);
}

/* ---- part 2: hand-written files ---- */

static const char *info_json =
    "{\n"
    " \"hist\": {\"file_name\": \"hist.json\", \"columns\": {\"prompt\": \"instruction\",\n"
    "   \"query\": \"input\", \"response\": \"output\", \"history\": \"history\",\n"
    "   \"system\": \"system\"}},\n"
    " \"share\": {\"file_name\": \"share.json\", \"formatting\": \"sharegpt\",\n"
    "   \"columns\": {\"messages\": \"conversations\", \"tools\": \"tools\", \"system\": "
    "\"sys\"}},\n"
    " \"openai\": {\"file_name\": \"openai.jsonl\", \"formatting\": \"sharegpt\",\n"
    "   \"columns\": {\"messages\": \"messages\"}, \"tags\": {\"role_tag\": \"role\",\n"
    "   \"content_tag\": \"content\", \"user_tag\": \"user\", \"assistant_tag\": \"assistant\",\n"
    "   \"system_tag\": \"system\"}},\n"
    " \"bad_roles\": {\"file_name\": \"bad_roles.json\", \"formatting\": \"sharegpt\"},\n"
    " \"missing\": {\"file_name\": \"missing.json\"},\n"
    " \"missing_msgs\": {\"file_name\": \"openai.jsonl\", \"formatting\": \"sharegpt\"},\n"
    " \"wrong_tags\": {\"file_name\": \"openai.jsonl\", \"formatting\": \"sharegpt\",\n"
    "   \"columns\": {\"messages\": \"messages\"}},\n"
    " \"odd\": {\"file_name\": \"odd.json\", \"formatting\": \"sharegpt\"},\n"
    " \"broken\": {\"file_name\": \"broken.json\"},\n"
    " \"broken_lines\": {\"file_name\": \"broken.jsonl\"},\n"
    " \"empty\": {\"file_name\": \"empty.json\"},\n"
    " \"all_bad\": {\"file_name\": \"bad_roles.json\", \"formatting\": \"sharegpt\",\n"
    "   \"tags\": {\"user_tag\": \"nobody\"}},\n"
    " \"twenty\": {\"file_name\": \"twenty.jsonl\"},\n"
    " \"text\": {\"file_name\": \"text.jsonl\", \"columns\": {\"prompt\": \"text\"}},\n"
    " \"hub\": {\"hf_hub_url\": \"someone/data\"},\n"
    " \"pics\": {\"file_name\": \"hist.json\", \"columns\": {\"images\": \"images\"}},\n"
    " \"folder\": {\"file_name\": \"sub\"},\n"
    " \"kto\": {\"file_name\": \"hist.json\", \"columns\": {\"kto_tag\": \"label\"}},\n"
    " \"listy\": {\"file_name\": \"listy.json\"}\n"
    "}\n";

static void setup_files(void) {
    write_file("dataset_info.json", info_json);
    write_file("hist.json",
               "[{\"instruction\": \"q2\", \"input\": \"ctx\", \"output\": \"a2\",\n"
               "  \"history\": [[\"q0\", \"a0\"], [\"q1\", \"a1\"]], \"system\": \"sys\"},\n"
               " {\"instruction\": \"\", \"input\": \"only input\", \"output\": \"x\", "
               "\"system\": null},\n"
               " {\"instruction\": \"i\", \"input\": \"\", \"output\": \"\"},\n"
               " {\"instruction\": \"last\", \"output\": \"y\", \"history\": null}]\n");
    write_file("share.json",
               "[{\"conversations\": [{\"from\": \"system\", \"value\": \"be brief\"},\n"
               "   {\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": "
               "\"yo\"}],\n"
               "  \"tools\": [{\"name\": \"f\"}], \"sys\": \"ignored: message wins\"},\n"
               " {\"conversations\": [{\"from\": \"human\", \"value\": \"w?\"},\n"
               "   {\"from\": \"function_call\", \"value\": \"{}\"},\n"
               "   {\"from\": \"observation\", \"value\": \"sunny\"},\n"
               "   {\"from\": \"gpt\", \"value\": \"sunny\"}], \"sys\": \"col sys\", "
               "\"tools\": \"[]\"}]\n");
    write_file("openai.jsonl",
               "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", "
               "\"content\": \"U\"}, {\"role\": \"assistant\", \"content\": \"A\"}]}\n"
               "\n"
               "{\"messages\": [{\"role\": \"user\", \"content\": \"U2\"}, {\"role\": "
               "\"assistant\", \"content\": \"A2\"}]}\n");
    write_file(
        "bad_roles.json",
        "[{\"conversations\": [{\"from\": \"human\", \"value\": \"ok\"}, {\"from\": \"gpt\", "
        "\"value\": \"fine\"}]},\n"
        " {\"conversations\": [{\"from\": \"gpt\", \"value\": \"first\"}, {\"from\": "
        "\"human\", \"value\": \"second\"}]},\n"
        " {\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"gpt\", "
        "\"value\": \"b\"}, {\"from\": \"human\", \"value\": \"c\"}]},\n"
        " {\"conversations\": [{\"from\": \"human\", \"value\": \"good\"}, {\"from\": "
        "\"gpt\", \"value\": \"too\"}]},\n"
        " {\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": "
        "\"system\", \"value\": \"b\"}]},\n"
        " {\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"gpt\", "
        "\"value\": \"\"}]}]\n");
    write_file("missing.json", "[{\"instruction\": \"a\", \"output\": \"b\"},\n"
                               " {\"instruction\": \"c\", \"output\": \"d\"},\n"
                               " {\"instruction\": \"e\"}]\n");
    write_file("broken.json", "[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n"
                              "  {\"instruction\": \"c\" \"output\": \"d\"}\n]\n");
    write_file("broken.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n\n"
                               "{\"instruction\": \"c\", \"output\": \"d\"}\n"
                               "{\"instruction\": \"e\", \"output\": }\n");
    write_file("empty.json", "[]\n");
    write_file("odd.json",
               "[{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": "
               "\"gpt\", \"value\": \"b\"}, {\"from\": \"human\", \"value\": \"c\"}]},\n"
               " {\"conversations\": [{\"from\": \"human\", \"value\": \"d\"}, {\"from\": "
               "\"gpt\", \"value\": \"e\"}]}]\n");
    write_file("text.jsonl", "{\"text\": \"one\"}\n{\"text\": \"two\"}\n");
    write_file("listy.json", "[{\"instruction\": \"a\", \"output\": [\"b\", \"c\"]}]\n");
    char buf[4096];
    size_t k = 0;
    for (int i = 0; i < 20; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k,
                              "{\"instruction\": \"q%d\", \"output\": \"a%d\"}\n", i, i);
    write_file("twenty.jsonl", buf);
    char *sub = lmf_path_join(tmpdir, "sub");
    mkdir(sub, 0700);
    free(sub);
}

static void test_alpaca(void) {
    lmf_record_set tr, ev;
    int rc = load(tmpdir, "hist", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(tr.n == 3); /* record 2 has an empty output and is skipped */
    if (tr.n != 3) goto out;
    const lmf_record *r = &tr.items[0];
    CHECK(r->n_msgs == 6 && msg_is(r, 0, "user", "q0") && msg_is(r, 1, "assistant", "a0") &&
          msg_is(r, 2, "user", "q1") && msg_is(r, 3, "assistant", "a1") &&
          msg_is(r, 4, "user", "q2\nctx") && msg_is(r, 5, "assistant", "a2"));
    CHECK(!strcmp(r->system, "sys") && r->index == 0 && !strcmp(r->dataset, "hist"));
    r = &tr.items[1];
    CHECK(r->n_msgs == 2 && msg_is(r, 0, "user", "only input") && !strcmp(r->system, ""));
    r = &tr.items[2];
    CHECK(r->index == 3 && r->n_msgs == 2 && msg_is(r, 0, "user", "last"));
out:
    lmf_record_set_free(&tr);
    rc = load(tmpdir, "hist", "sft", 2, 0, 0, &tr, &ev); /* max_samples */
    CHECK(rc == 0 && tr.n == 2 && tr.items[1].index == 1);
    lmf_record_set_free(&tr);
}

static void test_sharegpt(void) {
    lmf_record_set tr, ev;
    int rc = load(tmpdir, "share", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(tr.n == 2);
    if (tr.n == 2) {
        const lmf_record *r = &tr.items[0];
        CHECK(!strcmp(r->system, "be brief") && r->n_msgs == 2 && msg_is(r, 0, "user", "hi") &&
              msg_is(r, 1, "assistant", "yo"));
        CHECK_MSG(!strcmp(r->tools, "[{\"name\":\"f\"}]"), "%s", r->tools);
        r = &tr.items[1];
        CHECK(!strcmp(r->system, "col sys") && !strcmp(r->tools, "[]") && r->n_msgs == 4 &&
              msg_is(r, 1, "function", "{}") && msg_is(r, 2, "observation", "sunny") &&
              msg_is(r, 3, "assistant", "sunny"));
    }
    lmf_record_set_free(&tr);

    rc = load(tmpdir, "openai", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(tr.n == 2);
    if (tr.n == 2) {
        CHECK(!strcmp(tr.items[0].system, "S") && msg_is(&tr.items[0], 0, "user", "U") &&
              msg_is(&tr.items[0], 1, "assistant", "A"));
        CHECK(tr.items[1].index == 1 && msg_is(&tr.items[1], 1, "assistant", "A2"));
    }
    lmf_record_set_free(&tr);
}

/* Runs the load with stderr sent to a file, so the skip summary line can be checked. */
static int load_capturing(const char *names, int64_t max_samples, lmf_record_set *tr, char *log,
                          size_t log_size) {
    char *path = lmf_path_join(tmpdir, "stderr.txt");
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(path, "w+");
    if (f) dup2(fileno(f), 2);
    lmf_record_set ev;
    int rc = load(tmpdir, names, "sft", max_samples, 0, 0, tr, &ev);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    log[0] = 0;
    if (f) {
        rewind(f);
        size_t n = fread(log, 1, log_size - 1, f);
        log[n] = 0;
        fclose(f);
    }
    free(path);
    return rc;
}

static void test_skips(void) {
    lmf_record_set tr;
    char log[2048];
    int rc = load_capturing("bad_roles", 0, &tr, log, sizeof log);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(tr.n == 2 && tr.items[0].index == 0 && tr.items[1].index == 3);
    CHECK_MSG(has(log, "dataset bad_roles: skipped 4 malformed records (first: index 1: invalid "
                       "role tag \"gpt\""),
              "%s", log);
    lmf_record_set_free(&tr);
    rc = load_capturing("bad_roles", 3, &tr, log, sizeof log); /* truncation comes first */
    CHECK(rc == 0 && tr.n == 1 && has(log, "skipped 2 malformed"));
    lmf_record_set_free(&tr);
    rc = load_capturing("odd", 0, &tr, log, sizeof log);
    CHECK_MSG(rc == 0 && tr.n == 1 &&
                  has(log, "dataset odd: skipped 1 malformed records (first: index 0: invalid "
                           "message count 3"),
              "%s", log);
    lmf_record_set_free(&tr);
}

static void test_errors(void) {
    lmf_record_set tr, ev;
    const char *e = lmf_last_error();
    int rc = load(tmpdir, "missing", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EFORMAT && has(e, "dataset \"missing\"") && has(e, "record 2") &&
                  has(e, "missing column \"output\""),
              "%s", e);
    CHECK(tr.n == 0);
    rc = load(tmpdir, "missing_msgs", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EFORMAT && has(e, "record 0") && has(e, "\"conversations\"") &&
                  has(e, "missing_msgs"),
              "%s", e);
    /* An openai-style file under the default from/value tags: a config error, not a skip. */
    rc = load(tmpdir, "wrong_tags", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EFORMAT && has(e, "\"wrong_tags\": record 0") && has(e, "message 0") &&
                  has(e, "\"from\""),
              "%s", e);
    rc = load(tmpdir, "broken", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EFORMAT && has(e, "broken.json") && has(e, "line 3") && has(e, "column") &&
                  has(e, "\"broken\""),
              "%s", e);
    rc = load(tmpdir, "broken_lines", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EFORMAT && has(e, "broken.jsonl: line 4") && has(e, "\"broken_lines\""),
              "%s", e);
    rc = load(tmpdir, "empty", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EINVAL && has(e, "\"empty\"") && has(e, "no usable records"), "%s", e);
    rc = load(tmpdir, "all_bad", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EINVAL && has(e, "\"all_bad\"") && has(e, "all were malformed"), "%s", e);
    rc = load(tmpdir, "hits", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_ENOENT && has(e, "\"hits\" is not in") && has(e, "nearest names: \"hist\""),
              "%s", e);
    rc = load(tmpdir, "hub", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EUNSUPPORTED && has(e, "only local file_name datasets are supported") &&
                  has(e, "\"hub\""),
              "%s", e);
    rc = load(tmpdir, "pics", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EUNSUPPORTED && has(e, "\"images\"") && has(e, "not supported yet"), "%s",
              e);
    rc = load(tmpdir, "folder", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EUNSUPPORTED && has(e, "directory"), "%s", e);
    rc = load(tmpdir, "kto", "sft", 0, 0, 0, &tr, &ev);
    CHECK(rc == LMF_EUNSUPPORTED && has(e, "\"kto\""));
    rc = load(tmpdir, "listy", "sft", 0, 0, 0, &tr, &ev);
    CHECK_MSG(rc == LMF_EUNSUPPORTED && has(e, "ranking datasets are not supported yet") &&
                  has(e, "record 0"),
              "%s", e);
    rc = load(tmpdir, "hist", "rm", 0, 0, 0, &tr, &ev);
    CHECK(rc == LMF_EUNSUPPORTED && has(e, "stage"));
    lmf_dataset_options o = {
        .dataset_dir = tmpdir, .dataset = "hist", .mix_strategy = "interleave_under"};
    rc = lmf_dataset_load(&o, &tr, &ev);
    CHECK(rc == LMF_EUNSUPPORTED && has(e, "mix_strategy"));
    /* a failure in the second dataset leaves nothing behind (ASan checks for leaks) */
    rc = load(tmpdir, "hist,empty", "sft", 0, 0, 0, &tr, &ev);
    CHECK(rc == LMF_EINVAL && tr.n == 0);
    char nodir[300];
    snprintf(nodir, sizeof nodir, "%s/nope", tmpdir);
    rc = load(nodir, "hist", "sft", 0, 0, 0, &tr, &ev);
    CHECK(rc == LMF_ENOENT && has(e, "dataset_info.json"));
}

static void test_pt_and_concat(void) {
    lmf_record_set tr, ev;
    int rc = load(tmpdir, "text", "pt", 0, 0, 0, &tr, &ev);
    CHECK(rc == 0 && tr.n == 2 && !strcmp(tr.items[1].text, "two") && tr.items[1].n_msgs == 0);
    lmf_record_set_free(&tr);
    rc = load(tmpdir, " openai , hist", "sft", 0, 0, 0, &tr, &ev);
    CHECK(rc == 0 && tr.n == 5);
    if (tr.n == 5) {
        CHECK(!strcmp(tr.items[0].dataset, "openai") && !strcmp(tr.items[1].dataset, "openai"));
        CHECK(!strcmp(tr.items[2].dataset, "hist") && tr.items[2].index == 0 &&
              tr.items[4].index == 3);
    }
    lmf_record_set_free(&tr);
}

/* Indices of a set as one comparable string. */
static void order_of(const lmf_record_set *s, char *out, size_t size) {
    size_t k = 0;
    out[0] = 0;
    for (int64_t i = 0; i < s->n && k < size; i++)
        k += (size_t)snprintf(out + k, size - k, "%lld,", (long long)s->items[i].index);
}

static void test_split(void) {
    lmf_record_set tr, ev, tr2, ev2;
    char a[256], b[256], c[256];
    int rc = load(tmpdir, "twenty", "sft", 0, 0.25, 42, &tr, &ev);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(tr.n == 15 && ev.n == 5);
    int seen[20] = {0};
    for (int64_t i = 0; i < tr.n; i++) seen[tr.items[i].index]++;
    for (int64_t i = 0; i < ev.n; i++) seen[ev.items[i].index]++;
    int all_once = 1;
    for (int i = 0; i < 20; i++) all_once &= seen[i] == 1;
    CHECK(all_once);
    order_of(&ev, a, sizeof a);
    rc = load(tmpdir, "twenty", "sft", 0, 0.25, 42, &tr2, &ev2);
    order_of(&ev2, b, sizeof b);
    CHECK(rc == 0 && !strcmp(a, b));
    order_of(&tr, a, sizeof a);
    order_of(&tr2, b, sizeof b);
    CHECK(!strcmp(a, b));
    lmf_record_set_free(&tr2);
    lmf_record_set_free(&ev2);
    rc = load(tmpdir, "twenty", "sft", 0, 0.25, 43, &tr2, &ev2);
    order_of(&tr2, c, sizeof c);
    CHECK(rc == 0 && strcmp(a, c) != 0);
    lmf_record_set_free(&tr2);
    lmf_record_set_free(&ev2);
    lmf_record_set_free(&tr);
    lmf_record_set_free(&ev);

    rc = load(tmpdir, "twenty", "sft", 0, 3, 7, &tr, &ev); /* a count */
    CHECK(rc == 0 && tr.n == 17 && ev.n == 3);
    lmf_record_set_free(&tr);
    lmf_record_set_free(&ev);
    rc = load(tmpdir, "twenty", "sft", 0, 0.01, 7, &tr, &ev); /* ceil(0.2) == 1 */
    CHECK(rc == 0 && tr.n == 19 && ev.n == 1);
    lmf_record_set_free(&tr);
    lmf_record_set_free(&ev);
    rc = load(tmpdir, "twenty", "sft", 0, 1.5, 7, &tr, &ev);
    CHECK(rc == LMF_EINVAL && has(lmf_last_error(), "val_size"));
    rc = load(tmpdir, "twenty", "sft", 0, 20, 7, &tr, &ev);
    CHECK(rc == LMF_EINVAL && has(lmf_last_error(), "no training records"));
    rc = load(tmpdir, "twenty", "sft", 5, 2, 7, &tr, &ev); /* max_samples before the split */
    CHECK(rc == 0 && tr.n == 3 && ev.n == 2);
    lmf_record_set_free(&tr);
    lmf_record_set_free(&ev);

    /* the shuffle utility: a permutation, reproducible from the seed */
    rc = load(tmpdir, "twenty", "sft", 0, 0, 0, &tr, &ev);
    CHECK(rc == 0 && tr.n == 20);
    order_of(&tr, a, sizeof a);
    CHECK(!strncmp(a, "0,1,2,3,", 8)); /* file order without val_size */
    lmf_record_set_shuffle(&tr, 5);
    order_of(&tr, b, sizeof b);
    lmf_record_set_free(&tr);
    rc = load(tmpdir, "twenty", "sft", 0, 0, 0, &tr, &ev);
    lmf_record_set_shuffle(&tr, 5);
    order_of(&tr, c, sizeof c);
    CHECK(rc == 0 && !strcmp(b, c) && strcmp(a, b) != 0);
    lmf_record_set_free(&tr);
}

/* Removes every file the tests wrote (the temp dir holds nothing else), then the dir. */
static void cleanup(void) {
    DIR *d = opendir(tmpdir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = lmf_path_join(tmpdir, e->d_name);
        if (unlink(p) != 0) rmdir(p);
        free(p);
    }
    if (d) closedir(d);
    rmdir(tmpdir);
}

int main(void) {
    test_demo_data();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmf_test_dataset_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "cannot create a temp dir\n");
        return 1;
    }
    setup_files();
    test_alpaca();
    test_sharegpt();
    test_skips();
    test_errors();
    test_pt_and_concat();
    test_split();
    cleanup();
    return test_summary("test_dataset");
}
