/* `lmforge train` decides here how its ranks start (docs/distributed.md, "Launching"):
 * - under mpirun, srun or another PMI launcher: it is one of the ranks and runs;
 * - in a Slurm allocation of several tasks, outside srun (an sbatch script): re-runs itself
 *   under srun;
 * - NNODES > 1 (torchrun-style, the same command on every node): node 0 gathers the others
 *   (launch_rdzv.c) and runs mpirun over all of them, starting OpenMPI's daemons through the
 *   rendezvous connections instead of ssh; the other nodes serve it;
 * - `hostfile:`: mpirun --hostfile;
 * - nproc_per_node / NPROC_PER_NODE > 1: mpirun with that many ranks on this node;
 * the cores split between a node's ranks (OMP_NUM_THREADS) unless `threads` is set. With
 * max_restarts (or MAX_RESTARTS) > 0 the launcher stays as the job's parent and relaunches it
 * from the newest checkpoint after a failure (launch_supervise.c); otherwise it becomes the
 * launcher (exec). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "launch.h"
#include "lmforge/core.h"
#include "lmforge/error.h"
#include "lmforge/launch_env.h"

static int dir_is_fresh(const char *dir) {
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return 1;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n == 0;
}

static int env_count(const char *name, int lo, int *out) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (*end || errno || x < lo || x > 1 << 20)
        return lmf_errorf(LMF_EINVAL, "%s=%s: expected a whole number >= %d", name, v, lo);
    *out = (int)x;
    return 0;
}

/* Ranks on this node: nproc_per_node, else NPROC_PER_NODE, else the job's share of its total
 * ranks (all of them on one node, total / NNODES on each node of a NNODES launch), else 1. */
static int ranks_here(const lmf_config *c, const lmf_launch_env *e, const lmf_launch_job *job,
                      int *n) {
    *n = 1;
    if (job->ranks > 0 && e->nnodes > 1) {
        if (job->ranks % e->nnodes)
            return lmf_errorf(LMF_EINVAL,
                              "NNODES=%d does not divide the job's %d ranks: set NPROC_PER_NODE",
                              e->nnodes, job->ranks);
        *n = job->ranks / e->nnodes;
    } else if (job->ranks > 0) {
        *n = job->ranks;
    }
    if (lmf_config_is_set(c, "nproc_per_node")) {
        *n = (int)lmf_config_int(c, "nproc_per_node");
    } else if (e->nproc_per_node >= 0) {
        if (e->nproc_per_node < 1 || e->nproc_per_node > 4096)
            return lmf_errorf(LMF_EINVAL,
                              "NPROC_PER_NODE=%d: expected a whole number of processes >= 1",
                              e->nproc_per_node);
        *n = e->nproc_per_node;
    }
    return 0;
}

static long per_rank(const lmf_config *c, long cores, int ranks) {
    if (lmf_config_is_set(c, "threads")) return (long)lmf_config_int(c, "threads");
    return ranks > 0 && cores / ranks > 0 ? cores / ranks : 1;
}

/* NNODES > 1: node 0 gathers the nodes and builds mpirun over them; other nodes serve it and
 * set *exit_code. */
static int plan_nnodes(const lmf_config *c, const lmf_launch_env *e, int nproc, const char *self,
                       const lmf_launch_job *job, const lmf_argv *args, lmf_rdzv *r, lmf_argv *cmd,
                       int *exit_code) {
    if (lmf_config_str(c, "hostfile"))
        return lmf_errorf(LMF_EINVAL,
                          "NNODES=%d and hostfile: both say where the ranks run; "
                          "use one",
                          e->nnodes);
    if (!e->master_addr[0])
        return lmf_errorf(LMF_EINVAL,
                          "NNODES=%d: MASTER_ADDR (node 0's address, as every node "
                          "reaches it) is not set",
                          e->nnodes);
    if (e->node_rank < 0)
        return lmf_errorf(LMF_EINVAL,
                          "NNODES=%d: NODE_RANK (0 on the first node, 1..%d on the "
                          "others) is not set",
                          e->nnodes, e->nnodes - 1);
    lmf_rdzv_opts ro = {e->nnodes,
                        e->node_rank,
                        nproc,
                        e->master_addr,
                        e->master_port > 0 ? e->master_port : 29500,
                        (double)lmf_config_int(c, "rdzv_timeout")};
    if (e->node_rank > 0) {
        int code = lmf_rdzv_worker(&ro);
        if (code < 0) return LMF_EIO;
        *exit_code = code;
        return 0;
    }
    int rc = lmf_rdzv_master(r, &ro);
    if (rc) return rc;
    char hostfile[300];
    snprintf(hostfile, sizeof hostfile, "%s", r->sock_path);
    char *slash = strrchr(hostfile, '/');
    snprintf(slash + 1, sizeof hostfile - (size_t)(slash + 1 - hostfile), "hostfile");
    rc = lmf_rdzv_hostfile(r, hostfile);
    int ranks = 0;
    long threads = 1 << 20;
    for (int i = 0; i < r->nnodes; i++) {
        ranks += r->nodes[i].nproc;
        long t = per_rank(c, r->nodes[i].cores, r->nodes[i].nproc);
        if (t < threads) threads = t;
    }
    char agent[4200];
    snprintf(agent, sizeof agent, "%s _launch-agent", self);
    lmf_launch_cmd lc = {.ranks = ranks,
                         .threads = threads,
                         .hostfile = hostfile,
                         .rsh_agent = agent,
                         .multi_node = 1,
                         .extra = getenv("LMF_MPIRUN_ARGS"),
                         .subcmd = job->subcmd};
    if (!rc) rc = lmf_launch_mpirun_argv(&lc, self, args, cmd);
    if (!rc)
        lmf_info("NNODES=%d: %d ranks on %d nodes (%d here), %ld threads each", r->nnodes, ranks,
                 r->nnodes, nproc, threads);
    if (rc) lmf_rdzv_finish(r, 1);
    return rc;
}

