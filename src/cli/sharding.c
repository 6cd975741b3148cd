/* Which ZeRO stage a training run uses, from the three ways a LLaMA-Factory user says it: a
 * DeepSpeed JSON (`deepspeed: ds_z3_config.json`), transformers' FSDP keys (`fsdp: full_shard
 * auto_wrap`, `fsdp_config`), or lmforge's own `zero_stage`. They must agree when several are
 * given. DeepSpeed's "auto" values take the YAML's; explicit values that contradict it are
 * errors naming both, as transformers' DeepSpeed integration does. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "config.h"
#include "lmforge/core.h"
#include "lmforge/error.h"
#include "lmforge/json.h"

static int is_auto(const cJSON *v) {
    return cJSON_IsString(v) && !strcmp(v->valuestring, "auto");
}

/* An explicit DeepSpeed number must equal the YAML's value. */
static int agree_num(const lmf_config *c, const char *ds, const char *field, const cJSON *v,
                     const char *key, double yaml) {
    if (!v || is_auto(v)) return 0;
    if (!cJSON_IsNumber(v))
        return lmf_errorf(LMF_EINVAL, "%s: %s must be a number or \"auto\"", ds, field);
    if (fabs(v->valuedouble - yaml) > 1e-12 * fabs(yaml))
        return lmf_errorf(LMF_EINVAL, "%s: %s is %g but %s sets %s: %g (use \"auto\")", ds, field,
                          v->valuedouble, c->path, key, yaml);
    return 0;
}

static int deepspeed_stage(const lmf_config *c, int world, int *stage) {
    const char *ds = lmf_config_str(c, "deepspeed");
    cJSON *j = NULL;
    int rc = lmf_json_load(ds, &j);
    if (rc) return lmf_error_prefix(rc, "%s: deepspeed", c->path);
    *stage = 0;
    const cJSON *z = cJSON_GetObjectItemCaseSensitive(j, "zero_optimization");
    const cJSON *st = z ? cJSON_GetObjectItemCaseSensitive(z, "stage") : NULL;
    if (st && (!cJSON_IsNumber(st) || st->valuedouble < 0 || st->valuedouble > 3 ||
               st->valuedouble != (int)st->valuedouble))
        rc = lmf_errorf(LMF_EINVAL, "%s: zero_optimization.stage must be 0, 1, 2 or 3", ds);
    else if (st)
        *stage = st->valueint;
    const char *offloads[] = {"offload_optimizer", "offload_param"};
    for (int i = 0; i < 2 && z && !rc; i++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(z, offloads[i]);
        const cJSON *dev = o ? cJSON_GetObjectItemCaseSensitive(o, "device") : NULL;
        if (cJSON_IsString(dev) && strcmp(dev->valuestring, "none"))
            lmf_info("%s: zero_optimization.%s (%s) accepted: on CPU the state already lives in "
                     "host memory, nothing to offload",
                     ds, offloads[i], dev->valuestring);
    }
    if (!rc)
        rc = agree_num(c, ds, "gradient_clipping",
                       cJSON_GetObjectItemCaseSensitive(j, "gradient_clipping"), "max_grad_norm",
                       lmf_config_float(c, "max_grad_norm"));
    if (!rc)
        rc = agree_num(c, ds, "train_micro_batch_size_per_gpu",
                       cJSON_GetObjectItemCaseSensitive(j, "train_micro_batch_size_per_gpu"),
                       "per_device_train_batch_size",
                       (double)lmf_config_int(c, "per_device_train_batch_size"));
    if (!rc)
        rc = agree_num(c, ds, "gradient_accumulation_steps",
                       cJSON_GetObjectItemCaseSensitive(j, "gradient_accumulation_steps"),
                       "gradient_accumulation_steps",
                       (double)lmf_config_int(c, "gradient_accumulation_steps"));
    if (!rc)
        rc = agree_num(c, ds, "train_batch_size",
                       cJSON_GetObjectItemCaseSensitive(j, "train_batch_size"),
                       "per_device_train_batch_size x gradient_accumulation_steps x ranks",
                       (double)(lmf_config_int(c, "per_device_train_batch_size") *
                                lmf_config_int(c, "gradient_accumulation_steps") * world));
    const char *prec[] = {"bf16", "fp16"};
    for (int i = 0; i < 2 && !rc; i++) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, prec[i]);
        const cJSON *en = p ? cJSON_GetObjectItemCaseSensitive(p, "enabled") : NULL;
        if (!en || is_auto(en)) continue;
        if (!cJSON_IsBool(en))
            rc = lmf_errorf(LMF_EINVAL, "%s: %s.enabled must be true, false or \"auto\"", ds,
                            prec[i]);
        else if (cJSON_IsTrue(en) != lmf_config_bool(c, prec[i]))
            rc = lmf_errorf(LMF_EINVAL, "%s: %s.enabled is %s but %s has %s: %s (use \"auto\")", ds,
                            prec[i], cJSON_IsTrue(en) ? "true" : "false", c->path, prec[i],
                            lmf_config_bool(c, prec[i]) ? "true" : "false");
    }
    cJSON_Delete(j);
    return rc;
}

