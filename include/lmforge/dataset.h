/* LLaMA-Factory datasets (dataset_info.json + local JSON/JSONL files) read into normalized
 * conversation records. No tokenisation here: templates and tokenizers consume lmf_record.
 *
 * Return codes: 0 on success, a negative LMF_E* code with lmf_last_error() naming the dataset,
 * file, record index and column otherwise. Malformed conversations (wrong role order, odd
 * message count, empty response) are skipped, counted and reported in one lmf_warn line per
 * dataset, as LLaMA-Factory drops them; missing required columns are hard errors. */
#ifndef LMFORGE_DATASET_H
#define LMFORGE_DATASET_H

#include <stdint.h>

/* ---- dataset_info.json ---- */

enum { LMF_FORMAT_ALPACA, LMF_FORMAT_SHAREGPT };

/* One dataset_info.json entry. Column/tag fields are NULL when the entry leaves them unset and
 * LLaMA-Factory has no default for them; defaults are filled in by lmf_dataset_info_load. */
typedef struct lmf_dataset_attr {
    char *name;
    char *file_name;    /* NULL for hub-only entries */
    const char *remote; /* "hf_hub_url" / "ms_hub_url" / ... when set (static string), else NULL */
    int formatting;     /* LMF_FORMAT_* */
    int ranking;
    int has_num_samples;
    /* columns */
    char *prompt, *query, *response, *history; /* alpaca */
    char *messages;                            /* sharegpt */
    char *system, *tools;
    char *images, *videos, *audios, *chosen, *rejected, *kto_tag;
    /* sharegpt tags */
    char *role_tag, *content_tag, *user_tag, *assistant_tag, *observation_tag, *function_tag,
        *system_tag;
} lmf_dataset_attr;

typedef struct lmf_dataset_info {
    int n;
    lmf_dataset_attr *items; /* in file order */
    char *path;              /* the dataset_info.json read */
} lmf_dataset_info;

/* Reads <dataset_dir>/dataset_info.json. Entries are type-checked here; whether an entry can
 * be loaded (local file, no images, not ranking) is decided when it is loaded. */
int lmf_dataset_info_load(const char *dataset_dir, lmf_dataset_info *out);
void lmf_dataset_info_free(lmf_dataset_info *info);
/* The entry called name, or NULL. */
const lmf_dataset_attr *lmf_dataset_info_find(const lmf_dataset_info *info, const char *name);

/* ---- records ---- */

typedef struct lmf_msg {
    const char *role; /* static string: "user", "assistant", "observation" or "function" */
    char *content;
} lmf_msg;

/* One normalized example. sft: msgs alternate user|observation (even positions) and
 * assistant|function (odd positions), n_msgs is even and >= 2, text is NULL.
 * pt: text is set, n_msgs == 0. */
typedef struct lmf_record {
    char *system; /* "" when none */
    char *tools;  /* JSON text of the tools column, "" when none */
    int n_msgs;
    lmf_msg *msgs;
    char *text;    /* pt stage only */
    char *dataset; /* name of the dataset it came from */
    int64_t index; /* 0-based record index within that dataset's file */
} lmf_record;

typedef struct lmf_record_set {
    int64_t n, cap;
    lmf_record *items; /* owned */
} lmf_record_set;

void lmf_record_set_free(lmf_record_set *s);
/* Seeded Fisher-Yates shuffle with lmf_rng: the same seed gives the same order. */
void lmf_record_set_shuffle(lmf_record_set *s, uint64_t seed);
/* Moves every record of all into train and eval (all is left empty). val_size in (0, 1) is a
 * fraction (eval gets ceil(val_size * n), as datasets.train_test_split), an integer >= 1 is a
 * count; both parts must end up non-empty. The split follows a seeded shuffle and both parts
 * keep the shuffled order. */
int lmf_record_set_split(lmf_record_set *all, double val_size, uint64_t seed, lmf_record_set *train,
                         lmf_record_set *eval);

/* ---- loading ---- */

typedef struct lmf_dataset_options {
    const char *dataset_dir;  /* holds dataset_info.json; NULL means "data" */
    const char *dataset;      /* "a,b": names from dataset_info.json */
    const char *stage;        /* "pt" or "sft"; NULL means "sft" */
    const char *mix_strategy; /* NULL or "concat" */
    int64_t max_samples;      /* <= 0: all; else the first N records of each dataset */
    double val_size;          /* 0: no eval split; see lmf_record_set_split */
    uint64_t seed;
} lmf_dataset_options;

/* Loads and concatenates the datasets in the order listed, then splits off eval when
 * val_size > 0 (eval may be NULL otherwise; it is left empty then). Without a split the records
 * keep file order. On error train and eval are left empty. */
int lmf_dataset_load(const lmf_dataset_options *o, lmf_record_set *train, lmf_record_set *eval);

/* Loads one entry of info (already looked up) and appends its records to out. stage as above. */
int lmf_dataset_load_one(const lmf_dataset_info *info, const lmf_dataset_attr *attr,
                         const char *stage, int64_t max_samples, lmf_record_set *out);

#endif
