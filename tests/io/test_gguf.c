/* GGUF: the writer's files read back with the same metadata (every value type, arrays of
 * numbers and strings) and tensor bytes (F32, F16, BF16, Q8_0, Q4_0, Q4_K; 1-3 dims; custom
 * alignment); malformed images (every truncation, every single-bit flip of a small file,
 * hand-made bad fields) give errors naming the field, never out-of-bounds reads (each image is
 * copied into a buffer of exactly its size so ASan sees any overrun); a tiny llama model
 * written as GGUF and loaded back gives the same parameters (q/k permuted in the file, as
 * llama.cpp's converter does) and logits as the safetensors model (f32: bit for bit; Q8_0 /
 * Q4_0: within the bound stated below); embedded tokenizers give the same ids as tokenizer.json. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmforge/bpe_train.h"
#include "lmforge/core.h"
#include "lmforge/gguf.h"
#include "lmforge/gguf_model.h"
#include "lmforge/model.h"
#include "lmforge/tokenizer.h"
#include "lmforge/tokenizer_gguf.h"
#include "test.h"

static lmf_rng rng;
static char tmpdir[256];

static float *randn(size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = lmf_rng_normal(&rng);
    return p;
}

/* Parses a copy of img[0..n) held in a buffer of exactly n bytes. */
static int parse_copy(const uint8_t *img, size_t n, lmf_gguf *g) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, img, n);
    int rc = lmf_gguf_parse(g, copy, n, "img.gguf");
    if (rc == 0) {
        /* every tensor span lies inside the buffer: touch every byte */
        unsigned sum = 0;
        for (int64_t i = 0; i < g->n_tensors; i++)
            for (size_t k = 0; k < g->tensors[i].nbytes; k++) sum += g->tensors[i].data[k];
        for (int64_t i = 0; i < g->n_kv; i++) {
            const lmf_gguf_value *v = &g->kv[i].v;
            for (uint64_t k = 0; v->strs && k < v->n; k++)
                for (size_t j = 0; j < v->lens[k]; j++) sum += (uint8_t)v->strs[k][j];
            for (size_t j = 0; v->str && j < v->len; j++) sum += (uint8_t)v->str[j];
        }
        (void)sum;
        lmf_gguf_close(g);
    }
    free(copy);
    return rc;
}

