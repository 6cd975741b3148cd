/* safetensors reader/writer: round trips, a file written by Python's safetensors (the reference),
 * sharded folders, malformed files (each must fail with a message naming the file), and
 * truncation / byte-flip fuzzing that must never crash or hand out an out-of-bounds pointer. */
#define _GNU_SOURCE
#include "lmforge/io.h"
#include "test.h"

#include <dirent.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        perror(path);
        exit(1);
    }
    if (n) fwrite(data, 1, n, fp);
    fclose(fp);
}

/* A file with the given header text, a header length word of hlen (the text's length when 0),
 * and data_len bytes of data. */
static void write_st(const char *path, const char *json, uint64_t hlen, size_t data_len) {
    size_t jl = strlen(json);
    uint8_t *buf = calloc(1, 8 + jl + data_len);
    if (!hlen) hlen = jl;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(buf + 8, json, jl);
    for (size_t i = 0; i < data_len; i++) buf[8 + jl + i] = (uint8_t)i;
    write_bytes(path, buf, 8 + jl + data_len);
    free(buf);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    char *text;
    if (lmf_file_read_all(path, &text, n)) return NULL;
    return (uint8_t *)text;
}

/* Every tensor an opened file reports must lie inside its mapping and match its shape. */
static int tensors_in_bounds(const lmf_safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) {
        const lmf_st_tensor *t = &st->tensors[i];
        if (t->file_index < 0 || t->file_index >= st->n_files) return 0;
        const lmf_mapped_file *m = &st->files[t->file_index];
        const uint8_t *p = t->data;
        if (!m->data || p < m->data || p + t->nbytes > m->data + m->size) return 0;
        if ((uint64_t)lmf_st_numel(t) * lmf_dtype_size(t->dtype) != t->nbytes) return 0;
        if (i && strcmp(st->tensors[i - 1].name, t->name) >= 0) return 0;
    }
    return 1;
}

/* Opening must fail with a message naming the file and containing want (when given). */
static void expect_fail(const char *name, const char *json, uint64_t hlen, size_t data_len,
                        const char *want) {
    const char *path = tmp_path(name);
    write_st(path, json, hlen, data_len);
    lmf_safetensors st;
    lmf_error_clear();
    int rc = lmf_safetensors_open(&st, path);
    const char *msg = lmf_last_error();
    CHECK_MSG(rc < 0, "%s opened", name);
    CHECK_MSG(strstr(msg, path) != NULL, "%s: message \"%s\" lacks the path", name, msg);
    CHECK_MSG(!want || strstr(msg, want), "%s: message \"%s\" lacks \"%s\"", name, msg, want);
    CHECK(st.n_tensors == 0 && st.tensors == NULL && st.files == NULL); /* cleaned up */
    unlink(path);
}

