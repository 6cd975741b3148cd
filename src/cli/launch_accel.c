/* accelerate config files, as `accelerate config` writes them and LLaMA-Factory's docs use
 * them (accelerate launch --config_file fsdp_config.yaml ...), read by
 * `lmforge train cfg.yaml --launch-config FILE` (launch.h; the mapping table is in
 * docs/distributed.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config.h"
#include "launch.h"
#include "lmforge/core.h"

typedef struct field {
    char key[400]; /* "num_processes", "fsdp_config.fsdp_sharding_strategy" */
    char val[1024];
    int line;
} field;

typedef struct fields {
    field *v;
    int n, cap;
} fields;

static int add_field(fields *f, const char *key, const char *val, int line) {
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 32;
        field *v = realloc(f->v, (size_t)cap * sizeof *v);
        if (!v) return lmf_errorf(LMF_ENOMEM, "out of memory");
        f->v = v, f->cap = cap;
    }
    field *x = &f->v[f->n++];
    snprintf(x->key, sizeof x->key, "%s", key);
    snprintf(x->val, sizeof x->val, "%s", val);
    x->line = line;
    return 0;
}

/* The YAML as dotted keys; a list becomes its items joined by commas. */
static int read_fields(const char *path, fields *f) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return lmf_errorf(LMF_EIO, "launch config %s: cannot open: %s", path, strerror(errno));
    yaml_parser_t p;
    yaml_event_t ev;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, fp);
    char keys[8][160], list[1024] = "";
    int depth = 0, want_key[8] = {0}, in_list = 0, list_line = 0, rc = 0, done = 0;
    while (!done && !rc) {
        if (!yaml_parser_parse(&p, &ev)) {
            rc = lmf_errorf(LMF_EFORMAT, "%s:%zu: %s", path, p.problem_mark.line + 1,
                            p.problem ? p.problem : "invalid YAML");
            break;
        }
        int line = (int)ev.start_mark.line + 1;
        char full[200] = "";
        for (int i = 0; i + 1 < depth && depth <= 8; i++)
            snprintf(full + strlen(full), sizeof full - strlen(full), "%s%s", i ? "." : "",
                     keys[i]);
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_MAPPING_START_EVENT:
            if (in_list || depth >= 8) {
                rc = lmf_errorf(LMF_EFORMAT, "%s:%d: %s: nested deeper than expected", path, line,
                                full);
                break;
            }
            want_key[depth++] = 1;
            break;
        case YAML_MAPPING_END_EVENT:
            depth--;
            if (depth > 0) want_key[depth - 1] = 1;
            break;
        case YAML_SEQUENCE_START_EVENT:
            in_list = 1, list[0] = 0, list_line = line;
            break;
        case YAML_SEQUENCE_END_EVENT:
            in_list = 0;
            if (depth > 0) {
                char k[400];
                snprintf(k, sizeof k, "%s%s%s", full, depth > 1 ? "." : "", keys[depth - 1]);
                rc = add_field(f, k, list, list_line);
                want_key[depth - 1] = 1;
            }
            break;
        case YAML_SCALAR_EVENT: {
            const char *s = (const char *)ev.data.scalar.value;
            if (depth == 0) {
                if (*s)
                    rc = lmf_errorf(LMF_EFORMAT, "%s: expected a mapping of field: value", path);
            } else if (in_list) {
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                         list[0] ? "," : "", s);
            } else if (want_key[depth - 1]) {
                snprintf(keys[depth - 1], sizeof keys[0], "%s", s);
                want_key[depth - 1] = 0;
            } else {
                char k[400];
                snprintf(k, sizeof k, "%s%s%s", full, depth > 1 ? "." : "", keys[depth - 1]);
                rc = add_field(f, k, s, line);
                want_key[depth - 1] = 1;
            }
            break;
        }
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    fclose(fp);
    return rc;
}

/* Fields that mean nothing without GPUs, TPUs or a particular PyTorch feature: accepted and
 * listed once in a notice. Prefixes end with '.' (whole sections) or '*'. */
static const char *accepted[] = {"gpu_ids",
                                 "downcast_bf16",
                                 "use_cpu",
                                 "debug",
                                 "enable_cpu_affinity",
                                 "main_training_function",
                                 "rdzv_backend",
                                 "same_network",
                                 "compute_environment",
                                 "dynamo_config.",
                                 "ipex_config.",
                                 "fp8_config.",
                                 "megatron_lm_config.",
                                 "tpu_*",
                                 "mpirun_config.mpirun_ccl",
                                 "commands",
                                 "command_file",
                                 "fsdp_config.fsdp_*",
                                 "deepspeed_config.offload_optimizer_device",
                                 "deepspeed_config.offload_param_device",
                                 "deepspeed_config.zero3_init_flag",
                                 "deepspeed_config.zero3_save_16bit_model",
                                 "deepspeed_config.deepspeed_multinode_launcher",
                                 "deepspeed_config.deepspeed_moe_layer_cls_names",
                                 "deepspeed_config.offload_*"};

