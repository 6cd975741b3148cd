/* Loading and validating the YAML configuration (see config.h). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "lmforge/core.h"

static int key_index(const char *name) {
    int n;
    const lmf_cfg_key *k = lmf_config_keys(&n);
    for (int i = 0; i < n; i++)
        if (!strcmp(k[i].name, name)) return i;
    return -1;
}

static int edit_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b), d[64][64];
    if (la > 63 || lb > 63) return 99;
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++)
        for (int j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]), del = d[i - 1][j] + 1,
                ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

static const char *nearest_key(const char *name) {
    int n, best = 1 << 30;
    const lmf_cfg_key *k = lmf_config_keys(&n);
    const char *bk = NULL;
    for (int i = 0; i < n; i++) {
        int d = edit_distance(name, k[i].name);
        if (d < best) best = d, bk = k[i].name;
    }
    return bk;
}

static int is_null(const char *s) {
    return !*s || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL") ||
           !strcmp(s, "~") || !strcmp(s, "None");
}

/* Range "lo..hi" or "lo.." checks for numbers; choices "a|b" for strings. */
static int check_choice(const lmf_cfg_key *k, const lmf_cfg_value *v, const char *where) {
    if (!k->choices) return 0;
    if (k->type == LMF_CFG_STR) {
        size_t n = strlen(v->str);
        for (const char *p = k->choices; p;) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            if (len == n && !strncmp(p, v->str, n)) return 0;
            p = bar ? bar + 1 : NULL;
        }
        return lmf_errorf(LMF_EINVAL, "%s: %s: \"%s\" is not one of %s", where, k->name, v->str,
                          k->choices);
    }
    const char *dots = strstr(k->choices, "..");
    double lo = strtod(k->choices, NULL), hi = dots && dots[2] ? strtod(dots + 2, NULL) : INFINITY;
    double x = k->type == LMF_CFG_INT ? (double)v->i : v->f;
    if (x < lo || x > hi)
        return lmf_errorf(LMF_ERANGE, "%s: %s: %g is outside %s", where, k->name, x, k->choices);
    return 0;
}

/* Parses text as the key's type into v. */
static int parse_value(const lmf_cfg_key *k, const char *text, int quoted, lmf_cfg_value *v,
                       const char *where) {
    char *end;
    free(v->str);
    memset(v, 0, sizeof *v);
    if (!quoted && is_null(text)) return 0; /* null: back to the default */
    v->set = 1;
    v->str = lmf_strdup(text);
    if (!v->str) return lmf_errorf(LMF_ENOMEM, "out of memory");
    switch (k->type) {
    case LMF_CFG_STR:
        break;
    case LMF_CFG_INT:
        errno = 0;
        v->i = strtoll(text, &end, 10);
        if (errno || *end || end == text) {
            /* YAML writes 1e3 or 1000.0 sometimes; accept whole floats */
            double f = strtod(text, &end);
            if (*end || f != floor(f) || fabs(f) > 9e15)
                return lmf_errorf(LMF_EINVAL, "%s: %s: expected an integer, got \"%s\"", where,
                                  k->name, text);
            v->i = (int64_t)f;
        }
        v->f = (double)v->i;
        break;
    case LMF_CFG_FLOAT:
        v->f = strtod(text, &end);
        if (*end || end == text || !isfinite(v->f))
            return lmf_errorf(LMF_EINVAL, "%s: %s: expected a number, got \"%s\"", where, k->name,
                              text);
        break;
    case LMF_CFG_BOOL:
        if (!strcmp(text, "true") || !strcmp(text, "True") || !strcmp(text, "yes") ||
            !strcmp(text, "on"))
            v->b = 1;
        else if (!strcmp(text, "false") || !strcmp(text, "False") || !strcmp(text, "no") ||
                 !strcmp(text, "off"))
            v->b = 0;
        else
            return lmf_errorf(LMF_EINVAL, "%s: %s: expected true or false, got \"%s\"", where,
                              k->name, text);
        break;
    }
    return check_choice(k, v, where);
}

static int set_key(lmf_config *c, const char *name, const char *text, int quoted,
                   const char *where) {
    int i = key_index(name);
    if (i < 0) {
        const char *near = nearest_key(name);
        return lmf_errorf(LMF_EINVAL, "%s: unknown key \"%s\" (did you mean \"%s\"?)", where, name,
                          near);
    }
    int n;
    const lmf_cfg_key *k = lmf_config_keys(&n);
    return parse_value(&k[i], text, quoted, &c->values[i], where);
}

