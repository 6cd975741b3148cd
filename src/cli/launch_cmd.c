/* The command lines that start a job's ranks (training, or tensor-parallel serving): OpenMPI's
 * mpirun (one node, a hostfile, or the nodes of a NNODES rendezvous) and Slurm's srun (see
 * launch.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launch.h"
#include "lmforge/core.h"

/* Variables the ranks on other nodes need too (ssh does not carry our environment there). */
static const char *forwarded[] = {"LMF_RESTART_COUNT", "LMF_TEST_KILL_RANK_AT", "LMF_LOG",
                                  "LMF_COMM_ABORT_GRACE"};

int lmf_launch_mpirun_argv(const lmf_launch_cmd *c, const char *self, const lmf_argv *args,
                           lmf_argv *out) {
    int rc = lmf_argv_add(out, "mpirun");
    if (!rc) rc = lmf_argv_addf(out, "-np");
    if (!rc) rc = lmf_argv_addf(out, "%d", c->ranks);
    if (!rc && c->hostfile) {
        rc = lmf_argv_add(out, "--hostfile");
        if (!rc) rc = lmf_argv_add(out, c->hostfile);
        if (!rc && c->per_node > 0) {
            rc = lmf_argv_add(out, "--npernode");
            if (!rc) rc = lmf_argv_addf(out, "%d", c->per_node);
        }
    } else if (!rc) {
        /* one node: more ranks than cores is allowed, and OpenMPI's own waits then yield */
        rc = lmf_argv_add(out, "--oversubscribe");
        if (!rc) rc = lmf_argv_add_words(out, "--mca mpi_yield_when_idle 1");
    }
    if (!rc) rc = lmf_argv_add_words(out, "--bind-to none -x");
    if (!rc) rc = lmf_argv_addf(out, "OMP_NUM_THREADS=%ld", c->threads);
    for (size_t i = 0; !rc && i < sizeof forwarded / sizeof *forwarded; i++)
        if (getenv(forwarded[i])) {
            rc = lmf_argv_add(out, "-x");
            if (!rc) rc = lmf_argv_add(out, forwarded[i]);
        }
    if (!rc && geteuid() == 0) rc = lmf_argv_add(out, "--allow-run-as-root");
    /* Without keepalive OpenMPI notices a lost node only after many minutes
     * (docs/distributed.md). */
    if (!rc && c->multi_node)
        rc = lmf_argv_add_words(out, "--mca oob_tcp_keepalive_time 5 --mca "
                                     "oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3");
    if (!rc && c->rsh_agent) {
        rc = lmf_argv_add_words(out, "--mca plm rsh --mca plm_rsh_no_tree_spawn 1 --mca "
                                     "plm_rsh_agent");
        if (!rc) rc = lmf_argv_add(out, c->rsh_agent);
    }
    if (!rc) rc = lmf_argv_add_words(out, c->extra);
    if (!rc) rc = lmf_argv_add(out, self);
    if (!rc) rc = lmf_argv_add(out, c->subcmd ? c->subcmd : "train");
    if (!rc) rc = lmf_argv_add_all(out, args);
    return rc;
}

int lmf_launch_srun_argv(const lmf_launch_cmd *c, const char *self, const lmf_argv *args,
                         lmf_argv *out) {
    int rc = lmf_argv_add(out, "srun");
    if (!rc) rc = lmf_argv_addf(out, "--ntasks=%d", c->ranks);
    /* one failed task ends the step (and the supervisor may restart it) */
    if (!rc) rc = lmf_argv_add(out, "--kill-on-bad-exit=1");
    if (!rc)
        rc = lmf_argv_addf(out, "--export=ALL,OMP_NUM_THREADS=%ld,LMF_UNDER_SRUN=1", c->threads);
    if (!rc) rc = lmf_argv_add_words(out, c->extra);
    if (!rc) rc = lmf_argv_add(out, self);
    if (!rc) rc = lmf_argv_add(out, c->subcmd ? c->subcmd : "train");
    if (!rc) rc = lmf_argv_add_all(out, args);
    return rc;
}

const char *lmf_launch_self(const char *argv0) {
    static char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return argv0;
    self[len] = 0;
    return self;
}
