/* Which replica takes a request: least outstanding requests, or prefix affinity by rendezvous
 * (highest random weight) hashing, which keeps each prefix on one replica while that replica
 * is healthy and moves only the prefixes of a replica that leaves. Pure functions: unit-tested
 * in tests/serve/test_router_policy.c. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "router_internal.h"

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME  1099511628211ull

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * FNV_PRIME;
    return h;
}

/* splitmix64's finaliser: a well-mixed weight from key and replica index. */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

int lmf_router_choose(const lmf_route_view *v, int n, lmf_router_policy p, uint64_t key,
                      const unsigned char *tried, unsigned start) {
    if (n <= 0) return -1;
    if (p == LMF_ROUTE_PREFIX) {
        int best = 0;
        uint64_t bw = 0;
        for (int i = 0; i < n; i++) {
            uint64_t w = mix(key ^ mix((uint64_t)i + 1));
            if (i == 0 || w > bw) best = i, bw = w;
        }
        if (v[best].healthy && !(tried && tried[best])) return best;
    }
    int pick = -1;
    for (int k = 0; k < n; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)n);
        if (!v[i].healthy || (tried && tried[i])) continue;
        if (pick < 0 || v[i].outstanding < v[pick].outstanding) pick = i;
    }
    return pick;
}

typedef struct keybuf {
    uint64_t h;
    int left; /* characters still hashed */
} keybuf;

static void add(keybuf *k, const char *s, size_t n) {
    if (k->left <= 0) return;
    if (n > (size_t)k->left) n = (size_t)k->left;
    k->h = fnv(k->h, s, n);
    k->left -= (int)n;
}

static void add_str(keybuf *k, const char *s) {
    add(k, s, strlen(s));
}

/* A message's content: a string, or an array of parts whose text ones count. */
static void add_content(keybuf *k, const cJSON *c) {
    if (cJSON_IsString(c))
        add_str(k, c->valuestring);
    else if (cJSON_IsArray(c)) {
        const cJSON *part;
        cJSON_ArrayForEach(part, c) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (cJSON_IsString(t)) add_str(k, t->valuestring);
        }
    }
}

static void add_prompt(keybuf *k, const cJSON *p) {
    if (cJSON_IsString(p)) {
        add_str(k, p->valuestring);
        return;
    }
    if (!cJSON_IsArray(p)) return;
    const cJSON *x;
    cJSON_ArrayForEach(x, p) {
        if (cJSON_IsNumber(x)) {
            char num[24];
            int m = snprintf(num, sizeof num, "%d,", x->valueint);
            add(k, num, (size_t)m);
        } else if (cJSON_IsString(x)) { /* a batch of prompts: the first decides */
            add_str(k, x->valuestring);
            return;
        } else if (cJSON_IsArray(x)) {
            add_prompt(k, x);
            return;
        }
    }
}

uint64_t lmf_router_prefix_key(const char *body, size_t len, int max_chars) {
    cJSON *o = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return 0;
    }
    keybuf k = {FNV_OFFSET, 1 << 30};
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (cJSON_IsString(model)) add_str(&k, model->valuestring);
    add(&k, "\x1d", 1);
    k.left = max_chars;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (cJSON_IsArray(msgs)) {
        const cJSON *m;
        cJSON_ArrayForEach(m, msgs) {
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            if (cJSON_IsString(role)) add_str(&k, role->valuestring);
            add(&k, "\x1f", 1);
            add_content(&k, cJSON_GetObjectItemCaseSensitive(m, "content"));
            add(&k, "\x1e", 1);
        }
    } else
        add_prompt(&k, cJSON_GetObjectItemCaseSensitive(o, "prompt"));
    cJSON_Delete(o);
    return k.h ? k.h : 1;
}