static void test_malformed(void) {
    const char *t = "\"t\":{\"dtype\":\"F32\",";
    char json[512];
    lmf_safetensors st;

    const char *p = tmp_path("short.safetensors");
    write_bytes(p, "\x10\x00\x00", 3);
    CHECK(lmf_safetensors_open(&st, p) == LMF_EFORMAT && strstr(lmf_last_error(), p));
    write_bytes(p, "", 0);
    CHECK(lmf_safetensors_open(&st, p) == LMF_EFORMAT && strstr(lmf_last_error(), p));
    unlink(p);
    CHECK(lmf_safetensors_open(&st, p) < 0 && strstr(lmf_last_error(), p)); /* missing file */

    expect_fail("zero_hlen", "", 0, 4, "header length 0");
    expect_fail("huge_hlen", "{}", 1ull << 60, 0, "header length");
    expect_fail("past_end", "{}", 1000, 16, "header length 1000");
    expect_fail("bad_json", "{\"t\": {\"dtype\": \"F32\",", 0, 0, "invalid JSON");
    expect_fail("not_object", "[1, 2, 3]", 0, 0, "expected a JSON object");
    expect_fail("trailing", "{} xyz", 0, 0, "after the JSON");
    expect_fail("entry_not_object", "{\"t\": 5}", 0, 0, "\"t\"");
    snprintf(json, sizeof json, "{\"t\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    expect_fail("unknown_dtype", json, 0, 4, "unknown dtype \"Q7\"");
    snprintf(json, sizeof json, "{\"t\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}");
    expect_fail("i64", json, 0, 8, "unsupported dtype I64");
    write_st(tmp_path("i64"), json, 0, 8);
    CHECK(lmf_safetensors_open(&st, tmp_path("i64")) == LMF_EUNSUPPORTED);
    unlink(tmp_path("i64"));
    expect_fail("f8", "{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1,
                "unsupported dtype F8_E4M3");
    expect_fail("no_dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, "\"dtype\"");
    expect_fail("dtype_num", "{\"t\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
                "\"dtype\"");
    snprintf(json, sizeof json, "{%s\"shape\":[2],\"data_offsets\":[0,4]}}", t);
    expect_fail("wrong_span", json, 0, 8, "need 8");
    snprintf(json, sizeof json, "{%s\"shape\":[4],\"data_offsets\":[0,16]}}", t);
    expect_fail("truncated_data", json, 0, 8, "past the end");
    snprintf(json, sizeof json,
             "{%s\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             t);
    expect_fail("overlap", json, 0, 12, "overlap");
    snprintf(json, sizeof json, "{%s\"shape\":[-1],\"data_offsets\":[0,0]}}", t);
    expect_fail("negative_dim", json, 0, 0, "\"shape\"[0]");
    snprintf(json, sizeof json, "{%s\"shape\":[2, 1.5],\"data_offsets\":[0,0]}}", t);
    expect_fail("fractional_dim", json, 0, 0, "\"shape\"[1]");
    snprintf(json, sizeof json, "{%s\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", t);
    expect_fail("too_many_dims", json, 0, 4, "dims");
    snprintf(json, sizeof json,
             "{%s\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", t);
    expect_fail("numel_overflow", json, 0, 4, "overflows");
    snprintf(json, sizeof json, "{%s\"shape\":[2],\"data_offsets\":[8,0]}}", t);
    expect_fail("begin_gt_end", json, 0, 8, "begin 8 > end 0");
    snprintf(json, sizeof json, "{%s\"shape\":[2]}}", t);
    expect_fail("no_offsets", json, 0, 8, "\"data_offsets\": missing");
    snprintf(json, sizeof json, "{%s\"shape\":[2],\"data_offsets\":[0,8,16]}}", t);
    expect_fail("three_offsets", json, 0, 16, "\"data_offsets\"");
    snprintf(json, sizeof json, "{%s\"shape\":[2],\"data_offsets\":[-8,0]}}", t);
    expect_fail("negative_offset", json, 0, 8, "\"data_offsets\"");
    snprintf(json, sizeof json, "{%s\"shape\":[2],\"data_offsets\":[0,1e300]}}", t);
    expect_fail("huge_offset", json, 0, 8, "\"data_offsets\"");
    snprintf(json, sizeof json, "{%s\"shape\":2,\"data_offsets\":[0,8]}}", t);
    expect_fail("shape_not_array", json, 0, 8, "\"shape\": expected an array");
    snprintf(json, sizeof json,
             "{%s\"shape\":[2],\"data_offsets\":[0,8]},%s\"shape\":[2],"
             "\"data_offsets\":[8,16]}}",
             t, t);
    expect_fail("duplicate", json, 0, 16, "appears twice");
    expect_fail("metadata_value", "{\"__metadata__\":{\"a\":1}}", 0, 0, "__metadata__");
}

/* Bytes of a file written by Python: safetensors.numpy.save({"b": f16 [1.5, -2, 0.25],
 * "a": f32 [[1, 2], [3, -4.5]], "z": f32 zeros (0, 3)}, metadata={"k": "v"}). */
static const char py_header[] =
    "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,"
    "16]},\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[16,16]},\"b\":{\"dtype\":"
    "\"F16\",\"shape\":[3],\"data_offsets\":[16,22]}}      ";
static const uint8_t py_data[22] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40,
                                    0x00, 0x00, 0x40, 0x40, 0x00, 0x00, 0x90, 0xc0,
                                    0x00, 0x3e, 0x00, 0xc0, 0x00, 0x34};