static int is_accepted(const char *key) {
    for (size_t i = 0; i < sizeof accepted / sizeof *accepted; i++) {
        size_t n = strlen(accepted[i]);
        char last = accepted[i][n - 1];
        if (last == '.' || last == '*' ? !strncmp(key, accepted[i], n - (last == '*'))
                                       : !strcmp(key, accepted[i]))
            return 1;
    }
    return 0;
}

static const field *get(const fields *f, const char *key) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->v[i].key, key)) return &f->v[i];
    return NULL;
}

static int get_int(const char *path, const fields *f, const char *key, int lo, int def, int *out) {
    const field *x = get(f, key);
    *out = def;
    if (!x) return 0;
    char *end;
    long v = strtol(x->val, &end, 10);
    if (!x->val[0] || *end || v < lo || v > 1 << 20)
        return lmf_errorf(LMF_EINVAL, "%s:%d: %s: expected a whole number >= %d, got \"%s\"", path,
                          x->line, key, lo, x->val);
    *out = (int)v;
    return 0;
}

static int add_env(lmf_accel *a, const char *name, const char *fmt, const char *val) {
    char buf[1100];
    snprintf(buf, sizeof buf, fmt, val);
    return lmf_argv_addf(&a->env, "%s=%s", name, buf);
}

/* FSDP's sharding strategies, by name or by accelerate's number. */
static int fsdp_strategy(const char *path, const field *x, const char **out) {
    static const char *names[][2] = {
        {"FULL_SHARD", "full_shard"}, {"SHARD_GRAD_OP", "shard_grad_op"}, {"NO_SHARD", "no_shard"}};
    *out = "full_shard"; /* accelerate's default */
    if (!x) return 0;
    for (int i = 0; i < 3; i++)
        if (!strcmp(x->val, names[i][0]) || (x->val[0] == '1' + i && !x->val[1])) {
            *out = names[i][1];
            return 0;
        }
    return lmf_errorf(LMF_EUNSUPPORTED,
                      "%s:%d: fsdp_config.fsdp_sharding_strategy: %s is not available (lmforge "
                      "has FULL_SHARD, SHARD_GRAD_OP and NO_SHARD; HYBRID_SHARD* shard within a "
                      "node only)",
                      path, x->line, x->val);
}

