/* Typed getters over cJSON that report the file and key on a type error. */
#ifndef LMFORGE_JSON_H
#define LMFORGE_JSON_H

#include <cjson/cJSON.h>
#include <stdint.h>

/* Parses text; on error the message names file, line and column. */
int lmf_json_parse(const char *text, size_t len, const char *file, cJSON **out);
/* Loads and parses a whole file. */
int lmf_json_load(const char *path, cJSON **out);
/* Writes dir/name as indented JSON, atomically (lmf_file_write_atomic). */
int lmf_json_save(const char *dir, const char *name, const cJSON *j);
/* Getters: return 1 if present and stored, 0 if absent or JSON null (out untouched),
 * negative with a message naming file and key if present with the wrong type. */
int lmf_json_get_int(const cJSON *obj, const char *key, const char *file, int64_t *out);
int lmf_json_get_num(const cJSON *obj, const char *key, const char *file, double *out);
int lmf_json_get_bool(const cJSON *obj, const char *key, const char *file, int *out);
int lmf_json_get_str(const cJSON *obj, const char *key, const char *file, const char **out);

#endif
