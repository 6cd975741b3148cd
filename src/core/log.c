/* Leveled logging to stderr; the threshold comes from LMF_LOG once. */
#include "lmforge/core.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int threshold(void) {
    static int level = -1;
    if (level < 0) {
        const char *s = getenv("LMF_LOG");
        level = LMF_LOG_INFO;
        if (s && !strcmp(s, "debug")) level = LMF_LOG_DEBUG;
        if (s && !strcmp(s, "warn")) level = LMF_LOG_WARN;
        if (s && !strcmp(s, "error")) level = LMF_LOG_ERROR;
    }
    return level;
}

void lmf_log(int level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warning", "error"};
    if (level < threshold()) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[lmforge %s] ", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