static int plan_hostfile(const lmf_config *c, const char *path, const char *self,
                         const lmf_launch_job *job, const lmf_argv *args, lmf_argv *cmd) {
    lmf_host *h;
    int n, rc = lmf_hostfile_parse(path, &h, &n);
    if (rc) return rc;
    int per = lmf_config_is_set(c, "nproc_per_node") ? (int)lmf_config_int(c, "nproc_per_node") : 0,
        ranks = 0, most = per;
    for (int i = 0; i < n; i++) {
        ranks += per ? per : h[i].slots;
        if (h[i].slots > most) most = per ? per : h[i].slots;
    }
    if (job->ranks > 0 && !per) { /* the job's own count, over the hosts' slots in order */
        ranks = job->ranks;
        most = (ranks + n - 1) / n;
    }
    lmf_launch_cmd lc = {.ranks = ranks,
                         .per_node = per,
                         .threads = per_rank(c, sysconf(_SC_NPROCESSORS_ONLN), most),
                         .hostfile = path,
                         .multi_node = n > 1,
                         .extra = getenv("LMF_MPIRUN_ARGS"),
                         .subcmd = job->subcmd};
    rc = lmf_launch_mpirun_argv(&lc, self, args, cmd);
    if (!rc)
        lmf_info("hostfile %s: %d ranks on %d hosts, %ld threads each", path, ranks, n, lc.threads);
    free(h);
    return rc;
}

static int plan_srun(const lmf_config *c, const lmf_launch_env *e, const char *self,
                     const lmf_launch_job *job, const lmf_argv *args, lmf_argv *cmd) {
    if (lmf_config_str(c, "hostfile") || e->nnodes > 1)
        return lmf_errorf(LMF_EINVAL, "inside Slurm job %ld srun places the ranks: drop %s",
                          e->slurm_job_id, e->nnodes > 1 ? "NNODES" : "hostfile");
    int nodes = e->slurm_nodes > 0 ? e->slurm_nodes : 1,
        per_node = (e->slurm_ntasks + nodes - 1) / nodes;
    long threads = lmf_config_is_set(c, "threads") ? (long)lmf_config_int(c, "threads")
                   : e->slurm_cpus_per_task > 0
                       ? e->slurm_cpus_per_task
                       : per_rank(c, sysconf(_SC_NPROCESSORS_ONLN), per_node);
    lmf_launch_cmd lc = {.ranks = e->slurm_ntasks,
                         .threads = threads,
                         .extra = getenv("LMF_SRUN_ARGS"),
                         .subcmd = job->subcmd};
    int rc = lmf_launch_srun_argv(&lc, self, args, cmd);
    if (!rc)
        lmf_info("Slurm job %ld: starting its %d tasks under srun, %ld threads each",
                 e->slurm_job_id, e->slurm_ntasks, threads);
    return rc;
}

int lmf_cli_launch_ranks(const lmf_config *c, int argc, char **argv, int *exit_code) {
    static const lmf_launch_job train = {.subcmd = "train"};
    return lmf_cli_launch_job(c, &train, argc, argv, exit_code);
}

