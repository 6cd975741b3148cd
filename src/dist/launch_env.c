/* Launch detection from the environment (see lmforge/launch_env.h). */
#include "lmforge/launch_env.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "lmforge/core.h"

/* -1 when unset; an error naming the variable when not a non-negative integer. */
static int read_int(const char *name, int *out, int *err) {
    *out = -1;
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (*end || errno || x < 0 || x > 1 << 30) {
        if (!*err) *err = lmf_errorf(LMF_EINVAL, "%s=%s: expected a non-negative integer", name, v);
        return 0;
    }
    *out = (int)x;
    return 1;
}

/* An sbatch script (or salloc shell) of several tasks: SLURM_JOB_ID and SLURM_NTASKS > 1, but
 * not one task of a multi-task srun step (srun sets SLURM_STEP_NUM_TASKS) nor of a PMI job. */
static int in_allocation_only(lmf_launch_env *e, int *err) {
    const char *job = getenv("SLURM_JOB_ID");
    int step_tasks;
    read_int("SLURM_NTASKS", &e->slurm_ntasks, err);
    read_int("SLURM_JOB_NUM_NODES", &e->slurm_nodes, err);
    read_int("SLURM_CPUS_PER_TASK", &e->slurm_cpus_per_task, err);
    e->slurm_job_id = job ? strtol(job, NULL, 10) : 0;
    read_int("SLURM_STEP_NUM_TASKS", &step_tasks, err);
    /* LMF_UNDER_SRUN: set by lmforge's own srun command, in case a Slurm lacks the variable */
    return job && *job && e->slurm_ntasks > 1 && step_tasks <= 1 && !getenv("PMIX_RANK") &&
           !getenv("PMI_RANK") && !getenv("LMF_UNDER_SRUN");
}

int lmf_launch_detect(lmf_launch_env *e) {
    int err = 0, x;
    *e = (lmf_launch_env){.kind = LMF_LAUNCH_NONE,
                          .world_size = -1,
                          .rank = -1,
                          .local_rank = -1,
                          .local_size = -1,
                          .slurm_ntasks = -1,
                          .slurm_nodes = -1,
                          .slurm_cpus_per_task = -1};
    read_int("NNODES", &e->nnodes, &err);
    read_int("NODE_RANK", &e->node_rank, &err);
    read_int("NPROC_PER_NODE", &e->nproc_per_node, &err);
    read_int("MASTER_PORT", &e->master_port, &err);
    const char *addr = getenv("MASTER_ADDR");
    snprintf(e->master_addr, sizeof e->master_addr, "%s", addr ? addr : "");
    if (read_int("OMPI_COMM_WORLD_SIZE", &e->world_size, &err)) {
        e->kind = LMF_LAUNCH_MPIRUN;
        read_int("OMPI_COMM_WORLD_RANK", &e->rank, &err);
        read_int("OMPI_COMM_WORLD_LOCAL_RANK", &e->local_rank, &err);
        read_int("OMPI_COMM_WORLD_LOCAL_SIZE", &e->local_size, &err);
    } else if (in_allocation_only(e, &err)) {
        e->kind = LMF_LAUNCH_SLURM_ALLOC;
    } else if (read_int("SLURM_PROCID", &e->rank, &err)) {
        e->kind = LMF_LAUNCH_SRUN;
        read_int("SLURM_NTASKS", &e->world_size, &err);
        read_int("SLURM_LOCALID", &e->local_rank, &err);
        /* SLURM_NTASKS_PER_NODE may read "2(x3)"; only a plain number is used */
        const char *v = getenv("SLURM_NTASKS_PER_NODE");
        char *end;
        if (v && (x = (int)strtol(v, &end, 10)) > 0 && !*end) e->local_size = x;
    } else if (read_int("PMIX_RANK", &e->rank, &err) || read_int("PMI_RANK", &e->rank, &err)) {
        e->kind = LMF_LAUNCH_PMI;
        read_int("PMI_SIZE", &e->world_size, &err);
    } else if (read_int("WORLD_SIZE", &e->world_size, &err) | read_int("RANK", &e->rank, &err) |
               (e->nnodes >= 0) | (addr != NULL)) {
        e->kind = LMF_LAUNCH_TORCHRUN;
        read_int("LOCAL_RANK", &e->local_rank, &err);
        read_int("LOCAL_WORLD_SIZE", &e->local_size, &err);
    }
    if (!err && e->nnodes >= 0 && e->node_rank >= e->nnodes)
        err = lmf_errorf(LMF_EINVAL, "NODE_RANK=%d: must be below NNODES=%d", e->node_rank,
                         e->nnodes);
    if (!err && e->world_size >= 0 && e->rank >= e->world_size)
        err =
            lmf_errorf(LMF_EINVAL, "rank %d from the %s environment is not below its world size %d",
                       e->rank, lmf_launch_kind_name(e->kind), e->world_size);
    return err;
}

const char *lmf_launch_kind_name(lmf_launch_kind k) {
    switch (k) {
    case LMF_LAUNCH_MPIRUN:
        return "mpirun";
    case LMF_LAUNCH_SRUN:
        return "srun";
    case LMF_LAUNCH_PMI:
        return "pmi";
    case LMF_LAUNCH_TORCHRUN:
        return "torchrun-style";
    case LMF_LAUNCH_SLURM_ALLOC:
        return "slurm allocation";
    default:
        return "none";
    }
}
