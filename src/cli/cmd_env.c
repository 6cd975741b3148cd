/* lmforge env: what this build is and what it runs on (for bug reports and our own checks). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "lmforge/comm.h"
#include "lmforge/core.h"
#include "lmforge/launch_env.h"
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

/* What `lmforge train` would do from this environment (launch.c decides the same way). */
static void print_plan(const lmf_launch_env *e) {
    switch (e->kind) {
    case LMF_LAUNCH_MPIRUN:
    case LMF_LAUNCH_SRUN:
    case LMF_LAUNCH_PMI:
        printf("train:        runs as rank %d of %d\n", e->rank, e->world_size);
        return;
    case LMF_LAUNCH_SLURM_ALLOC:
        printf("train:        re-runs itself under srun --ntasks=%d (Slurm job %ld, %d node(s))\n",
               e->slurm_ntasks, e->slurm_job_id, e->slurm_nodes);
        return;
    default:
        break;
    }
    if (e->nnodes > 1 && e->node_rank == 0)
        printf("train:        node 0 of %d: waits on port %d for the other nodes, then runs "
               "mpirun over all of them\n",
               e->nnodes, e->master_port > 0 ? e->master_port : 29500);
    else if (e->nnodes > 1)
        printf("train:        node %d of %d: joins node 0 at %s:%d and runs what its mpirun "
               "asks\n",
               e->node_rank, e->nnodes, e->master_addr[0] ? e->master_addr : "(MASTER_ADDR unset)",
               e->master_port > 0 ? e->master_port : 29500);
    else if (e->nproc_per_node > 1)
        printf("train:        mpirun -np %d on this node (NPROC_PER_NODE)\n", e->nproc_per_node);
    else
        printf("train:        one process (nproc_per_node, hostfile or NNODES start more)\n");
}

static void print_launch(const lmf_launch_env *e, int rc) {
    static const char *how[] = {
        "none (a single process; mpirun, srun or NPROC_PER_NODE start more)",
        "mpirun (OMPI_COMM_WORLD_*)",
        "srun (SLURM_PROCID, SLURM_NTASKS)",
        "PMI/PMIx launcher",
        "torchrun-style variables",
        "Slurm allocation outside srun (SLURM_JOB_ID, SLURM_NTASKS > 1)"};
    printf("launch:       %s\n", how[e->kind]);
    if (e->world_size >= 0 || e->rank >= 0) {
        printf("world:        rank %d of %d", e->rank, e->world_size);
        if (e->local_rank >= 0) printf(", local rank %d", e->local_rank);
        if (e->local_size >= 0) printf(" of %d on this node", e->local_size);
        printf("\n");
    }
    if (e->nnodes >= 0 || e->node_rank >= 0 || e->master_addr[0] || e->nproc_per_node >= 0)
        printf("torchrun env: NNODES=%d NODE_RANK=%d NPROC_PER_NODE=%d MASTER_ADDR=%s "
               "MASTER_PORT=%d (-1: unset)\n",
               e->nnodes, e->node_rank, e->nproc_per_node,
               e->master_addr[0] ? e->master_addr : "(unset)", e->master_port);
    if (rc)
        printf("launch error: %s\n", lmf_last_error());
    else
        print_plan(e);
}

int lmf_cmd_env(int argc, char **argv) {
    (void)argc;
    (void)argv;
    lmf_cli_threads(0);
    char mpi[256];
    lmf_comm_library_version(mpi, sizeof mpi);
    lmf_launch_env le;
    int le_rc = lmf_launch_detect(&le);
    char cpu[1024];
    cpu_features(cpu, sizeof cpu);
    printf("lmforge:      %s\n", LMF_VERSION);
    printf("build:        %s, %s%s, gcc %s\n", LMF_BUILD_TYPE, LMF_BUILD_FLAGS,
           LMF_BUILD_SANITIZE ? " + ASan/UBSan" : "", __VERSION__);
    printf("GEMM:         %s\n", lmf_gemm_library());
    printf("MPI:          %s\n", mpi);
    print_launch(&le, le_rc);
    printf("CPU:          %s\n", cpu);
    printf("cores:        %ld online\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf(
        "threads:      %d (OpenMP, shared with the GEMM library; OMP_NUM_THREADS or --threads)\n",
        lmf_threads_get());
    printf("backends:     cpu, ref\n");
    return 0;
}