static void check_roundtrip(void) {
    lmf_gguf_writer w;
    lmf_gguf_writer_init(&w);
    CHECK(lmf_gguf_set_int(&w, "general.alignment", LMF_GGUF_UINT32, 64) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.u8", LMF_GGUF_UINT8, 200) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.i8", LMF_GGUF_INT8, -100) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.u16", LMF_GGUF_UINT16, 60000) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.i16", LMF_GGUF_INT16, -30000) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.u32", LMF_GGUF_UINT32, 4000000000ll) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.i32", LMF_GGUF_INT32, -2000000000) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.u64", LMF_GGUF_UINT64, 1ll << 40) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.i64", LMF_GGUF_INT64, -(1ll << 50)) == 0);
    CHECK(lmf_gguf_set_float(&w, "t.f32", LMF_GGUF_FLOAT32, 1.5) == 0);
    CHECK(lmf_gguf_set_float(&w, "t.f64", LMF_GGUF_FLOAT64, 1e-300) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.bool", LMF_GGUF_BOOL, 1) == 0);
    CHECK(lmf_gguf_set_str(&w, "t.str", "héllo") == 0);
    int32_t ia[3] = {-1, 7, 1 << 30};
    float fa[2] = {0.25f, -3.0f};
    const char *sa[3] = {"a", "", "ccc"};
    CHECK(lmf_gguf_set_arr(&w, "t.arr_i32", LMF_GGUF_INT32, ia, 3) == 0);
    CHECK(lmf_gguf_set_arr(&w, "t.arr_f32", LMF_GGUF_FLOAT32, fa, 2) == 0);
    CHECK(lmf_gguf_set_arr(&w, "t.arr_empty", LMF_GGUF_UINT8, NULL, 0) == 0);
    CHECK(lmf_gguf_set_str_arr(&w, "t.arr_str", sa, 3) == 0);
    CHECK(lmf_gguf_set_int(&w, "t.u8", LMF_GGUF_UINT8, 201) == 0); /* replaces */
    /* Tensors of every supported type. */
    float *f = randn(512 * 3);
    uint16_t h[512], b[512];
    lmf_convert_from_f32(h, LMF_F16, f, 512);
    lmf_convert_from_f32(b, LMF_BF16, f, 512);
    uint8_t q8[2 * 34 * 8], q4[2 * 18 * 8], qk[2 * 144];
    CHECK(lmf_quantize(LMF_Q8_0, q8, f, 2, 256, "q8") == 0);
    CHECK(lmf_quantize(LMF_Q4_0, q4, f, 2, 256, "q4") == 0);
    CHECK(lmf_quantize(LMF_Q4_K, qk, f, 2, 256, "qk") == 0);
    int64_t ne3[3] = {8, 4, 3}, ne1[1] = {5}, ne2[2] = {256, 2};
    CHECK(lmf_gguf_add_tensor(&w, "f32.3d", LMF_GGML_F32, 3, ne3, f) == 0);
    CHECK(lmf_gguf_add_tensor(&w, "f32.1d", LMF_GGML_F32, 1, ne1, f) == 0);
    CHECK(lmf_gguf_add_tensor(&w, "f16", LMF_GGML_F16, 2, ne2, h) == 0);
    CHECK(lmf_gguf_add_tensor(&w, "bf16", LMF_GGML_BF16, 2, ne2, b) == 0);
    CHECK(lmf_gguf_add_tensor(&w, "q8", LMF_GGML_Q8_0, 2, ne2, q8) == 0);
    CHECK(lmf_gguf_add_tensor(&w, "q4", LMF_GGML_Q4_0, 2, ne2, q4) == 0);
    CHECK(lmf_gguf_add_tensor(&w, "qk", LMF_GGML_Q4_K, 2, ne2, qk) == 0);
    int64_t bad[2] = {100, 2};
    CHECK(lmf_gguf_add_tensor(&w, "bad", LMF_GGML_Q8_0, 2, bad, q8) == LMF_ESHAPE);
    char path[512];
    snprintf(path, sizeof path, "%s/rt.gguf", tmpdir);
    CHECK(lmf_gguf_writer_write(&w, path) == 0);
    lmf_gguf g;
    int rc = lmf_gguf_open(&g, path);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    if (rc) {
        lmf_gguf_writer_free(&w);
        free(f);
        return;
    }
    int64_t iv;
    double dv;
    int bv;
    const char *s;
    size_t sl;
    CHECK(g.version == 3 && g.alignment == 64 && g.n_kv == 17 && g.n_tensors == 7);
    CHECK(lmf_gguf_get_int(&g, "t.u8", &iv) == 0 && iv == 201);
    CHECK(lmf_gguf_get_int(&g, "t.i8", &iv) == 0 && iv == -100);
    CHECK(lmf_gguf_get_int(&g, "t.u16", &iv) == 0 && iv == 60000);
    CHECK(lmf_gguf_get_int(&g, "t.i16", &iv) == 0 && iv == -30000);
    CHECK(lmf_gguf_get_int(&g, "t.u32", &iv) == 0 && iv == 4000000000ll);
    CHECK(lmf_gguf_get_int(&g, "t.i32", &iv) == 0 && iv == -2000000000);
    CHECK(lmf_gguf_get_int(&g, "t.u64", &iv) == 0 && iv == 1ll << 40);
    CHECK(lmf_gguf_get_int(&g, "t.i64", &iv) == 0 && iv == -(1ll << 50));
    CHECK(lmf_gguf_get_float(&g, "t.f32", &dv) == 0 && dv == 1.5);
    CHECK(lmf_gguf_get_float(&g, "t.f64", &dv) == 0 && dv == 1e-300);
    CHECK(lmf_gguf_get_bool(&g, "t.bool", &bv) == 0 && bv == 1);
    CHECK(lmf_gguf_get_str(&g, "t.str", &s, &sl) == 0 && sl == strlen("héllo") &&
          !memcmp(s, "héllo", sl));
    CHECK(lmf_gguf_get_int(&g, "t.str", &iv) == LMF_EFORMAT && strstr(lmf_last_error(), "t.str"));
    CHECK(lmf_gguf_get_int(&g, "absent", &iv) == LMF_ENOENT);
    const lmf_gguf_kv *kv = lmf_gguf_find(&g, "t.arr_i32");
    CHECK(kv && kv->v.n == 3 && lmf_gguf_arr_int(&kv->v, 0) == -1 &&
          lmf_gguf_arr_int(&kv->v, 2) == 1 << 30);
    kv = lmf_gguf_find(&g, "t.arr_f32");
    CHECK(kv && kv->v.n == 2 && lmf_gguf_arr_float(&kv->v, 1) == -3.0);
    kv = lmf_gguf_find(&g, "t.arr_empty");
    CHECK(kv && kv->v.n == 0 && kv->v.arr_type == LMF_GGUF_UINT8);
    kv = lmf_gguf_find(&g, "t.arr_str");
    CHECK(kv && kv->v.n == 3 && kv->v.lens[0] == 1 && kv->v.lens[1] == 0 && kv->v.lens[2] == 3 &&
          !memcmp(kv->v.strs[2], "ccc", 3));
    struct {
        const char *name;
        const void *data;
        size_t bytes;
    } want[] = {{"f32.3d", f, 96 * 4}, {"f32.1d", f, 20},     {"f16", h, 1024},
                {"bf16", b, 1024},     {"q8", q8, sizeof q8}, {"q4", q4, sizeof q4},
                {"qk", qk, sizeof qk}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const lmf_gguf_tensor *t = lmf_gguf_find_tensor(&g, want[i].name);
        CHECK_MSG(t && t->nbytes == want[i].bytes &&
                      !memcmp(t->data, want[i].data, want[i].bytes) &&
                      (size_t)(t->data - g.base) % 64 == 0,
                  "tensor %s", want[i].name);
    }
    const lmf_gguf_tensor *t3 = lmf_gguf_find_tensor(&g, "f32.3d");
    CHECK(t3 && t3->n_dims == 3 && t3->ne[0] == 8 && t3->ne[1] == 4 && t3->ne[2] == 3);
    /* Dequantized tensors equal lmforge's own dequantization. */
    float d1[512], d2[512];
    CHECK(lmf_gguf_tensor_to_f32(&g, lmf_gguf_find_tensor(&g, "qk"), d1) == 0);
    lmf_dequantize(LMF_Q4_K, d2, qk, 2, 256);
    CHECK(!memcmp(d1, d2, sizeof d1));
    CHECK(lmf_gguf_tensor_to_f32(&g, lmf_gguf_find_tensor(&g, "bf16"), d1) == 0);
    lmf_convert_to_f32(d2, b, LMF_BF16, 512);
    CHECK(!memcmp(d1, d2, sizeof d1));
    lmf_gguf_close(&g);
    lmf_gguf_writer_free(&w);
    free(f);
}