static int load_yaml(lmf_config *c, const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return lmf_errorf(LMF_EIO, "%s: cannot open: %s", path, strerror(errno));
    yaml_parser_t p;
    yaml_event_t ev;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, fp);
    int rc = 0, depth = 0, done = 0;
    char *key = NULL;
    while (!done && !rc) {
        if (!yaml_parser_parse(&p, &ev)) {
            rc = lmf_errorf(LMF_EFORMAT, "%s: line %zu, column %zu: %s", path,
                            p.problem_mark.line + 1, p.problem_mark.column + 1,
                            p.problem ? p.problem : "invalid YAML");
            break;
        }
        size_t line = ev.start_mark.line + 1;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT:
            if (depth == 0 && ev.type == YAML_SEQUENCE_START_EVENT)
                rc = lmf_errorf(LMF_EFORMAT, "%s: line %zu: expected a mapping of key: value", path,
                                line);
            else if (depth >= 1)
                rc = lmf_errorf(LMF_EFORMAT, "%s: line %zu: %s: expected a single value, not a %s",
                                path, line, key ? key : "?",
                                ev.type == YAML_SEQUENCE_START_EVENT ? "list" : "mapping");
            depth++;
            break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT:
            depth--;
            break;
        case YAML_SCALAR_EVENT:
            if (depth == 0) {
                /* an empty file parses as one empty plain scalar */
                if (ev.data.scalar.length)
                    rc = lmf_errorf(LMF_EFORMAT, "%s: expected a mapping of key: value", path);
            } else if (!key) {
                key = lmf_strdup((const char *)ev.data.scalar.value);
            } else {
                char where[512];
                snprintf(where, sizeof where, "%s: line %zu", path, line);
                const char *text = (const char *)ev.data.scalar.value;
                /* a quoted "null" is a string, not null */
                int quoted = ev.data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                             ev.data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
                rc = set_key(c, key, text, quoted, where);
                free(key);
                key = NULL;
            }
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    free(key);
    yaml_parser_delete(&p);
    fclose(fp);
    return rc;
}

int lmf_config_load(lmf_config *c, const char *path, char **overrides, int n_overrides) {
    int n;
    lmf_config_keys(&n);
    memset(c, 0, sizeof *c);
    c->values = calloc((size_t)n, sizeof *c->values);
    if (!c->values) return lmf_errorf(LMF_ENOMEM, "out of memory");
    int rc = 0;
    if (path) {
        c->path = lmf_strdup(path);
        rc = load_yaml(c, path);
    }
    for (int i = 0; !rc && i < n_overrides; i++) {
        char *eq = strchr(overrides[i], '=');
        if (!eq || eq == overrides[i]) {
            rc = lmf_errorf(LMF_EINVAL, "argument \"%s\": expected key=value", overrides[i]);
            break;
        }
        *eq = 0;
        rc = set_key(c, overrides[i], eq + 1, 0, "command line");
        *eq = '=';
    }
    if (rc) lmf_config_free(c);
    return rc;
}

void lmf_config_free(lmf_config *c) {
    int n;
    lmf_config_keys(&n);
    for (int i = 0; c->values && i < n; i++) free(c->values[i].str);
    free(c->values);
    free(c->path);
    memset(c, 0, sizeof *c);
}

/* The key's value, or its parsed default. */
static lmf_cfg_value value_of(const lmf_config *c, const char *key) {
    int n, i = key_index(key);
    const lmf_cfg_key *k = lmf_config_keys(&n);
    lmf_cfg_value v = {0};
    if (i < 0) return v;
    if (c->values[i].set) return c->values[i];
    if (k[i].def) {
        v.str = (char *)k[i].def;
        v.i = strtoll(k[i].def, NULL, 10);
        v.f = strtod(k[i].def, NULL);
        v.b = !strcmp(k[i].def, "true");
    }
    return v;
}

const char *lmf_config_str(const lmf_config *c, const char *key) {
    return value_of(c, key).str;
}

int64_t lmf_config_int(const lmf_config *c, const char *key) {
    return value_of(c, key).i;
}

double lmf_config_float(const lmf_config *c, const char *key) {
    return value_of(c, key).f;
}

int lmf_config_bool(const lmf_config *c, const char *key) {
    return value_of(c, key).b;
}

int lmf_config_is_set(const lmf_config *c, const char *key) {
    int i = key_index(key);
    return i >= 0 && c->values[i].set;
}

void lmf_config_write_doc(FILE *fp) {
    static const char *types[] = {"string", "integer", "number", "bool"};
    int n;
    const lmf_cfg_key *k = lmf_config_keys(&n);
    fprintf(fp, "| key | type | default | allowed | meaning |\n| --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < n; i++)
        fprintf(fp, "| `%s` | %s | %s | %s | %s%s |\n", k[i].name, types[k[i].type],
                k[i].def ? k[i].def : "(unset)", k[i].choices ? k[i].choices : "", k[i].doc,
                k[i].accepted_only ? " (accepted, no effect)" : "");
}
