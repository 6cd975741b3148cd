/* Error codes and messages shared by every lmforge layer.
 * Library functions return 0 or a negative LMF_E* code and record a message naming the file,
 * key or field concerned with lmf_errorf(); the CLI prints lmf_last_error() and exits non-zero. */
#ifndef LMFORGE_ERROR_H
#define LMFORGE_ERROR_H

#include <stdarg.h>

#define LMF_ERROR_TABLE(X)                                                                         \
    X(LMF_EINVAL, -1, "invalid argument")                                                          \
    X(LMF_ENOMEM, -2, "out of memory")                                                             \
    X(LMF_EIO, -3, "input/output error")                                                           \
    X(LMF_EFORMAT, -4, "malformed file")                                                           \
    X(LMF_EUNSUPPORTED, -5, "not supported")                                                       \
    X(LMF_ENOENT, -6, "not found")                                                                 \
    X(LMF_ERANGE, -7, "value out of range")                                                        \
    X(LMF_ESHAPE, -8, "shape mismatch")

enum {
    LMF_OK = 0,
#define LMF_ERROR_ENUM(name, value, text) name = value,
    LMF_ERROR_TABLE(LMF_ERROR_ENUM)
#undef LMF_ERROR_ENUM
};

/* Short description of a code ("invalid argument"); "unknown error" for others. */
const char *lmf_strerror(int code);

/* Records a printf-style message for the calling thread and returns code, so that
 * `return lmf_errorf(LMF_EFORMAT, "%s: header too long", path);` reads naturally. */
int lmf_errorf(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with "prefix: " (adds context while an error travels up). */
int lmf_error_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The calling thread's last message ("" when none). */
const char *lmf_last_error(void);

void lmf_error_clear(void);

#endif