/* A small file image for the malformed-file tests. */
static void small_image(uint8_t **img, size_t *n) {
    lmf_gguf_writer w;
    lmf_gguf_writer_init(&w);
    const char *sa[2] = {"ab", "c"};
    int32_t ia[2] = {3, 4};
    lmf_gguf_set_str(&w, "general.architecture", "llama");
    lmf_gguf_set_int(&w, "n", LMF_GGUF_UINT32, 7);
    lmf_gguf_set_int(&w, "flag", LMF_GGUF_BOOL, 1);
    lmf_gguf_set_str_arr(&w, "toks", sa, 2);
    lmf_gguf_set_arr(&w, "ids", LMF_GGUF_INT32, ia, 2);
    float f[64];
    for (int i = 0; i < 64; i++) f[i] = (float)i;
    uint8_t q[2 * 34];
    lmf_quantize(LMF_Q8_0, q, f, 2, 32, "q");
    int64_t ne1[1] = {8}, ne2[2] = {32, 2};
    lmf_gguf_add_tensor(&w, "a", LMF_GGML_F32, 1, ne1, f);
    lmf_gguf_add_tensor(&w, "b", LMF_GGML_Q8_0, 2, ne2, q);
    lmf_gguf_writer_to_buffer(&w, img, n);
    lmf_gguf_writer_free(&w);
}