static int map_fields(const char *path, const fields *f, lmf_accel *a) {
    static const char *known[] = {"distributed_type",
                                  "num_machines",
                                  "num_processes",
                                  "machine_rank",
                                  "main_process_ip",
                                  "main_process_port",
                                  "mixed_precision",
                                  "num_cpu_threads_per_process",
                                  "fsdp_config.fsdp_sharding_strategy",
                                  "deepspeed_config.zero_stage",
                                  "deepspeed_config.deepspeed_config_file",
                                  "deepspeed_config.gradient_accumulation_steps",
                                  "deepspeed_config.gradient_clipping",
                                  "deepspeed_config.deepspeed_hostfile",
                                  "mpirun_config.mpirun_hostfile"};
    size_t nk = 0;
    for (int i = 0; i < f->n; i++) {
        const field *x = &f->v[i];
        int used = 0;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++) used |= !strcmp(x->key, known[k]);
        if (used) continue;
        if (!is_accepted(x->key))
            return lmf_errorf(LMF_EINVAL,
                              "%s:%d: unknown accelerate field \"%s\" (see docs/distributed.md "
                              "for the fields lmforge reads)",
                              path, x->line, x->key);
        if (!strcmp(x->key, "compute_environment") && strcmp(x->val, "LOCAL_MACHINE"))
            return lmf_errorf(LMF_EUNSUPPORTED,
                              "%s:%d: compute_environment: %s: only LOCAL_MACHINE", path, x->line,
                              x->val);
        if (!strcmp(x->key, "compute_environment")) continue;
        nk += (size_t)snprintf(a->notice + nk, nk < sizeof a->notice ? sizeof a->notice - nk : 0,
                               "%s%s", nk ? ", " : "", x->key);
        if (nk >= sizeof a->notice) nk = sizeof a->notice - 1;
    }
    const field *dt = get(f, "distributed_type");
    const char *type = dt ? dt->val : "NO";
    int is_dist = !strcmp(type, "MULTI_CPU") || !strcmp(type, "MULTI_GPU") ||
                  !strcmp(type, "FSDP") || !strcmp(type, "DEEPSPEED");
    if (!is_dist && strcmp(type, "NO"))
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s:%d: distributed_type: %s is not available (lmforge reads NO, "
                          "MULTI_CPU, MULTI_GPU, FSDP and DEEPSPEED)",
                          path, dt ? dt->line : 0, type);
    int machines, procs, mrank, port, rc;
    if ((rc = get_int(path, f, "num_machines", 1, 1, &machines)) ||
        (rc = get_int(path, f, "num_processes", 1, 1, &procs)) ||
        (rc = get_int(path, f, "machine_rank", 0, 0, &mrank)) ||
        (rc = get_int(path, f, "main_process_port", 1, 29500, &port)))
        return rc;
    if (!is_dist) machines = procs = 1;
    if (procs % machines) {
        const field *x = get(f, "num_processes");
        return lmf_errorf(LMF_EINVAL,
                          "%s:%d: num_processes: %d processes do not split evenly over "
                          "num_machines %d (num_processes counts all machines' processes)",
                          path, x ? x->line : 0, procs, machines);
    }
    if (mrank >= machines)
        return lmf_errorf(LMF_EINVAL, "%s:%d: machine_rank %d is not below num_machines %d", path,
                          get(f, "machine_rank")->line, mrank, machines);
    rc = lmf_argv_addf(&a->overrides, "nproc_per_node=%d", procs / machines);
    const field *hf = get(f, "mpirun_config.mpirun_hostfile");
    if (!hf) hf = get(f, "deepspeed_config.deepspeed_hostfile");
    if (!rc && hf && is_dist) {
        rc = lmf_argv_addf(&a->overrides, "hostfile=%s", hf->val);
    } else if (!rc && machines > 1) {
        const field *ip = get(f, "main_process_ip");
        if (!ip)
            return lmf_errorf(LMF_EINVAL,
                              "%s: num_machines %d needs main_process_ip (machine 0's "
                              "address)",
                              path, machines);
        char num[32];
        snprintf(num, sizeof num, "%d", machines);
        rc = add_env(a, "NNODES", "%s", num);
        snprintf(num, sizeof num, "%d", mrank);
        if (!rc) rc = add_env(a, "NODE_RANK", "%s", num);
        if (!rc) rc = add_env(a, "MASTER_ADDR", "%s", ip->val);
        snprintf(num, sizeof num, "%d", port);
        if (!rc) rc = add_env(a, "MASTER_PORT", "%s", num);
    }
    const field *mp = get(f, "mixed_precision");
    if (!rc && mp) {
        if (!strcmp(mp->val, "bf16") || !strcmp(mp->val, "no"))
            rc =
                lmf_argv_addf(&a->overrides, "bf16=%s", strcmp(mp->val, "bf16") ? "false" : "true");
        else
            return lmf_errorf(LMF_EUNSUPPORTED,
                              "%s:%d: mixed_precision: %s needs a GPU; on CPU use bf16 or no", path,
                              mp->line, mp->val);
    }
    int threads;
    if (!rc && !(rc = get_int(path, f, "num_cpu_threads_per_process", 1, 0, &threads)) && threads)
        rc = lmf_argv_addf(&a->overrides, "threads=%d", threads);
    if (!rc && !strcmp(type, "FSDP")) {
        const char *s;
        rc = fsdp_strategy(path, get(f, "fsdp_config.fsdp_sharding_strategy"), &s);
        if (!rc) rc = lmf_argv_addf(&a->overrides, "fsdp=%s", s);
    }
    if (!rc && !strcmp(type, "DEEPSPEED")) {
        const field *file = get(f, "deepspeed_config.deepspeed_config_file");
        int stage, ga;
        if (file) rc = lmf_argv_addf(&a->overrides, "deepspeed=%s", file->val);
        if (!rc && !(rc = get_int(path, f, "deepspeed_config.zero_stage", 0, -1, &stage)) &&
            stage >= 0) {
            if (stage > 3)
                return lmf_errorf(LMF_EINVAL, "%s:%d: deepspeed_config.zero_stage: %d is not 0..3",
                                  path, get(f, "deepspeed_config.zero_stage")->line, stage);
            if (!file) rc = lmf_argv_addf(&a->overrides, "zero_stage=%d", stage);
        }
        if (!rc &&
            !(rc = get_int(path, f, "deepspeed_config.gradient_accumulation_steps", 1, 0, &ga)) &&
            ga)
            rc = lmf_argv_addf(&a->overrides, "gradient_accumulation_steps=%d", ga);
        const field *clip = get(f, "deepspeed_config.gradient_clipping");
        if (!rc && clip) rc = lmf_argv_addf(&a->overrides, "max_grad_norm=%s", clip->val);
    }
    return rc;
}

