/* One thread pool: OpenMP, shared with the GEMM library (OpenBLAS's OpenMP build or oneDNN,
 * both on libgomp), so no second spinning pool competes for the cores. */
#include "lmforge/core.h"

#include <omp.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int current_threads = 0;

void lmf_threads_set(int n) {
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0) n = 1;
    current_threads = n;
    omp_set_num_threads(n);
    omp_set_dynamic(0);
}

int lmf_threads_get(void) {
    return current_threads > 0 ? current_threads : omp_get_max_threads();
}

double lmf_time_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

size_t lmf_peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}