/* FSDP's sharding strategies as ZeRO stages. */
static int fsdp_strategy(const char *what, const char *s, int *stage) {
    static const struct {
        const char *name;
        int stage;
    } map[] = {{"full_shard", 3},
               {"shard_grad_op", 2},
               {"no_shard", 0},
               {"hybrid_shard", 3},
               {"hybrid_shard_zero2", 2},
               {"1", 3},
               {"2", 2},
               {"3", 0},
               {"4", 3},
               {"5", 2}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcasecmp(s, map[i].name)) {
            if (!strncasecmp(s, "hybrid", 6) || !strcmp(s, "4") || !strcmp(s, "5"))
                lmf_info("%s: %s shards across all ranks (one node group); lmforge has no "
                         "separate intra-node replica groups",
                         what, s);
            *stage = map[i].stage;
            return 0;
        }
    return lmf_errorf(LMF_EINVAL,
                      "%s: \"%s\" is not a sharding strategy (full_shard, shard_grad_op, no_shard, "
                      "hybrid_shard)",
                      what, s);
}

static int fsdp_stage(const lmf_config *c, int *stage) {
    *stage = -1;
    const char *f = lmf_config_str(c, "fsdp");
    if (f && *f) {
        char buf[256], *save = NULL;
        snprintf(buf, sizeof buf, "%s", f);
        for (char *w = strtok_r(buf, " ,", &save); w; w = strtok_r(NULL, " ,", &save)) {
            if (!strcasecmp(w, "auto_wrap") || !strcasecmp(w, "offload")) {
                if (!strcasecmp(w, "offload"))
                    lmf_info("fsdp: offload accepted: on CPU parameters already live in host "
                             "memory");
                continue; /* every decoder layer is a unit in lmforge: auto_wrap is implied */
            }
            int s;
            char what[64];
            snprintf(what, sizeof what, "%s: fsdp", c->path);
            int rc = fsdp_strategy(what, w, &s);
            if (rc) return rc;
            if (*stage >= 0 && *stage != s)
                return lmf_errorf(LMF_EINVAL, "%s: fsdp \"%s\" names two strategies", c->path, f);
            *stage = s;
        }
    }
    const char *fc = lmf_config_str(c, "fsdp_config");
    if (fc) {
        cJSON *j = NULL;
        int rc = lmf_json_load(fc, &j);
        if (rc) return lmf_error_prefix(rc, "%s: fsdp_config", c->path);
        const char *names[] = {"sharding_strategy", "fsdp_sharding_strategy"};
        for (int i = 0; i < 2 && !rc; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, names[i]);
            if (!v) continue;
            char what[512], num[16];
            snprintf(what, sizeof what, "%s: %s", fc, names[i]);
            if (cJSON_IsNumber(v)) snprintf(num, sizeof num, "%d", v->valueint);
            const char *s = cJSON_IsString(v) ? v->valuestring : cJSON_IsNumber(v) ? num : "";
            int st;
            rc = fsdp_strategy(what, s, &st);
            if (!rc && *stage >= 0 && *stage != st)
                rc = lmf_errorf(LMF_EINVAL, "%s disagrees with fsdp: \"%s\"", what, f);
            if (!rc) *stage = st;
        }
        cJSON_Delete(j);
        if (rc) return rc;
        if (*stage < 0 && (!f || !*f)) *stage = 3; /* FSDP's default strategy: FULL_SHARD */
    }
    return 0;
}

int lmf_cli_zero_stage(const lmf_config *c, int world, int *stage, char *label, size_t n) {
    *stage = 0;
    int ds = -1, fs = -1, own = -1, rc = 0;
    if (lmf_config_str(c, "deepspeed") && (rc = deepspeed_stage(c, world, &ds))) return rc;
    if ((rc = fsdp_stage(c, &fs))) return rc;
    if (lmf_config_is_set(c, "zero_stage")) own = (int)lmf_config_int(c, "zero_stage");
    if (ds >= 0 && fs >= 0)
        return lmf_errorf(LMF_EINVAL, "%s: deepspeed and fsdp are both set; choose one", c->path);
    int chosen = ds >= 0 ? ds : fs;
    if (own >= 0 && chosen >= 0 && own != chosen)
        return lmf_errorf(LMF_EINVAL, "%s: zero_stage: %d but %s gives stage %d", c->path, own,
                          ds >= 0 ? "deepspeed" : "fsdp", chosen);
    *stage = own >= 0 ? own : chosen >= 0 ? chosen : 0;
    static const char *fsdp_names[] = {"NO_SHARD", "", "SHARD_GRAD_OP", "FULL_SHARD"};
    if (ds >= 0)
        snprintf(label, n, "ZeRO-%d (deepspeed %s)", *stage, lmf_config_str(c, "deepspeed"));
    else if (fs >= 0)
        snprintf(label, n, "FSDP %s = ZeRO-%d", fsdp_names[*stage], *stage);
    else
        snprintf(label, n, *stage ? "ZeRO-%d" : "DDP", *stage);
    if (world == 1 && *stage > 0) {
        lmf_info("%s: one process, nothing to shard (ZeRO applies across ranks)", label);
        size_t k = strlen(label);
        snprintf(label + k, n - k, ", one process: nothing sharded");
    }
    return 0;
}
