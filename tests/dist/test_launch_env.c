/* lmf_launch_detect against hand-set environments: mpirun, srun, torchrun-style, nothing, and
 * malformed values named in the error. */
#include <stdlib.h>
#include <string.h>

#include "lmforge/core.h"
#include "lmforge/launch_env.h"
#include "test.h"

static const char *vars[] = {"OMPI_COMM_WORLD_SIZE",
                             "OMPI_COMM_WORLD_RANK",
                             "OMPI_COMM_WORLD_LOCAL_RANK",
                             "OMPI_COMM_WORLD_LOCAL_SIZE",
                             "SLURM_PROCID",
                             "SLURM_NTASKS",
                             "SLURM_LOCALID",
                             "SLURM_NTASKS_PER_NODE",
                             "PMIX_RANK",
                             "PMI_RANK",
                             "PMI_SIZE",
                             "WORLD_SIZE",
                             "RANK",
                             "LOCAL_RANK",
                             "LOCAL_WORLD_SIZE",
                             "NNODES",
                             "NODE_RANK",
                             "NPROC_PER_NODE",
                             "MASTER_ADDR",
                             "MASTER_PORT",
                             "SLURM_JOB_ID",
                             "SLURM_JOB_NUM_NODES",
                             "SLURM_CPUS_PER_TASK",
                             "SLURM_STEP_NUM_TASKS",
                             "LMF_UNDER_SRUN"};

static void clear(void) {
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
}

int main(void) {
    lmf_launch_env e;
    clear();
    CHECK(lmf_launch_detect(&e) == 0 && e.kind == LMF_LAUNCH_NONE && e.world_size == -1);

    setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    setenv("OMPI_COMM_WORLD_RANK", "3", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2", 1);
    setenv("SLURM_PROCID", "0", 1); /* mpirun inside an allocation: mpirun wins */
    CHECK(lmf_launch_detect(&e) == 0 && e.kind == LMF_LAUNCH_MPIRUN);
    CHECK(e.world_size == 4 && e.rank == 3 && e.local_rank == 1 && e.local_size == 2);
    CHECK(!strcmp(lmf_launch_kind_name(e.kind), "mpirun"));

    clear();
    setenv("SLURM_PROCID", "5", 1);
    setenv("SLURM_NTASKS", "8", 1);
    setenv("SLURM_LOCALID", "1", 1);
    setenv("SLURM_NTASKS_PER_NODE", "4", 1);
    CHECK(lmf_launch_detect(&e) == 0 && e.kind == LMF_LAUNCH_SRUN);
    CHECK(e.world_size == 8 && e.rank == 5 && e.local_rank == 1 && e.local_size == 4);
    setenv("SLURM_NTASKS_PER_NODE", "4(x2)", 1);
    CHECK(lmf_launch_detect(&e) == 0 && e.local_size == -1);

    clear();
    setenv("NNODES", "2", 1);
    setenv("NODE_RANK", "1", 1);
    setenv("MASTER_ADDR", "lmf-node0", 1);
    setenv("MASTER_PORT", "29500", 1);
    setenv("NPROC_PER_NODE", "2", 1);
    CHECK(lmf_launch_detect(&e) == 0 && e.kind == LMF_LAUNCH_TORCHRUN);
    CHECK(e.nnodes == 2 && e.node_rank == 1 && e.nproc_per_node == 2 && e.master_port == 29500);
    CHECK(!strcmp(e.master_addr, "lmf-node0") && e.world_size == -1);

    setenv("NODE_RANK", "abc", 1);
    CHECK(lmf_launch_detect(&e) == LMF_EINVAL && strstr(lmf_last_error(), "NODE_RANK=abc"));
    setenv("NODE_RANK", "2", 1);
    CHECK(lmf_launch_detect(&e) == LMF_EINVAL && strstr(lmf_last_error(), "NNODES=2"));
    clear();
    setenv("WORLD_SIZE", "2", 1);
    setenv("RANK", "2", 1);
    CHECK(lmf_launch_detect(&e) == LMF_EINVAL && strstr(lmf_last_error(), "world size 2"));
    /* an sbatch script of 8 tasks on 2 nodes: not yet under srun (the launcher re-runs itself
     * there); inside the srun step it is a rank */
    clear();
    setenv("SLURM_JOB_ID", "4711", 1);
    setenv("SLURM_NTASKS", "8", 1);
    setenv("SLURM_JOB_NUM_NODES", "2", 1);
    setenv("SLURM_CPUS_PER_TASK", "4", 1);
    setenv("SLURM_PROCID", "0", 1);
    CHECK(lmf_launch_detect(&e) == 0 && e.kind == LMF_LAUNCH_SLURM_ALLOC);
    CHECK(e.slurm_job_id == 4711 && e.slurm_ntasks == 8 && e.slurm_nodes == 2 &&
          e.slurm_cpus_per_task == 4);
    setenv("SLURM_STEP_NUM_TASKS", "8", 1);
    setenv("SLURM_PROCID", "6", 1);
    CHECK(lmf_launch_detect(&e) == 0 && e.kind == LMF_LAUNCH_SRUN && e.rank == 6);
    unsetenv("SLURM_STEP_NUM_TASKS");
    setenv("LMF_UNDER_SRUN", "1", 1); /* lmforge's own srun, whatever Slurm sets */
    CHECK(lmf_launch_detect(&e) == 0 && e.kind == LMF_LAUNCH_SRUN);
    unsetenv("LMF_UNDER_SRUN");
    setenv("SLURM_NTASKS", "1", 1); /* one task: nothing to start */
    setenv("SLURM_PROCID", "0", 1);
    CHECK(lmf_launch_detect(&e) == 0 && e.kind == LMF_LAUNCH_SRUN && e.world_size == 1);
    clear();
    return test_summary("test_launch_env");
}
