/* Small helpers the C benches share: command-line options and greedy next-token choice. */
#ifndef LMF_BENCH_ARGS_H
#define LMF_BENCH_ARGS_H

#include <string.h>

/* The value after `name` on the command line, or def. */
static inline const char *bench_opt(int argc, char **argv, const char *name, const char *def) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return def;
}

/* Index of the largest of x[0..n) (the first on ties): greedy decoding. */
static inline int bench_argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

#endif