static void check_malformed(void) {
    uint8_t *img;
    size_t n;
    small_image(&img, &n);
    lmf_gguf g;
    /* Every truncation before the end of the last tensor's data fails with a message; after
     * it only padding is cut, and the file still reads. */
    size_t need = 0;
    CHECK(lmf_gguf_parse(&g, img, n, "img.gguf") == 0);
    for (int64_t i = 0; i < g.n_tensors; i++) {
        size_t end = (size_t)(g.tensors[i].data - g.base) + g.tensors[i].nbytes;
        need = end > need ? end : need;
    }
    lmf_gguf_close(&g);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        int rc = parse_copy(img, len, &g);
        if ((len < need ? rc == 0 || !lmf_last_error()[0] : rc != 0) && bad++ < 3)
            fprintf(stderr, "truncation to %zu bytes (data ends at %zu): rc %d\n", len, need, rc);
    }
    CHECK_MSG(bad == 0, "%d truncations accepted", bad);
    /* Every single-bit flip: parse succeeds (spans then inside the buffer, checked by
     * parse_copy) or fails with a message naming the file. */
    int failed = 0;
    bad = 0;
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit++) {
            img[i] ^= (uint8_t)(1u << bit);
            int rc = parse_copy(img, n, &g);
            if (rc) {
                failed++;
                if (!strstr(lmf_last_error(), "img.gguf") && bad++ < 3)
                    fprintf(stderr, "flip %zu.%d: message \"%s\"\n", i, bit, lmf_last_error());
            }
            img[i] ^= (uint8_t)(1u << bit);
        }
    CHECK_MSG(bad == 0, "%d bit flips gave errors not naming the file", bad);
    CHECK(failed > 0);
    printf("bit flips: %d of %zu rejected\n", failed, n * 8);

    /* Version 2 has the same layout (v3 only allowed big-endian files): read alike. */
    img[4] = 2;
    CHECK(lmf_gguf_parse(&g, img, n, "v2.gguf") == 0 && g.version == 2 && g.n_tensors == 2 &&
          g.alignment == 32);
    lmf_gguf_close(&g);
    img[4] = 3;
    /* Hand-made bad fields and the messages naming them. */
    struct {
        size_t off;
        uint64_t val;
        int width;
        const char *msg;
    } cases[] = {
        {0, 0x46554746, 4, "not a GGUF file"},
        {4, 1, 4, "version 1"},
        {4, 0x03000000, 4, "big-endian"},
        {8, 1ull << 40, 8, "more than"},
        {16, 1ull << 40, 8, "more than"},
        {24, 1ull << 40, 8, "string length"}, /* first key's length */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        uint8_t *c = malloc(n);
        memcpy(c, img, n);
        memcpy(c + cases[k].off, &cases[k].val, (size_t)cases[k].width);
        int rc = parse_copy(c, n, &g);
        CHECK_MSG(rc != 0 && strstr(lmf_last_error(), cases[k].msg), "case %zu: \"%s\"", k,
                  lmf_last_error());
        free(c);
    }
    free(img);

    /* Misaligned tensor offset, bad alignment, unknown type, unsupported type on use, bad
     * shapes, duplicate names: written with raw fields through the writer's own image. */
    lmf_gguf_writer w;
    lmf_gguf_writer_init(&w);
    float f[32] = {0};
    int64_t ne[1] = {32};
    lmf_gguf_set_int(&w, "general.alignment", LMF_GGUF_UINT32, 48); /* not a power of two */
    lmf_gguf_add_tensor(&w, "x", LMF_GGML_F32, 1, ne, f);
    lmf_gguf_writer_to_buffer(&w, &img, &n);
    CHECK(parse_copy(img, n, &g) != 0 && strstr(lmf_last_error(), "general.alignment"));
    free(img);
    lmf_gguf_writer_free(&w);

    /* general.alignment 1 is legal GGUF but could misalign blocks: refused, naming the tensor. */
    lmf_gguf_writer_init(&w);
    lmf_gguf_set_int(&w, "general.alignment", LMF_GGUF_UINT32, 1);
    lmf_gguf_set_str(&w, "k", "abc"); /* makes the header length odd */
    lmf_gguf_add_tensor(&w, "x", LMF_GGML_F32, 1, ne, f);
    lmf_gguf_writer_to_buffer(&w, &img, &n);
    CHECK(parse_copy(img, n, &g) != 0 && strstr(lmf_last_error(), "4-byte aligned") &&
          strstr(lmf_last_error(), "\"x\""));
    free(img);
    lmf_gguf_writer_free(&w);

    /* Q6_K (read only): a block packed as GGML's quantizer packs it (ql low nibbles of values
     * l and l + 32, high nibbles of l + 64 and l + 96; qh two bits of each of the four) decodes
     * to d * scale[v / 16] * (q - 32). Q5_K is parsed but refused on use, by name. */
    uint8_t q6[210] = {0}, q5k[176] = {0};
    int qv[256];
    for (int v = 0; v < 256; v++) qv[v] = (v * 7 + 3) % 64;
    for (int half = 0; half < 2; half++)
        for (int l = 0; l < 32; l++) {
            const int *L = qv + 128 * half;
            uint8_t *ql = q6 + 64 * half, *qh = q6 + 128 + 32 * half;
            ql[l] = (uint8_t)((L[l] & 15) | ((L[l + 64] & 15) << 4));
            ql[l + 32] = (uint8_t)((L[l + 32] & 15) | ((L[l + 96] & 15) << 4));
            qh[l] = (uint8_t)((L[l] >> 4) | ((L[l + 32] >> 4) << 2) | ((L[l + 64] >> 4) << 4) |
                              ((L[l + 96] >> 4) << 6));
        }
    for (int j = 0; j < 16; j++) q6[192 + j] = (uint8_t)(int8_t)(j - 8);
    q6[208] = 0x00, q6[209] = 0x38; /* d = 0.5 */
    lmf_gguf_writer_init(&w);
    lmf_gguf_add_tensor(&w, "x", LMF_GGML_Q6_K, 1, (int64_t[]){256}, q6);
    lmf_gguf_add_tensor(&w, "y", 13 /* Q5_K */, 1, (int64_t[]){256}, q5k);
    lmf_gguf_writer_to_buffer(&w, &img, &n);
    CHECK(lmf_gguf_parse(&g, img, n, "q6.gguf") == 0);
    float out[256];
    CHECK(lmf_gguf_tensor_to_f32(&g, lmf_gguf_find_tensor(&g, "x"), out) == 0);
    int ok6 = 1;
    for (int v = 0; v < 256; v++) ok6 &= out[v] == 0.5f * (float)(v / 16 - 8) * (float)(qv[v] - 32);
    CHECK_MSG(ok6, "Q6_K decode: out[0] %g out[100] %g", out[0], out[100]);
    CHECK(lmf_gguf_tensor_to_f32(&g, lmf_gguf_find_tensor(&g, "y"), out) == LMF_EUNSUPPORTED &&
          strstr(lmf_last_error(), "Q5_K") && strstr(lmf_last_error(), "\"y\""));
    lmf_gguf_close(&g);
    free(img);
    lmf_gguf_writer_free(&w);

    /* A tensor's offset patched to be misaligned / past the end. */
    lmf_gguf_writer_init(&w);
    lmf_gguf_add_tensor(&w, "x", LMF_GGML_F32, 1, ne, f);
    lmf_gguf_writer_to_buffer(&w, &img, &n);
    /* header: magic 4, version 4, counts 16, name (8 + 1), n_dims 4, ne 8, type 4, offset 8 */
    size_t off_at = 24 + 9 + 4 + 8 + 4;
    uint64_t o = 4;
    memcpy(img + off_at, &o, 8);
    CHECK(parse_copy(img, n, &g) != 0 && strstr(lmf_last_error(), "misaligned"));
    o = 1024;
    memcpy(img + off_at, &o, 8);
    CHECK(parse_copy(img, n, &g) != 0 && strstr(lmf_last_error(), "past the end"));
    uint32_t ty = 99;
    o = 0;
    memcpy(img + off_at, &o, 8);
    memcpy(img + off_at - 4, &ty, 4);
    CHECK(parse_copy(img, n, &g) != 0 && strstr(lmf_last_error(), "unknown ggml type 99"));
    ty = LMF_GGML_Q8_0; /* 32 is a whole block, so make the row 8 long */
    memcpy(img + off_at - 4, &ty, 4);
    int64_t ne8 = 8;
    memcpy(img + off_at - 12, &ne8, 8);
    CHECK(parse_copy(img, n, &g) != 0 && strstr(lmf_last_error(), "not a multiple"));
    free(img);
    lmf_gguf_writer_free(&w);
}

