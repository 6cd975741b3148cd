/* Shared between the dataset files in src/data: file reading and record conversion. */
#ifndef LMF_DATASET_INTERNAL_H
#define LMF_DATASET_INTERNAL_H

#include <cjson/cJSON.h>

#include "lmforge/dataset.h"

/* Reads a .json (array of objects, or JSON lines) or .jsonl file into a cJSON array of objects
 * the caller deletes. Errors name the dataset, the path and the line (and column). */
int dataset_read_file(const char *name, const char *path, cJSON **records);

/* Converts one raw record (index: its position in the file) into out.
 * Returns 0 when converted, 1 when the record is malformed and must be skipped (reason is
 * filled), or a negative LMF_E* code for a hard error (missing required column, wrong type). */
int dataset_convert(const lmf_dataset_attr *a, const cJSON *rec, int64_t index, int pt,
                    lmf_record *out, char *reason, size_t reason_size);

void dataset_record_free(lmf_record *r);

#endif
