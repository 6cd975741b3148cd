/* lmforge env: what this build is and what it runs on (for bug reports and our own checks). */
#include <mpi.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "lmforge/core.h"
#include "lmforge/tensor.h"

static void cpu_features(char *out, size_t n) {
    static const char *wanted[] = {"avx2",        "fma",         "avx512f",  "avx512bw", "avx512vl",
                                   "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"};
    char model[256] = "unknown", line[8192];
    out[0] = 0;
    FILE *fp = fopen("/proc/cpuinfo", "r");
    int got_flags = 0;
    while (fp && fgets(line, sizeof line, fp)) {
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
            model[strcspn(model, "\n")] = 0;
        }
        if (!got_flags && !strncmp(line, "flags", 5)) {
            got_flags = 1;
            size_t k = snprintf(out, n, "%s:", model);
            for (size_t i = 0; i < sizeof wanted / sizeof *wanted && k < n; i++) {
                char pat[64];
                snprintf(pat, sizeof pat, " %s", wanted[i]);
                char *hit = strstr(line, pat);
                if (hit && (hit[strlen(pat)] == ' ' || hit[strlen(pat)] == '\n'))
                    k += snprintf(out + k, n - k, " %s", wanted[i]);
            }
        }
    }
    if (fp) fclose(fp);
    if (!got_flags) snprintf(out, n, "%s", model);
}

int lmf_cmd_env(int argc, char **argv) {
    (void)argc;
    (void)argv;
    lmf_cli_threads(0);
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(mpi, &len);
    mpi[strcspn(mpi, "\n,")] = 0;
    char cpu[1024];
    cpu_features(cpu, sizeof cpu);
    printf("lmforge:      %s\n", LMF_VERSION);
    printf("build:        %s, %s%s, gcc %s\n", LMF_BUILD_TYPE, LMF_BUILD_FLAGS,
           LMF_BUILD_SANITIZE ? " + ASan/UBSan" : "", __VERSION__);
    printf("GEMM:         %s\n", lmf_gemm_library());
    printf("MPI:          %s (launch: %s)\n", mpi,
           getenv("OMPI_COMM_WORLD_SIZE") ? "under mpirun"
           : getenv("SLURM_PROCID")       ? "under srun"
                                          : "single process");
    printf("CPU:          %s\n", cpu);
    printf("cores:        %ld online\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf(
        "threads:      %d (OpenMP, shared with the GEMM library; OMP_NUM_THREADS or --threads)\n",
        lmf_threads_get());
    printf("backends:     cpu, ref\n");
    return 0;
}