static void check_perm(void) {
    int32_t p[8];
    lmf_gguf_rope_perm(2, 4, p);
    /* HF rows (rotate-half) 0,1 | 2,3 pair as (0,2),(1,3): interleaved in GGUF as 0,2,1,3 */
    int want[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    CHECK(!memcmp(p, want, sizeof want));
    char name[128];
    CHECK(lmf_gguf_name_from_hf("model.layers.11.self_attn.o_proj.weight", name, sizeof name) ==
              0 &&
          !strcmp(name, "blk.11.attn_output.weight"));
    CHECK(lmf_gguf_name_from_hf("model.layers.0.mlp.down_proj.weight", name, sizeof name) == 0 &&
          !strcmp(name, "blk.0.ffn_down.weight"));
    CHECK(lmf_gguf_name_from_hf("lm_head.weight", name, sizeof name) == 0 &&
          !strcmp(name, "output.weight"));
    CHECK(lmf_gguf_name_from_hf("model.layers.0.foo", name, sizeof name) == LMF_ENOENT);
}

static void logits_of(lmf_model *m, float *logits, int T) {
    int32_t ids[64], labels[64];
    for (int i = 0; i < T; i++) ids[i] = labels[i] = (i * 37 + 5) % m->cfg.vocab;
    lmf_batch b = {1, T, ids, labels, NULL, NULL};
    double loss;
    CHECK(lmf_model_forward(m, &b, 0, &loss, NULL, logits, NULL) == 0);
}

/* max |a - b| / max |b| */
static double rel(const float *a, const float *b, size_t n) {
    return test_max_rel(a, b, n);
}

static void check_model(int hidden, int ffn, uint32_t qtype, double bound) {
    lmf_model_config cfg;
    lmf_model_preset(&cfg, LMF_ARCH_LLAMA, "tiny");
    cfg.hidden = hidden, cfg.ffn = ffn, cfg.head_dim = hidden / cfg.heads;
    lmf_model *m, *mg, *ms;
    CHECK(lmf_model_create(&m, &cfg, lmf_backend_cpu()) == 0);
    lmf_model_init_random(m, 17);
    char st_dir[512], gpath[512];
    snprintf(st_dir, sizeof st_dir, "%s/st", tmpdir);
    snprintf(gpath, sizeof gpath, "%s/m_%s.gguf", tmpdir, lmf_ggml_type_name(qtype));
    CHECK(lmf_model_save(m, st_dir) == 0);
    lmf_gguf_save_opts o = {.weight_type = qtype};
    int rc = lmf_model_save_gguf(m, gpath, &o);
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    rc = lmf_model_load_gguf(&mg, gpath, lmf_backend_cpu());
    CHECK_MSG(rc == 0, "%s", lmf_last_error());
    CHECK(lmf_model_load(&ms, st_dir, lmf_backend_cpu()) == 0);
    if (rc) {
        lmf_model_free(m), lmf_model_free(ms);
        return;
    }
    CHECK(mg->cfg.hidden == cfg.hidden && mg->cfg.layers == cfg.layers &&
          mg->cfg.heads == cfg.heads && mg->cfg.kv_heads == cfg.kv_heads &&
          mg->cfg.ffn == cfg.ffn && mg->cfg.vocab == cfg.vocab && mg->cfg.rms_eps == cfg.rms_eps &&
          mg->cfg.rope_theta == cfg.rope_theta && mg->cfg.max_pos == cfg.max_pos &&
          mg->cfg.tied == cfg.tied && mg->cfg.bos_id == cfg.bos_id && mg->cfg.eos_id == cfg.eos_id);
    int T = 24, V = cfg.vocab;
    float *ls = malloc(sizeof(float) * T * V), *lg = malloc(sizeof(float) * T * V);
    logits_of(ms, ls, T);
    logits_of(mg, lg, T);
    if (qtype == LMF_GGML_F32) {
        CHECK(mg->numel == ms->numel && !memcmp(mg->params, ms->params, ms->numel * 4));
        CHECK_MSG(!memcmp(ls, lg, sizeof(float) * T * V), "f32 GGUF logits differ: %g",
                  rel(lg, ls, (size_t)T * V));
        /* The file holds q in llama.cpp's row order. */
        lmf_gguf g;
        CHECK(lmf_gguf_open(&g, gpath) == 0);
        const lmf_gguf_tensor *tq = lmf_gguf_find_tensor(&g, "blk.1.attn_k.weight");
        const lmf_param *pk = lmf_model_find_param(m, "model.layers.1.self_attn.k_proj.weight");
        int D = cfg.head_dim, C = cfg.hidden, ok = tq != NULL;
        for (int h = 0; ok && h < cfg.kv_heads; h++)
            for (int r = 0; r < D; r++) {
                int hf = h * D + (r % 2) * (D / 2) + r / 2; /* GGUF row h*D + r */
                ok &= !memcmp((const float *)tq->data + (size_t)(h * D + r) * C,
                              m->params + pk->offset + (size_t)hf * C, sizeof(float) * C);
            }
        CHECK_MSG(ok, "k rows not in llama.cpp's order");
        lmf_gguf_close(&g);
    } else {
        double e = rel(lg, ls, (size_t)T * V);
        printf("%s logits (hidden %d): max |dlogit| / max |logit| = %.3g (bound %.3g)\n",
               lmf_ggml_type_name(qtype), hidden, e, bound);
        CHECK_MSG(e < bound, "%s logits rel err %g over %g", lmf_ggml_type_name(qtype), e, bound);
    }
    free(ls), free(lg);
    lmf_model_free(m), lmf_model_free(mg), lmf_model_free(ms);
}

static void check_tokenizer(const char *dir, const char *label) {
    lmf_gguf_writer w;
    lmf_gguf_writer_init(&w);
    int rc = lmf_tokenizer_gguf_metadata(&w, dir);
    CHECK_MSG(rc == 0, "%s: %s", label, lmf_last_error());
    uint8_t *img;
    size_t n;
    lmf_gguf g;
    lmf_tokenizer *ref, *tg = NULL;
    CHECK(lmf_gguf_writer_to_buffer(&w, &img, &n) == 0);
    CHECK(lmf_gguf_parse(&g, img, n, label) == 0);
    rc = lmf_tokenizer_from_gguf(&tg, &g);
    CHECK_MSG(rc == 0, "%s: %s", label, lmf_last_error());
    CHECK(lmf_tokenizer_load(&ref, dir) == 0);
    if (!rc) {
        static const char *texts[] = {
            "Hello world! It's 2024, isn't it?", "  spaces   and\ttabs\n\nnewlines",
            "Ünïcödé — 日本語のテキスト 🤖", "x=1+2; y = f(x) // comment", ""};
        int bad = 0;
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
            for (int sp = 0; sp <= 1; sp++) {
                int32_t *a, *b;
                int na, nb;
                lmf_tokenizer_encode(ref, texts[i], strlen(texts[i]), sp, &a, &na);
                lmf_tokenizer_encode(tg, texts[i], strlen(texts[i]), sp, &b, &nb);
                if ((na != nb || memcmp(a, b, sizeof *a * (size_t)na)) && bad++ < 2)
                    fprintf(stderr, "%s: \"%s\" (special %d): %d vs %d ids\n", label, texts[i], sp,
                            nb, na);
                char *da, *db;
                size_t la, lb;
                lmf_tokenizer_decode(ref, a, na, 0, &da, &la);
                lmf_tokenizer_decode(tg, a, na, 0, &db, &lb);
                bad += la != lb || memcmp(da, db, la);
                free(a), free(b), free(da), free(db);
            }
        CHECK_MSG(bad == 0, "%s: %d texts tokenized differently", label, bad);
        CHECK(lmf_tokenizer_vocab_size(tg) == lmf_tokenizer_vocab_size(ref) &&
              lmf_tokenizer_bos(tg) == lmf_tokenizer_bos(ref) &&
              lmf_tokenizer_eos(tg) == lmf_tokenizer_eos(ref));
        const char *ta = lmf_tokenizer_chat_template(ref), *tb = lmf_tokenizer_chat_template(tg);
        CHECK((!ta && !tb) || (ta && tb && !strcmp(ta, tb)));
        printf("%s: %d tokens through GGUF, same ids\n", label, lmf_tokenizer_vocab_size(tg));
    }
    lmf_tokenizer_free(tg);
    lmf_tokenizer_free(ref);
    lmf_gguf_close(&g);
    free(img);
    lmf_gguf_writer_free(&w);
}

int main(void) {
    lmf_rng_seed(&rng, 3);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmf_test_gguf_%d", (int)getpid());
    lmf_mkdir_p(tmpdir);
    check_roundtrip();
    check_malformed();
    check_perm();
    check_model(128, 352, LMF_GGML_F32, 0);
    check_model(128, 352, LMF_GGML_Q8_0, 0.02);
    /* 4-bit on random Gaussian weights (the worst case: no structure) gives ~9 % noise per
     * matmul; measured 0.26 (Q4_0) and 0.28 (Q4_K) through two layers and lm_head. */
    check_model(256, 512, LMF_GGML_Q4_0, 0.35);
    check_model(256, 512, LMF_GGML_Q4_K, 0.35);
    /* A tokenizer trained here (always available), then the shared reference ones if present. */
    char tokdir[512], corpus[512];
    snprintf(tokdir, sizeof tokdir, "%s/tok", tmpdir);
    snprintf(corpus, sizeof corpus, "%s/data/demo/corpus.txt", LMF_SOURCE_DIR);
    const char *specials[] = {"<|endoftext|>"};
    lmf_bpe_train_opts opts = {400, 2, specials, 1};
    lmf_bpe_trainer *tr;
    if (lmf_bpe_trainer_create(&tr, &opts) == 0) {
        CHECK(lmf_bpe_trainer_add_file(tr, corpus) == 0 && lmf_bpe_trainer_train(tr) == 0 &&
              lmf_bpe_trainer_save(tr, tokdir) == 0);
        lmf_bpe_trainer_free(tr);
        check_tokenizer(tokdir, "demo tokenizer");
    }
    const char *shared[] = {"gpt2", "llama-3.2"};
    for (int i = 0; i < 2; i++) {
        char d[512], f[600];
        snprintf(d, sizeof d, "%s/../shared/data/tokenizers/%s", LMF_SOURCE_DIR, shared[i]);
        snprintf(f, sizeof f, "%s/tokenizer.json", d);
        if (lmf_path_exists(f))
            check_tokenizer(d, shared[i]);
        else
            printf("skipping %s: %s not present\n", shared[i], f);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary("test_gguf");
}