int lmf_cli_launch_job(const lmf_config *c, const lmf_launch_job *job, int argc, char **argv,
                       int *exit_code) {
    *exit_code = -1;
    lmf_launch_env e;
    int rc = lmf_launch_detect(&e);
    if (rc) return rc;
    const char *out_dir = lmf_config_str(c, "output_dir");
    if (e.kind == LMF_LAUNCH_MPIRUN || e.kind == LMF_LAUNCH_SRUN || e.kind == LMF_LAUNCH_PMI) {
        lmf_launch_test_hook(out_dir, e.rank);
        return 0; /* already one rank of a job */
    }
    if (getenv("LMF_LAUNCH_SUPERVISED")) { /* the one process a supervisor restarts */
        lmf_launch_test_hook(out_dir, 0);
        return 0;
    }
    int nproc, max_restarts = 0;
    if ((rc = ranks_here(c, &e, job, &nproc))) return rc;
    if (job->no_restarts)
        ;
    else if (lmf_config_is_set(c, "max_restarts"))
        max_restarts = (int)lmf_config_int(c, "max_restarts");
    else if ((rc = env_count("MAX_RESTARTS", 0, &max_restarts)))
        return rc;
    const char *hostfile = lmf_config_str(c, "hostfile");
    int multi = e.kind == LMF_LAUNCH_SLURM_ALLOC || e.nnodes > 1 || hostfile;
    /* LLaMA-Factory's FORCE_TORCHRUN=1: launch through the distributed launcher even for one
     * rank (NPROC_PER_NODE / nproc_per_node give the count) */
    const char *ft = getenv("FORCE_TORCHRUN");
    int force = ft && (!strcmp(ft, "1") || !strcasecmp(ft, "true") || !strcasecmp(ft, "y"));
    if (!multi && nproc <= 1 && max_restarts == 0 && !force) return 0;

    lmf_argv args = {0}, cmd = {0};
    for (int i = 1; !rc && i < argc; i++) rc = lmf_argv_add(&args, argv[i]);
    const char *self = lmf_launch_self(argv[0]);
    if (max_restarts > 0) setenv("LMF_RESTART_COUNT", "0", 1); /* forwarded to every node */
    lmf_rdzv rdzv, *r = NULL;
    if (rc) {
    } else if (e.kind == LMF_LAUNCH_SLURM_ALLOC) {
        rc = plan_srun(c, &e, self, job, &args, &cmd);
    } else if (e.nnodes > 1) {
        rc = plan_nnodes(c, &e, nproc, self, job, &args, &rdzv, &cmd, exit_code);
        if (!rc && *exit_code < 0) r = &rdzv;
    } else if (hostfile) {
        rc = plan_hostfile(c, hostfile, self, job, &args, &cmd);
    } else if (nproc > 1 || force) {
        long threads = per_rank(c, sysconf(_SC_NPROCESSORS_ONLN), nproc);
        lmf_launch_cmd lc = {.ranks = nproc,
                             .threads = threads,
                             .extra = getenv("LMF_MPIRUN_ARGS"),
                             .subcmd = job->subcmd};
        rc = lmf_launch_mpirun_argv(&lc, self, &args, &cmd);
        lmf_info("%s %d: starting %d ranks under mpirun, %ld threads each",
                 job->label ? job->label : "nproc_per_node", nproc, nproc, threads);
    } else { /* one process, restarted on failure */
        setenv("LMF_LAUNCH_SUPERVISED", "1", 1);
        rc = lmf_argv_add(&cmd, self);
        if (!rc) rc = lmf_argv_add(&cmd, job->subcmd);
        if (!rc) rc = lmf_argv_add_all(&cmd, &args);
    }
    lmf_argv_free(&args);
    if (rc || *exit_code >= 0) {
        lmf_argv_free(&cmd);
        return rc;
    }
    char shown[2048];
    lmf_argv_format(&cmd, shown, sizeof shown);
    lmf_debug("launch: %s", shown);
    fflush(NULL);
    if (!r && max_restarts == 0 && !job->stop_signal) {
        execvp(cmd.v[0], cmd.v);
        rc = lmf_errorf(LMF_EIO, "cannot start %s: %s (install %s)", cmd.v[0], strerror(errno),
                        strcmp(cmd.v[0], "srun") ? "openmpi-bin" : "Slurm's client");
        lmf_argv_free(&cmd);
        return rc;
    }
    if (max_restarts > 0)
        lmf_info("max_restarts %d: this process supervises the job and relaunches it from the "
                 "newest checkpoint in %s after a failure",
                 max_restarts, out_dir ? out_dir : "output_dir");
    lmf_supervise_opts so = {.cmd = &cmd,
                             .output_dir = out_dir,
                             .max_restarts = max_restarts,
                             .output_was_fresh = dir_is_fresh(out_dir) ||
                                                 lmf_config_bool(c, "overwrite_output_dir"),
                             .rdzv = r,
                             .name = job->subcmd,
                             .stop_signal = job->stop_signal};
    *exit_code = lmf_launch_supervise(&so);
    lmf_argv_free(&cmd);
    return 0;
}
