/* How this process was launched, read from the environment: OpenMPI's mpirun
 * (OMPI_COMM_WORLD_*), Slurm's srun (SLURM_PROCID, SLURM_NTASKS, ...), a PMI/PMIx launcher,
 * torchrun-style variables (WORLD_SIZE/RANK/LOCAL_RANK as torchrun sets them; NNODES, NODE_RANK,
 * MASTER_ADDR, MASTER_PORT, NPROC_PER_NODE as LLaMA-Factory users set them), a Slurm allocation
 * outside srun (SLURM_JOB_ID with SLURM_NTASKS > 1 and no multi-task step: an sbatch script), or
 * nothing. Used by `lmforge env` and the training launcher (src/cli/launch.c). */
#ifndef LMFORGE_LAUNCH_ENV_H
#define LMFORGE_LAUNCH_ENV_H

typedef enum lmf_launch_kind {
    LMF_LAUNCH_NONE,        /* a plain process */
    LMF_LAUNCH_MPIRUN,      /* OpenMPI mpirun / mpiexec */
    LMF_LAUNCH_SRUN,        /* a Slurm job step */
    LMF_LAUNCH_PMI,         /* another PMI/PMIx launcher */
    LMF_LAUNCH_TORCHRUN,    /* torchrun-style variables only (no MPI launcher) */
    LMF_LAUNCH_SLURM_ALLOC, /* inside a Slurm allocation of several tasks, not yet under srun */
} lmf_launch_kind;

typedef struct lmf_launch_env {
    lmf_launch_kind kind;
    int world_size, rank, local_rank, local_size; /* -1 where the launcher does not say */
    /* torchrun-style variables, whatever the launcher (-1 / "" where unset) */
    int nnodes, node_rank, nproc_per_node, master_port;
    char master_addr[256];
    /* Slurm: SLURM_JOB_ID (0 when unset), SLURM_NTASKS, SLURM_JOB_NUM_NODES, SLURM_CPUS_PER_TASK
     * (-1 when unset) */
    long slurm_job_id;
    int slurm_ntasks, slurm_nodes, slurm_cpus_per_task;
} lmf_launch_env;

/* Reads the environment. A malformed number (NODE_RANK=abc, RANK=-3) is LMF_EINVAL with a
 * message naming the variable; *e is still filled with what could be read. */
int lmf_launch_detect(lmf_launch_env *e);
const char *lmf_launch_kind_name(lmf_launch_kind k); /* "mpirun", "srun", "pmi", ... */

#endif
