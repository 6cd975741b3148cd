/* The YAML configuration every lmforge command reads, with LLaMA-Factory's keys: a table of
 * known keys (type, default, range, documentation), loaded from a file plus key=value
 * overrides, validated (types, ranges, choices); an unknown key is an error naming the nearest
 * known one. Commands read values by key name. */
#ifndef LMF_CLI_CONFIG_H
#define LMF_CLI_CONFIG_H

#include <stdint.h>
#include <stdio.h>

typedef enum lmf_cfg_type { LMF_CFG_STR, LMF_CFG_INT, LMF_CFG_FLOAT, LMF_CFG_BOOL } lmf_cfg_type;

typedef struct lmf_cfg_key {
    const char *name;
    lmf_cfg_type type;
    const char *def;     /* default as text; NULL = unset */
    const char *choices; /* "a|b|c" for strings, or "lo..hi" for numbers; NULL = any */
    const char *doc;
    int accepted_only; /* accepted for LLaMA-Factory compatibility, no effect here */
} lmf_cfg_key;

typedef struct lmf_cfg_value {
    int set; /* given in the file or an override (else the default applies) */
    char *str;
    int64_t i;
    double f;
    int b;
} lmf_cfg_value;

typedef struct lmf_config {
    char *path;
    lmf_cfg_value *values; /* one per key of the table */
} lmf_config;

const lmf_cfg_key *lmf_config_keys(int *n);
/* Loads path (NULL for none) and applies overrides ("key=value"). */
int lmf_config_load(lmf_config *c, const char *path, char **overrides, int n_overrides);
void lmf_config_free(lmf_config *c);
/* Values (the default when unset). Unknown names are a programming error: NULL / 0. */
const char *lmf_config_str(const lmf_config *c, const char *key);
int64_t lmf_config_int(const lmf_config *c, const char *key);
double lmf_config_float(const lmf_config *c, const char *key);
int lmf_config_bool(const lmf_config *c, const char *key);
int lmf_config_is_set(const lmf_config *c, const char *key);
/* Markdown table of every key for docs/config.md. */
void lmf_config_write_doc(FILE *fp);

#endif