static void test_python_file(void) {
    size_t hl = sizeof py_header - 1, n = 8 + hl + sizeof py_data;
    uint8_t *buf = malloc(n);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, py_header, hl);
    memcpy(buf + 8 + hl, py_data, sizeof py_data);
    const char *path = tmp_path("python.safetensors");
    write_bytes(path, buf, n);
    free(buf);

    lmf_safetensors st;
    CHECK(lmf_safetensors_open(&st, path) == 0);
    CHECK(st.n_tensors == 3 && tensors_in_bounds(&st));
    CHECK(st.metadata_json && !strcmp(st.metadata_json, "{\"k\":\"v\"}"));
    const lmf_st_tensor *a = lmf_safetensors_find(&st, "a"), *b = lmf_safetensors_find(&st, "b"),
                        *z = lmf_safetensors_find(&st, "z");
    CHECK(a && a->dtype == LMF_F32 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 2);
    CHECK(b && b->dtype == LMF_F16 && b->ndim == 1 && lmf_st_numel(b) == 3 && b->nbytes == 6);
    CHECK(z && lmf_st_numel(z) == 0 && z->nbytes == 0 && z->shape[1] == 3);
    CHECK(lmf_safetensors_find(&st, "c") == NULL);
    if (a && b) {
        float fa[4], fb[3];
        lmf_convert_to_f32(fa, a->data, LMF_F32, 4);
        lmf_convert_to_f32(fb, b->data, LMF_F16, 3);
        CHECK(fa[0] == 1 && fa[1] == 2 && fa[2] == 3 && fa[3] == -4.5f);
        CHECK(fb[0] == 1.5f && fb[1] == -2 && fb[2] == 0.25f);
        float a32[4] = {1, 2, 3, -4.5f}, b32[3] = {1.5f, -2, 0.25f};
        uint16_t b16[3];
        lmf_convert_from_f32(b16, LMF_F16, b32, 3);

        /* Our writer must lay the same tensors out in the same data bytes. */
        lmf_st_writer w;
        lmf_st_writer_init(&w);
        int64_t sa[2] = {2, 2}, sb[1] = {3}, sz[2] = {0, 3};
        CHECK(lmf_st_writer_add(&w, "b", LMF_F16, 1, sb, b16) == 0);
        CHECK(lmf_st_writer_add(&w, "a", LMF_F32, 2, sa, a32) == 0);
        CHECK(lmf_st_writer_add(&w, "z", LMF_F32, 2, sz, NULL) == 0);
        CHECK(lmf_st_writer_set_metadata(&w, "k", "v") == 0);
        const char *out = tmp_path("ours.safetensors");
        CHECK(lmf_st_writer_write(&w, out) == 0);
        lmf_st_writer_free(&w);
        size_t on;
        uint8_t *ours = read_bytes(out, &on);
        CHECK(ours && on >= sizeof py_data);
        if (ours && on >= sizeof py_data)
            CHECK(!memcmp(ours + on - sizeof py_data, py_data, sizeof py_data));
        free(ours);
        unlink(out);
    }
    lmf_safetensors_close(&st);
    unlink(path);
}

