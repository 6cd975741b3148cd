/* The training launcher's parts (src/cli/launch*.c): argument vectors, hostfiles, the mpirun and
 * srun command lines, the supervisor that runs a job and restarts it from the last checkpoint,
 * the NNODES/NODE_RANK rendezvous, accelerate config files and the test hook. The entry point
 * for `lmforge train` is lmf_cli_launch_ranks (cli.h). */
#ifndef LMF_CLI_LAUNCH_H
#define LMF_CLI_LAUNCH_H

#include <stddef.h>

/* ---- a growable NULL-terminated argument vector of owned strings (launch_argv.c) ---- */
typedef struct lmf_argv {
    char **v; /* v[n] == NULL */
    int n, cap;
} lmf_argv;
int lmf_argv_add(lmf_argv *a, const char *s); /* copies s */
int lmf_argv_addf(lmf_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int lmf_argv_add_all(lmf_argv *a, const lmf_argv *b);
/* Splits s on blanks (no quoting) and adds each word: LMF_MPIRUN_ARGS, LMF_SRUN_ARGS. */
int lmf_argv_add_words(lmf_argv *a, const char *s);
void lmf_argv_free(lmf_argv *a);
/* "a b 'c d'": the vector as a shell would need it quoted (for log lines and dry runs). */
void lmf_argv_format(const lmf_argv *a, char *out, size_t n);

/* ---- hostfiles: "host slots=N" lines as DeepSpeed and OpenMPI write them (launch_hostfile.c) */
typedef struct lmf_host {
    char name[256];
    int slots; /* 1 when the line gives none */
} lmf_host;
/* Reads path. Comments (#...) and blank lines are skipped; slots=N, max_slots=N / max-slots=N
 * are understood. Errors name path:line (unknown field, bad count, a host listed twice, no
 * hosts). *hosts is malloc'd. */
int lmf_hostfile_parse(const char *path, lmf_host **hosts, int *n);
int lmf_hostfile_write(const char *path, const lmf_host *hosts, int n);

/* ---- what a launch runs (launch_cmd.c) ---- */
typedef struct lmf_launch_cmd {
    int ranks;             /* total ranks (-np) */
    int per_node;          /* > 0: --npernode (a hostfile with nproc_per_node) */
    long threads;          /* OMP_NUM_THREADS of each rank */
    const char *hostfile;  /* NULL: one node */
    const char *rsh_agent; /* NULL: mpirun's default (ssh); else plm_rsh_agent */
    int multi_node;        /* adds OpenMPI's daemon keepalive settings */
    const char *extra;     /* LMF_MPIRUN_ARGS / LMF_SRUN_ARGS: blank-separated words */
    const char *subcmd;    /* what each rank runs: SELF SUBCMD ARGS...; NULL: "train" */
} lmf_launch_cmd;
/* mpirun ... SELF train ARGS... into out (args: everything after "train"). */
int lmf_launch_mpirun_argv(const lmf_launch_cmd *c, const char *self, const lmf_argv *args,
                           lmf_argv *out);
/* srun --ntasks=N --kill-on-bad-exit=1 --export=ALL,OMP_NUM_THREADS=T ... SELF train ARGS... */
int lmf_launch_srun_argv(const lmf_launch_cmd *c, const char *self, const lmf_argv *args,
                         lmf_argv *out);
/* This executable's absolute path (/proc/self/exe), else argv0. */
const char *lmf_launch_self(const char *argv0);

/* ---- the supervisor (launch_supervise.c) ---- */
struct lmf_rdzv;
typedef struct lmf_supervise_opts {
    const lmf_argv *cmd;    /* the whole command; a restart appends resume_from_checkpoint=... */
    const char *output_dir; /* where checkpoint-N folders appear (restarts resume from them) */
    int max_restarts;
    int output_was_fresh;  /* output_dir was absent or empty before the first launch */
    struct lmf_rdzv *rdzv; /* the other nodes of a NNODES launch, or NULL */
    const char *name;      /* the command, for messages; NULL: "train" */
    int stop_signal;       /* sent to the job when this process gets SIGINT / SIGTERM / SIGHUP;
                              0: that signal itself */
} lmf_supervise_opts;
/* Runs the job, teeing its stderr to spot which rank failed; after a failure relaunches it
 * (resuming from the newest checkpoint) up to max_restarts times. Returns the job's exit code
 * (0 success, the last failure's code otherwise). Only returns. */
int lmf_launch_supervise(const lmf_supervise_opts *o);
/* Reads one line of a failed job's output and keeps, in note (n bytes), the best description
 * so far of who failed ("rank 2 did not answer", "rank 1 was killed by signal 9", ...);
 * *prio (start at 0) ranks the descriptions: a timeout naming the silent rank beats mpirun's
 * report of the rank it killed, which beats a rank that merely aborted. Returns 1 when the
 * line replaced the note. */
int lmf_launch_failure_note(const char *line, char *note, size_t n, int *prio);

/* ---- which job a launch starts (launch.c) ---- */
struct lmf_config;
typedef struct lmf_launch_job {
    const char *subcmd; /* "train", "api" */
    int ranks;          /* > 0: the job's total rank count (tensor_parallel_size): the default
                           ranks on one node, total / NNODES per node of a NNODES launch, and
                           mpirun -np with a hostfile; 0: nproc_per_node per node (train) */
    int stop_signal;    /* > 0: the launcher stays the job's parent and turns SIGINT / SIGTERM
                           into this signal for it (mpirun forwards SIGUSR1 to every rank) */
    int no_restarts;    /* max_restarts / MAX_RESTARTS do not apply */
    const char *label;  /* what sets the ranks, for the log: "tensor_parallel_size" */
} lmf_launch_job;
/* lmf_cli_launch_ranks (cli.h) for any job. */
int lmf_cli_launch_job(const struct lmf_config *c, const lmf_launch_job *job, int argc, char **argv,
                       int *exit_code);

/* ---- NNODES / NODE_RANK / MASTER_ADDR / MASTER_PORT rendezvous (launch_rdzv*.c) ---- */
typedef struct lmf_rdzv_node {
    char host[256]; /* its hostname, as the generated hostfile names it */
    int node_rank, nproc, cores;
    int fd; /* the connection to it (node 0 side) */
} lmf_rdzv_node;
typedef struct lmf_rdzv {
    int nnodes;
    lmf_rdzv_node *nodes; /* [nnodes], by node rank; nodes[0] is this node (fd -1) */
    int listen_fd;
    char sock_path[256]; /* the local socket the rsh agent asks for a node's connection */
    int sock_fd;
} lmf_rdzv;
typedef struct lmf_rdzv_opts {
    int nnodes, node_rank, nproc;
    const char *master_addr;
    int master_port;
    double timeout_s; /* rdzv_timeout */
} lmf_rdzv_opts;
/* Node 0: listens on MASTER_PORT and waits (timeout_s) for nodes 1..NNODES-1 to say who they
 * are; checks they agree (NNODES, distinct NODE_RANKs, lmforge version, this lmforge and
 * working directory present there). Errors name the missing or disagreeing node; the nodes
 * that came are told why and exit non-zero. */
int lmf_rdzv_master(lmf_rdzv *r, const lmf_rdzv_opts *o);
/* Writes the hostfile of the nodes ("host slots=nproc" in node-rank order). */
int lmf_rdzv_hostfile(const lmf_rdzv *r, const char *path);
/* Serves one rsh-agent request on r->sock_fd if one is waiting (called from the supervisor's
 * loop). */
void lmf_rdzv_serve_agent(lmf_rdzv *r);
/* After a job ended: every node stops what it runs (the job's daemon) and confirms. */
int lmf_rdzv_stop_all(lmf_rdzv *r);
/* The end: every node exits with rc. Frees r. */
void lmf_rdzv_finish(lmf_rdzv *r, int rc);
/* Nodes 1..NNODES-1: connect to MASTER_ADDR:MASTER_PORT (retrying until timeout_s), say who
 * this node is, then run what node 0's mpirun asks (its daemon) until node 0 says the job is
 * done. Returns the job's exit code (or 1 with an error message). */
int lmf_rdzv_worker(const lmf_rdzv_opts *o);
/* `lmforge _launch-agent HOST COMMAND...`: mpirun's rsh agent for a NNODES launch. Instead of
 * ssh it hands COMMAND to HOST's waiting lmforge over the rendezvous connection and returns
 * its exit status. */
int lmf_cmd_launch_agent(int argc, char **argv);

/* ---- accelerate config files (launch_accel.c) ---- */
typedef struct lmf_accel {
    lmf_argv overrides; /* key=value for the training config: nproc_per_node, bf16, ... */
    lmf_argv env;       /* NAME=value launch variables: NNODES, NODE_RANK, MASTER_ADDR, ... */
    char notice[1024];  /* fields accepted without effect on CPU ("" if none) */
} lmf_accel;
/* Reads an accelerate config (accelerate launch --config_file) into a and maps it. Errors name
 * path:line and the field. */
int lmf_accel_load(const char *path, lmf_accel *a);
void lmf_accel_free(lmf_accel *a);
/* `lmforge train CFG [key=value ...] --launch-config FILE`: out becomes argv without the flag,
 * with FILE's settings as key=value overrides after CFG (before the command line's, which may
 * repeat them; a setting CFG gives differently is an error) and its launch variables put in the
 * environment where not already set. Without the flag out is a copy of argv. */
int lmf_accel_apply(int argc, char **argv, lmf_argv *out);

/* ---- test hook (launch_testhook.c) ---- */
/* LMF_TEST_KILL_RANK_AT=R:S (tests only): on the first launch (LMF_RESTART_COUNT unset or 0),
 * rank R SIGKILLs itself once output_dir/trainer_log.jsonl holds S lines. */
void lmf_launch_test_hook(const char *output_dir, int rank);

#endif
