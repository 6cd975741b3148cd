/* Error table and the per-thread message buffer behind lmf_errorf(). */
#include "lmforge/error.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char last_message[1024];

const char *lmf_strerror(int code) {
    switch (code) {
    case LMF_OK:
        return "ok";
#define LMF_ERROR_CASE(name, value, text)                                                          \
    case name:                                                                                     \
        return text;
        LMF_ERROR_TABLE(LMF_ERROR_CASE)
#undef LMF_ERROR_CASE
    }
    return "unknown error";
}

int lmf_errorf(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    return code;
}

int lmf_error_prefix(int code, const char *fmt, ...) {
    char prefix[512], old[sizeof last_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_message, sizeof old);
    /* Truncation is acceptable for an error message; build it piecewise to say so. */
    size_t k = strlen(prefix);
    if (k > sizeof last_message - 3) k = sizeof last_message - 3;
    memcpy(last_message, prefix, k);
    last_message[k++] = ':';
    last_message[k++] = ' ';
    const char *rest = old[0] ? old : lmf_strerror(code);
    size_t r = strlen(rest);
    if (r > sizeof last_message - 1 - k) r = sizeof last_message - 1 - k;
    memcpy(last_message + k, rest, r);
    last_message[k + r] = 0;
    return code;
}

const char *lmf_last_error(void) {
    return last_message;
}

void lmf_error_clear(void) {
    last_message[0] = 0;
}