static void test_round_trip(void) {
    float f32[6] = {0.5f, -1.25f, 3.0f, 1e-8f, -65504.0f, 7.75f},
          src[5] = {1, -0.5f, 3.14159f, 1e4f, -2e-3f};
    uint16_t bf[5], h[4];
    lmf_convert_from_f32(bf, LMF_BF16, src, 5);
    lmf_convert_from_f32(h, LMF_F16, src, 4);
    int64_t s23[2] = {2, 3}, s5[1] = {5}, s22[2] = {2, 2}, s0[3] = {4, 0, 2};
    lmf_st_writer w;
    lmf_st_writer_init(&w);
    CHECK(lmf_st_writer_add(&w, "model.layers.0.w", LMF_F32, 2, s23, f32) == 0);
    CHECK(lmf_st_writer_add(&w, "bf", LMF_BF16, 1, s5, bf) == 0); /* 10 bytes: odd alignment */
    CHECK(lmf_st_writer_add(&w, "half", LMF_F16, 2, s22, h) == 0);
    CHECK(lmf_st_writer_add(&w, "empty", LMF_F32, 3, s0, NULL) == 0);
    CHECK(lmf_st_writer_add(&w, "scalar", LMF_F32, 0, NULL, &f32[2]) == 0);
    CHECK(lmf_st_writer_add(&w, "bf", LMF_F32, 1, s5, src) == LMF_EINVAL); /* duplicate */
    int64_t neg[1] = {-3};
    CHECK(lmf_st_writer_add(&w, "neg", LMF_F32, 1, neg, src) < 0);
    CHECK(lmf_st_writer_add(&w, "__metadata__", LMF_F32, 1, s5, src) < 0);
    CHECK(lmf_st_writer_set_metadata(&w, "step", "41") == 0);
    CHECK(lmf_st_writer_set_metadata(&w, "step", "42") == 0); /* replaces */
    CHECK(lmf_st_writer_set_metadata(&w, "note", "quote \" and \\ ok") == 0);
    const char *path = tmp_path("rt.safetensors");
    CHECK(lmf_st_writer_write(&w, path) == 0);

    /* A target that cannot be renamed into place must leave no temporary file behind. */
    const char *blocked = tmp_path("blocked.safetensors");
    CHECK(mkdir(blocked, 0755) == 0);
    CHECK(lmf_st_writer_write(&w, blocked) < 0);
    CHECK(lmf_st_writer_write(&w, "/nonexistent-lmf-dir/x.safetensors") < 0);
    rmdir(blocked);
    DIR *d = opendir(tmpdir);
    int leftovers = 0;
    for (struct dirent *e; d && (e = readdir(d));) leftovers += strstr(e->d_name, ".tmp-") != NULL;
    if (d) closedir(d);
    CHECK(leftovers == 0);
    lmf_st_writer_free(&w);

    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    uint64_t hl = 0;
    for (int i = 7; raw && i >= 0; i--) hl = hl << 8 | raw[i];
    CHECK(raw && (8 + hl) % 8 == 0 && 8 + hl + 24 + 10 + 8 + 4 == n);
    free(raw);

    lmf_safetensors st;
    CHECK(lmf_safetensors_open(&st, path) == 0);
    CHECK(st.n_files == 1 && st.n_tensors == 5 && tensors_in_bounds(&st));
    CHECK(st.metadata_json && strstr(st.metadata_json, "\"step\":\"42\"") &&
          strstr(st.metadata_json, "quote \\\" and \\\\ ok"));
    const lmf_st_tensor *t = lmf_safetensors_find(&st, "model.layers.0.w");
    CHECK(t && t->dtype == LMF_F32 && t->ndim == 2 && t->shape[1] == 3 && t->nbytes == 24 &&
          !memcmp(t->data, f32, 24) && (uintptr_t)t->data % 4 == 0);
    t = lmf_safetensors_find(&st, "bf");
    CHECK(t && t->dtype == LMF_BF16 && t->shape[0] == 5 && !memcmp(t->data, bf, 10));
    if (t) {
        float back[5];
        lmf_convert_to_f32(back, t->data, LMF_BF16, 5);
        for (int i = 0; i < 5; i++) CHECK_NEAR(back[i], src[i], fabsf(src[i]) / 128);
    }
    t = lmf_safetensors_find(&st, "half");
    CHECK(t && t->dtype == LMF_F16 && !memcmp(t->data, h, 8) && (uintptr_t)t->data % 2 == 0);
    t = lmf_safetensors_find(&st, "empty");
    CHECK(t && t->ndim == 3 && t->nbytes == 0 && lmf_st_numel(t) == 0);
    t = lmf_safetensors_find(&st, "scalar");
    CHECK(t && t->ndim == 0 && lmf_st_numel(t) == 1 && *(const float *)t->data == 3.0f);
    lmf_safetensors_close(&st);
    CHECK(st.n_tensors == 0 && st.files == NULL);

    /* Without metadata the writer adds {"format":"pt"} as Hugging Face does; no tensors is fine. */
    lmf_st_writer_init(&w);
    CHECK(lmf_st_writer_write(&w, path) == 0);
    lmf_st_writer_free(&w);
    CHECK(lmf_safetensors_open(&st, path) == 0);
    CHECK(st.n_tensors == 0 && st.metadata_json &&
          !strcmp(st.metadata_json, "{\"format\":\"pt\"}"));
    CHECK(lmf_safetensors_find(&st, "x") == NULL);
    lmf_safetensors_close(&st);
    unlink(path);
}

