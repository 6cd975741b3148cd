/* `lmforge train` on several ranks of this node: with nproc_per_node N > 1 (or NPROC_PER_NODE
 * in the environment, as LLaMA-Factory users set it for torchrun) and no launcher around the
 * process yet, it re-executes itself under OpenMPI's mpirun with N ranks, the cores split
 * between them (OMP_NUM_THREADS = cores / N unless `threads` is set). Under mpirun, srun or
 * another PMI launcher it runs as the rank it was started as. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "lmforge/core.h"
#include "lmforge/error.h"
#include "lmforge/launch_env.h"

int lmf_cli_launch_ranks(const lmf_config *c, int argc, char **argv) {
    lmf_launch_env e;
    int rc = lmf_launch_detect(&e);
    if (rc) return rc;
    if (e.kind == LMF_LAUNCH_MPIRUN || e.kind == LMF_LAUNCH_SRUN || e.kind == LMF_LAUNCH_PMI)
        return 0; /* already one rank of a job */
    int n = 1;
    if (lmf_config_is_set(c, "nproc_per_node")) {
        n = (int)lmf_config_int(c, "nproc_per_node");
    } else if (e.nproc_per_node >= 0) { /* NPROC_PER_NODE, parsed by lmf_launch_detect */
        if (e.nproc_per_node < 1 || e.nproc_per_node > 4096)
            return lmf_errorf(LMF_EINVAL,
                              "NPROC_PER_NODE=%d: expected a whole number of processes >= 1",
                              e.nproc_per_node);
        n = e.nproc_per_node;
    }
    if (n <= 1) return 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char threads[32], np[16];
    long per = lmf_config_is_set(c, "threads") ? (long)lmf_config_int(c, "threads")
                                               : (cores / n > 0 ? cores / n : 1);
    snprintf(threads, sizeof threads, "OMP_NUM_THREADS=%ld", per);
    snprintf(np, sizeof np, "%d", n);
    const char *fixed[] = {"mpirun",    "-np",  np,      "--oversubscribe",
                           "--bind-to", "none", "--mca", "mpi_yield_when_idle",
                           "1",         "-x",   threads};
    size_t nf = sizeof fixed / sizeof *fixed;
    char **args = calloc(nf + 2 + (size_t)argc + 2, sizeof *args);
    if (!args) return lmf_errorf(LMF_ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < nf; i++) args[k++] = (char *)fixed[i];
    if (geteuid() == 0) args[k++] = "--allow-run-as-root";
    static char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    self[len > 0 ? len : 0] = 0;
    args[k++] = len > 0 ? self : argv[0];
    args[k++] = "train";
    for (int i = 1; i < argc; i++) args[k++] = argv[i];
    args[k] = NULL;
    fprintf(stderr,
            "[lmforge info] nproc_per_node %d: starting %d ranks under mpirun, %ld threads each\n",
            n, n, per);
    fflush(NULL);
    execvp("mpirun", args);
    free(args);
    return lmf_errorf(LMF_EIO, "nproc_per_node %d: cannot start mpirun (install openmpi-bin)", n);
}