int lmf_accel_load(const char *path, lmf_accel *a) {
    memset(a, 0, sizeof *a);
    fields f = {0};
    int rc = read_fields(path, &f);
    if (!rc) rc = map_fields(path, &f, a);
    free(f.v);
    if (rc) lmf_accel_free(a);
    return rc;
}

void lmf_accel_free(lmf_accel *a) {
    lmf_argv_free(&a->overrides);
    lmf_argv_free(&a->env);
}

/* A launch-config setting the training config (or command line) gives otherwise is an error;
 * an equal one is dropped. */
static int merge_override(const lmf_config *c, const lmf_config *lc, const char *kv,
                          const char *lpath, lmf_argv *out) {
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)strcspn(kv, "="), kv);
    if (!lmf_config_is_set(c, key)) return lmf_argv_add(out, kv);
    int n, same = 1;
    const lmf_cfg_key *k = lmf_config_keys(&n);
    for (int i = 0; i < n; i++)
        if (!strcmp(k[i].name, key)) {
            if (k[i].type == LMF_CFG_STR)
                same = !strcmp(lmf_config_str(c, key), lmf_config_str(lc, key));
            else if (k[i].type == LMF_CFG_BOOL)
                same = lmf_config_bool(c, key) == lmf_config_bool(lc, key);
            else
                same = lmf_config_float(c, key) == lmf_config_float(lc, key);
        }
    if (same) return 0;
    return lmf_errorf(LMF_EINVAL, "launch config %s gives %s, but %s sets %s: %s; make them agree",
                      lpath, kv, c->path ? c->path : "the command line", key,
                      lmf_config_str(c, key));
}

int lmf_accel_apply(int argc, char **argv, lmf_argv *out) {
    memset(out, 0, sizeof *out);
    const char *lpath = NULL;
    lmf_argv rest = {0};
    int rc = 0;
    for (int i = 0; !rc && i < argc; i++) {
        if (!strcmp(argv[i], "--launch-config") || !strncmp(argv[i], "--launch-config=", 16)) {
            if (argv[i][15] == '=')
                lpath = argv[i] + 16;
            else if (i + 1 < argc)
                lpath = argv[++i];
            else
                rc = lmf_errorf(LMF_EINVAL, "--launch-config needs a file (an accelerate config)");
        } else {
            rc = lmf_argv_add(&rest, argv[i]);
        }
    }
    if (rc || !lpath || rest.n < 2) {
        if (!rc) rc = lmf_argv_add_all(out, &rest);
        lmf_argv_free(&rest);
        return rc;
    }
    lmf_accel a;
    lmf_config c = {0}, lc = {0};
    rc = lmf_accel_load(lpath, &a);
    if (!rc && (rc = lmf_config_load(&c, rest.v[1], rest.v + 2, rest.n - 2))) lmf_accel_free(&a);
    if (rc) {
        lmf_argv_free(&rest);
        return rc;
    }
    lmf_argv mine = {0};
    rc = lmf_argv_add_all(&mine, &a.overrides); /* lmf_config_load edits its overrides */
    if (!rc) rc = lmf_config_load(&lc, NULL, mine.v, mine.n);
    if (rc) lmf_error_prefix(rc, "launch config %s", lpath);
    lmf_argv_free(&mine);
    if (!rc) rc = lmf_argv_add(out, rest.v[0]);
    if (!rc) rc = lmf_argv_add(out, rest.v[1]);
    for (int i = 0; !rc && i < a.overrides.n; i++)
        rc = merge_override(&c, &lc, a.overrides.v[i], lpath, out);
    for (int i = 2; !rc && i < rest.n; i++) rc = lmf_argv_add(out, rest.v[i]);
    char shown[1024] = "";
    for (int i = 0; !rc && i < a.env.n; i++) {
        char *eq = strchr(a.env.v[i], '=');
        *eq = 0;
        if (!getenv(a.env.v[i])) setenv(a.env.v[i], eq + 1, 1);
        snprintf(shown + strlen(shown), sizeof shown - strlen(shown), " %s=%s", a.env.v[i],
                 getenv(a.env.v[i]));
        *eq = '=';
    }
    if (!rc) {
        char ov[1024];
        lmf_argv_format(&a.overrides, ov, sizeof ov);
        lmf_info("launch config %s: %s%s", lpath, ov, shown);
        if (a.notice[0])
            lmf_info("launch config %s: accepted without effect on CPU: %s", lpath, a.notice);
    }
    lmf_config_free(&c);
    if (lc.values) lmf_config_free(&lc);
    lmf_accel_free(&a);
    lmf_argv_free(&rest);
    if (rc) lmf_argv_free(out);
    return rc;
}