static void write_shard(const char *dir, const char *file, const char *const *names, int n,
                        float base) {
    lmf_st_writer w;
    lmf_st_writer_init(&w);
    float v[3][2];
    int64_t shape[1] = {2};
    for (int i = 0; i < n && i < 3; i++) {
        v[i][0] = base + (float)i;
        v[i][1] = -(base + (float)i);
        lmf_st_writer_add(&w, names[i], LMF_F32, 1, shape, v[i]);
    }
    char *p = lmf_path_join(dir, file);
    CHECK(lmf_st_writer_write(&w, p) == 0);
    free(p);
    lmf_st_writer_free(&w);
}

static void write_index(const char *dir, const char *map) {
    char json[1024], *p = lmf_path_join(dir, "model.safetensors.index.json");
    snprintf(json, sizeof json, "{\"metadata\":{\"total_size\":24},\"weight_map\":{%s}}", map);
    CHECK(lmf_file_write_atomic(p, json, strlen(json)) == 0);
    free(p);
}

/* Opening dir must fail with a message containing want. */
static void expect_dir_fail(const char *dir, const char *want) {
    lmf_safetensors st;
    int rc = lmf_safetensors_open_dir(&st, dir);
    CHECK_MSG(rc < 0, "opened despite \"%s\"", want);
    CHECK_MSG(strstr(lmf_last_error(), want), "message \"%s\" lacks \"%s\"", lmf_last_error(),
              want);
    CHECK(st.n_files == 0 && st.paths == NULL && st.tensors == NULL);
}

static void test_sharded(void) {
    char *dir = tmp_path("sharded");
    CHECK(mkdir(dir, 0755) == 0);
    expect_dir_fail(dir, "no model.safetensors or model.safetensors.index.json in");
    const char *s1[] = {"a", "b"}, *s2[] = {"c"}, *s2dup[] = {"c", "a"};
    write_shard(dir, "model-00001-of-00002.safetensors", s1, 2, 1);
    write_shard(dir, "model-00002-of-00002.safetensors", s2, 1, 10);
    const char *good = "\"a\":\"model-00001-of-00002.safetensors\","
                       "\"c\":\"model-00002-of-00002.safetensors\","
                       "\"b\":\"model-00001-of-00002.safetensors\"";
    write_index(dir, good);
    lmf_safetensors st;
    CHECK(lmf_safetensors_open_dir(&st, dir) == 0);
    CHECK(st.n_files == 2 && st.n_tensors == 3 && tensors_in_bounds(&st));
    const lmf_st_tensor *c = lmf_safetensors_find(&st, "c"), *b = lmf_safetensors_find(&st, "b");
    CHECK(c && strstr(st.paths[c->file_index], "model-00002-of-00002.safetensors") &&
          ((const float *)c->data)[0] == 10 && ((const float *)c->data)[1] == -10);
    CHECK(b && b->file_index != c->file_index && ((const float *)b->data)[0] == 2);
    lmf_safetensors_close(&st);

    write_index(dir, "\"a\":\"model-00001-of-00002.safetensors\","
                     "\"d\":\"model-00001-of-00002.safetensors\"");
    expect_dir_fail(dir, "tensor \"d\" is not in shard model-00001-of-00002.safetensors");
    write_index(dir, "\"a\":\"model-00002-of-00002.safetensors\"");
    expect_dir_fail(dir, "tensor \"a\" is not in shard model-00002-of-00002.safetensors");
    write_index(dir, "\"b\":\"model-00001-of-00002.safetensors\","
                     "\"a\":\"model-00002-of-00002.safetensors\"");
    expect_dir_fail(dir, "tensor \"a\" is in shard model-00001-of-00002.safetensors, not in "
                         "model-00002-of-00002.safetensors");
    write_index(dir, "\"a\":\"sub/model-00001-of-00002.safetensors\"");
    expect_dir_fail(dir, "expected a file name in this folder");
    write_index(dir, "\"a\":\"..\"");
    expect_dir_fail(dir, "expected a file name in this folder");
    write_index(dir, "\"a\":\"model-00003-of-00002.safetensors\"");
    expect_dir_fail(dir, "model-00003-of-00002.safetensors");
    write_index(dir, "");
    expect_dir_fail(dir, "empty");
    char *idx = lmf_path_join(dir, "model.safetensors.index.json");
    CHECK(lmf_file_write_atomic(idx, "{\"weight_map\": []}", 18) == 0);
    expect_dir_fail(dir, "weight_map");
    CHECK(lmf_file_write_atomic(idx, "{\"weight_map\": {", 16) == 0);
    expect_dir_fail(dir, "model.safetensors.index.json");
    write_shard(dir, "model-00002-of-00002.safetensors", s2dup, 2, 10);
    write_index(dir, good);
    expect_dir_fail(dir, "tensor \"a\" is in two shards");

    /* Without an index the folder's model.safetensors is used. */
    unlink(idx);
    free(idx);
    char *one = lmf_path_join(dir, "model.safetensors");
    write_shard(dir, "model.safetensors", s1, 2, 5);
    CHECK(lmf_safetensors_open_dir(&st, dir) == 0);
    CHECK(st.n_files == 1 && st.n_tensors == 2 && tensors_in_bounds(&st));
    b = lmf_safetensors_find(&st, "b");
    CHECK(b && ((const float *)b->data)[0] == 6);
    lmf_safetensors_close(&st);
    free(one);
}

/* Every prefix of a valid file, and 200 random byte flips in its header, must open cleanly or
 * fail cleanly; the sanitizer build turns any stray read into a failure. */
static void test_fuzz(void) {
    const char *good = tmp_path("fuzz_good.safetensors"), *bad = tmp_path("fuzz.safetensors");
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t s2[1] = {2}, s3[2] = {1, 3}, s0[1] = {0};
    lmf_st_writer w;
    lmf_st_writer_init(&w);
    lmf_st_writer_add(&w, "x", LMF_F32, 1, s2, v);
    lmf_st_writer_add(&w, "y", LMF_BF16, 2, s3, v);
    lmf_st_writer_add(&w, "z", LMF_F16, 1, s0, NULL);
    lmf_st_writer_set_metadata(&w, "format", "pt");
    CHECK(lmf_st_writer_write(&w, good) == 0);
    lmf_st_writer_free(&w);
    size_t n;
    uint8_t *buf = read_bytes(good, &n);
    CHECK(buf != NULL);
    if (!buf) return;
    lmf_safetensors st;
    int prefix_ok = 1;
    for (size_t len = 0; len <= n; len++) {
        write_bytes(bad, buf, len);
        int rc = lmf_safetensors_open(&st, bad);
        if ((rc == 0) != (len == n)) prefix_ok = 0;
        if (rc == 0) {
            if (!tensors_in_bounds(&st)) prefix_ok = 0;
            lmf_safetensors_close(&st);
        } else if (!strstr(lmf_last_error(), bad)) {
            prefix_ok = 0;
        }
    }
    CHECK_MSG(prefix_ok, "a truncated file opened, or an error did not name the file");

    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | buf[i];
    lmf_rng rng;
    lmf_rng_seed(&rng, 1234);
    int opened = 0, flips_ok = 1;
    uint8_t *mut = malloc(n);
    for (int iter = 0; iter < 200; iter++) {
        memcpy(mut, buf, n);
        int k = 1 + (int)(lmf_rng_u64(&rng) % 3);
        for (int j = 0; j < k; j++)
            mut[lmf_rng_u64(&rng) % (8 + hl)] ^= (uint8_t)(1 + lmf_rng_u64(&rng) % 255);
        write_bytes(bad, mut, n);
        if (lmf_safetensors_open(&st, bad) == 0) {
            opened++;
            if (!tensors_in_bounds(&st)) flips_ok = 0;
            lmf_safetensors_close(&st);
        } else if (!lmf_last_error()[0]) {
            flips_ok = 0;
        }
    }
    CHECK(flips_ok);
    printf("fuzz: %zu prefixes, 200 header mutations (%d still valid)\n", n + 1, opened);
    free(mut);
    free(buf);
    unlink(good);
    unlink(bad);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmf_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_malformed();
    test_python_file();
    test_round_trip();
    test_sharded();
    test_fuzz();
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    CHECK(!lmf_path_exists(tmpdir));
    return test_summary("test_safetensors");
}
