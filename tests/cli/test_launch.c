/* The launcher's parts without a cluster: hostfile parsing (errors name file:line), the mpirun
 * and srun command lines, the failure notes read from a failed job's output, accelerate
 * config mapping (and its conflicts with the training config), and the NNODES rendezvous on
 * 127.0.0.1 with forked "nodes": a command run through the rsh agent returns its exit code,
 * DONE's code becomes the node's, and the mistakes (port busy, node 0 unreachable, a NODE_RANK
 * twice, a wrong NNODES) fail with messages naming them. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launch.h"
#include "lmforge/core.h"
#include "test.h"

static char dir[64];

static char *put(const char *name, const char *text) {
    char *p = lmf_path_join(dir, name);
    lmf_file_write_atomic(p, text, strlen(text));
    return p;
}

static int has(const char *what) {
    int ok = strstr(lmf_last_error(), what) != NULL;
    if (!ok) fprintf(stderr, "  message was: %s\n  expected: %s\n", lmf_last_error(), what);
    return ok;
}

static int argv_is(const lmf_argv *a, const char *want) {
    char got[4096];
    lmf_argv_format(a, got, sizeof got);
    if (strcmp(got, want)) fprintf(stderr, "  got:  %s\n  want: %s\n", got, want);
    return !strcmp(got, want);
}

static void hostfiles(void) {
    lmf_host *h;
    int n;
    char *p = put("good", "# DeepSpeed style\n\nworker-1 slots=4\nworker-2 slots=2 max_slots=8  "
                          "# trailing comment\n  node3\n");
    CHECK(lmf_hostfile_parse(p, &h, &n) == 0 && n == 3);
    CHECK(!strcmp(h[0].name, "worker-1") && h[0].slots == 4 && h[1].slots == 2 && h[2].slots == 1);
    char *q = lmf_path_join(dir, "copy");
    CHECK(lmf_hostfile_write(q, h, n) == 0);
    free(h);
    CHECK(lmf_hostfile_parse(q, &h, &n) == 0 && n == 3 && !strcmp(h[2].name, "node3"));
    free(h), free(p), free(q);
    static const char *bad[][2] = {
        {"a slots=2\nb gpus=2\n", ":2: unknown field \"gpus\""},
        {"a slots=0\n", ":1: slots=0: expected a whole number >= 1"},
        {"a slots=two\n", ":1: slots=two"},
        {"a slots=2\n# c\na slots=1\n", ":3: host a is already listed on line 1"},
        {"# nothing\n\n", "no hosts in it"},
        {"slots=2\n", ":1: \"slots=2\": expected a host name first"},
        {"a 2\n", ":1: \"2\": expected slots=N"},
        {"a slots=4 max_slots=2\n", "slots=4 is above max_slots=2"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = put("bad", bad[i][0]);
        CHECK(lmf_hostfile_parse(p, &h, &n) == LMF_EINVAL && has(bad[i][1]));
        free(p);
    }
    CHECK(lmf_hostfile_parse("/nonexistent/hosts", &h, &n) == LMF_EIO && has("/nonexistent/hosts"));
}

static void commands(void) {
    lmf_argv args = {0}, out = {0};
    lmf_argv_add(&args, "cfg.yaml");
    lmf_argv_add(&args, "max_steps=3");
    unsetenv("LMF_RESTART_COUNT"), unsetenv("LMF_TEST_KILL_RANK_AT"), unsetenv("LMF_LOG");
    unsetenv("LMF_COMM_ABORT_GRACE");
    const char *root = geteuid() == 0 ? " --allow-run-as-root" : "";
    char want[2048];
    lmf_launch_cmd one = {.ranks = 4, .threads = 2};
    CHECK(lmf_launch_mpirun_argv(&one, "/opt/lmforge", &args, &out) == 0);
    snprintf(want, sizeof want,
             "mpirun -np 4 --oversubscribe --mca mpi_yield_when_idle 1 "
             "--bind-to none -x OMP_NUM_THREADS=2%s /opt/lmforge train cfg.yaml max_steps=3",
             root);
    CHECK(argv_is(&out, want));
    lmf_argv_free(&out);
    setenv("LMF_RESTART_COUNT", "0", 1);
    lmf_launch_cmd hf = {.ranks = 8,
                         .per_node = 4,
                         .threads = 1,
                         .hostfile = "hosts",
                         .rsh_agent = "/opt/lmforge _launch-agent",
                         .multi_node = 1,
                         .extra = "--mca btl tcp,self"};
    CHECK(lmf_launch_mpirun_argv(&hf, "/opt/lmforge", &args, &out) == 0);
    snprintf(want, sizeof want,
             "mpirun -np 8 --hostfile hosts --npernode 4 --bind-to none -x "
             "OMP_NUM_THREADS=1 -x LMF_RESTART_COUNT%s --mca oob_tcp_keepalive_time 5 --mca "
             "oob_tcp_keepalive_intvl 2 --mca oob_tcp_keepalive_probes 3 --mca plm rsh --mca "
             "plm_rsh_no_tree_spawn 1 --mca plm_rsh_agent '/opt/lmforge _launch-agent' --mca btl "
             "tcp,self /opt/lmforge train cfg.yaml max_steps=3",
             root);
    CHECK(argv_is(&out, want));
    lmf_argv_free(&out);
    unsetenv("LMF_RESTART_COUNT");
    lmf_launch_cmd sr = {.ranks = 16, .threads = 8, .extra = " --mpi=pmix  --cpu-bind=cores "};
    CHECK(lmf_launch_srun_argv(&sr, "/opt/lmforge", &args, &out) == 0);
    CHECK(argv_is(&out, "srun --ntasks=16 --kill-on-bad-exit=1 "
                        "--export=ALL,OMP_NUM_THREADS=8,LMF_UNDER_SRUN=1 --mpi=pmix "
                        "--cpu-bind=cores /opt/lmforge train cfg.yaml max_steps=3"));
    lmf_argv_free(&out);
    /* another subcommand: a tensor-parallel server's ranks */
    lmf_launch_cmd api = {.ranks = 2, .threads = 1, .subcmd = "api"};
    CHECK(lmf_launch_mpirun_argv(&api, "/opt/lmforge", &args, &out) == 0);
    snprintf(want, sizeof want,
             "mpirun -np 2 --oversubscribe --mca mpi_yield_when_idle 1 "
             "--bind-to none -x OMP_NUM_THREADS=1%s /opt/lmforge api cfg.yaml max_steps=3",
             root);
    CHECK(argv_is(&out, want));
    lmf_argv_free(&out);
    lmf_argv_free(&args);
}

static void failure_notes(void) {
    static const char *cases[][2] = {
        {"mpirun noticed that process rank 1 with PID 4242 on node lmf-node1 exited on signal 9 "
         "(Killed).",
         "rank 1 (on lmf-node1) was killed by signal 9"},
        {"lmforge: rank 0/4: all-reduce #9 on \"world\" (1048576 bytes) timed out after 3.0 s "
         "(ddp_timeout): ranks 2,3 did not answer within 0.5 s (dead, or stuck outside "
         "communication)",
         "ranks 2,3 did not answer"},
        {"srun: error: node7: task 3: Exited with exit code 1", "task 3 Exited with exit code 1"},
        {"MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD",
         "rank 1 aborted the job"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char note[256] = "";
        int prio = 0;
        CHECK(lmf_launch_failure_note(cases[i][0], note, sizeof note, &prio) == 1);
        CHECK(!strcmp(note, cases[i][1]));
        if (strcmp(note, cases[i][1])) fprintf(stderr, "  note: %s\n", note);
    }
    /* mpirun's non-zero exit report spans lines; a timeout naming the silent rank wins over an
     * abort printed after it */
    char note[256] = "";
    int prio = 0;
    lmf_launch_failure_note("  Process name: [[17004,1],3]", note, sizeof note, &prio);
    lmf_launch_failure_note("  Exit code:    14", note, sizeof note, &prio);
    CHECK(!strcmp(note, "rank 3 exited with code 14"));
    prio = 0;
    lmf_launch_failure_note("... rank 2 did not answer within 0.5 s", note, sizeof note, &prio);
    CHECK(lmf_launch_failure_note("MPI_ABORT was invoked on rank 1 in communicator X", note,
                                  sizeof note, &prio) == 0);
    CHECK(!strcmp(note, "rank 2 did not answer"));
    CHECK(lmf_launch_failure_note("step 3/10  loss 5.9", note, sizeof note, &prio) == 0);
}

static void accelerate(void) {
    lmf_accel a;
    /* LLaMA-Factory's examples/accelerate/fsdp_config.yaml */
    char *p = put("fsdp.yaml",
                  "compute_environment: LOCAL_MACHINE\ndebug: false\ndistributed_type: FSDP\n"
                  "downcast_bf16: 'no'\nfsdp_config:\n  fsdp_auto_wrap_policy: "
                  "TRANSFORMER_BASED_WRAP\n  fsdp_backward_prefetch: BACKWARD_PRE\n  "
                  "fsdp_forward_prefetch: false\n  fsdp_cpu_ram_efficient_loading: true\n  "
                  "fsdp_offload_params: false\n  fsdp_sharding_strategy: FULL_SHARD\n  "
                  "fsdp_state_dict_type: FULL_STATE_DICT\n  fsdp_sync_module_states: true\n  "
                  "fsdp_use_orig_params: true\nmachine_rank: 0\nmain_training_function: main\n"
                  "mixed_precision: bf16\nnum_machines: 1\nnum_processes: 2\nrdzv_backend: "
                  "static\nsame_network: true\ntpu_env: []\ntpu_use_cluster: false\n"
                  "tpu_use_sudo: false\nuse_cpu: false\n");
    CHECK(lmf_accel_load(p, &a) == 0);
    CHECK(argv_is(&a.overrides, "nproc_per_node=2 bf16=true fsdp=full_shard") && a.env.n == 0);
    CHECK(strstr(a.notice, "fsdp_config.fsdp_offload_params") && strstr(a.notice, "tpu_env") &&
          strstr(a.notice, "downcast_bf16"));
    lmf_accel_free(&a);
    free(p);
    p = put("ds.yaml", "distributed_type: DEEPSPEED\ndeepspeed_config:\n  "
                       "gradient_accumulation_steps: 4\n  gradient_clipping: 1.0\n  "
                       "offload_optimizer_device: cpu\n  zero3_init_flag: false\n  zero_stage: "
                       "2\nnum_machines: 2\nnum_processes: 8\nmachine_rank: 1\nmain_process_ip: "
                       "10.0.0.1\nmain_process_port: 29600\nmixed_precision: 'no'\n"
                       "num_cpu_threads_per_process: 6\ngpu_ids: all\n");
    CHECK(lmf_accel_load(p, &a) == 0);
    CHECK(argv_is(&a.overrides, "nproc_per_node=4 bf16=false threads=6 zero_stage=2 "
                                "gradient_accumulation_steps=4 max_grad_norm=1.0"));
    CHECK(argv_is(&a.env, "NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 MASTER_PORT=29600"));
    lmf_accel_free(&a);
    free(p);
    p = put("cpu.yaml", "distributed_type: MULTI_CPU\nnum_processes: 4\nnum_machines: 2\n"
                        "mpirun_config:\n  mpirun_ccl: 1\n  mpirun_hostfile: /etc/hosts.mpi\n");
    CHECK(lmf_accel_load(p, &a) == 0);
    CHECK(argv_is(&a.overrides, "nproc_per_node=2 hostfile=/etc/hosts.mpi") && a.env.n == 0);
    lmf_accel_free(&a);
    free(p);
    static const char *bad[][2] = {
        {"distributed_type: MULTI_GPU\nnum_processes: 3\nnum_machines: 2\nmain_process_ip: x\n",
         ":2: num_processes: 3 processes do not split evenly over num_machines 2"},
        {"distributed_type: MULTI_GPU\nnum_procs: 2\n",
         ":2: unknown accelerate field \"num_procs\""},
        {"distributed_type: MULTI_GPU\nmixed_precision: fp16\n",
         ":2: mixed_precision: fp16 needs a GPU"},
        {"distributed_type: FSDP\nfsdp_config:\n  fsdp_sharding_strategy: HYBRID_SHARD\n",
         ":3: fsdp_config.fsdp_sharding_strategy: HYBRID_SHARD is not available"},
        {"distributed_type: XLA\n", ":1: distributed_type: XLA is not available"},
        {"distributed_type: MULTI_CPU\nnum_machines: 2\nnum_processes: 2\n",
         "num_machines 2 needs main_process_ip"},
        {"distributed_type: MULTI_CPU\nnum_machines: 2\nnum_processes: 2\nmachine_rank: 2\n"
         "main_process_ip: h\n",
         ":4: machine_rank 2 is not below num_machines 2"},
        {"compute_environment: AMAZON_SAGEMAKER\n", ":1: compute_environment: AMAZON_SAGEMAKER"},
        {"num_processes: [\n", "bad.yaml:"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = put("bad.yaml", bad[i][0]);
        CHECK(lmf_accel_load(p, &a) != 0 && has(bad[i][1]));
        free(p);
    }
    /* --launch-config in a train command line */
    char *cfg = put("train.yaml", "model_name_or_path: m\noutput_dir: o\nbf16: false\n");
    char *lc = put("acc.yaml", "distributed_type: MULTI_CPU\nnum_machines: 2\nnum_processes: 4\n"
                               "machine_rank: 0\nmain_process_ip: node0\nmixed_precision: no\n");
    char a0[] = "train", a2[] = "max_steps=5", a3[] = "--launch-config";
    char *argv[] = {a0, cfg, a2, a3, lc, NULL};
    lmf_argv out;
    unsetenv("NNODES"), unsetenv("MASTER_ADDR"), unsetenv("MASTER_PORT");
    setenv("NODE_RANK", "1", 1); /* the environment wins over the file's machine_rank */
    CHECK(lmf_accel_apply(5, argv, &out) == 0);
    char want[1024];
    snprintf(want, sizeof want, "train %s nproc_per_node=2 max_steps=5", cfg);
    CHECK(argv_is(&out, want)); /* bf16=false agrees with train.yaml: dropped */
    CHECK(!strcmp(getenv("NNODES"), "2") && !strcmp(getenv("NODE_RANK"), "1") &&
          !strcmp(getenv("MASTER_ADDR"), "node0") && !strcmp(getenv("MASTER_PORT"), "29500"));
    lmf_argv_free(&out);
    free(lc);
    lc = put("acc.yaml", "distributed_type: MULTI_CPU\nnum_processes: 2\nmixed_precision: bf16\n");
    argv[4] = lc;
    CHECK(lmf_accel_apply(5, argv, &out) != 0 && has("gives bf16=true, but") && has("bf16: false"));
    char *argv2[] = {a0, cfg, a2, NULL};
    CHECK(lmf_accel_apply(3, argv2, &out) == 0 && out.n == 3);
    lmf_argv_free(&out);
    unsetenv("NNODES"), unsetenv("NODE_RANK"), unsetenv("MASTER_ADDR"), unsetenv("MASTER_PORT");
    free(lc), free(cfg);
}

/* A forked node: runs lmf_rdzv_worker and exits with its code (100 + message on failure). */
static pid_t node(int nnodes, int rank, int port, const char *host, double timeout) {
    pid_t pid = fork();
    if (pid) return pid;
    setenv("LMF_RDZV_HOST", host, 1);
    setenv("LMF_LOG", "error", 1);
    lmf_rdzv_opts o = {nnodes, rank, 2, "127.0.0.1", port, timeout};
    int code = lmf_rdzv_worker(&o);
    if (code < 0) fprintf(stderr, "  node %d: %s\n", rank, lmf_last_error());
    _exit(code < 0 ? 100 : code);
}

static int wait_code(pid_t pid) {
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void rendezvous(void) {
    int port = 20000 + (int)(getpid() % 20000);
    setenv("LMF_RDZV_HOST", "fake0", 1);
    lmf_rdzv r;
    lmf_rdzv_opts o = {2, 0, 2, "127.0.0.1", port, 10};
    /* two nodes; a command through the agent; DONE's code */
    pid_t n1 = node(2, 1, port, "fake1", 10);
    CHECK(lmf_rdzv_master(&r, &o) == 0);
    CHECK(r.nnodes == 2 && !strcmp(r.nodes[1].host, "fake1") && r.nodes[1].nproc == 2);
    char *hf = lmf_path_join(dir, "rdzv_hosts");
    lmf_host *h;
    int n;
    CHECK(lmf_rdzv_hostfile(&r, hf) == 0 && lmf_hostfile_parse(hf, &h, &n) == 0 && n == 2 &&
          !strcmp(h[0].name, "fake0") && !strcmp(h[1].name, "fake1") && h[1].slots == 2);
    free(h), free(hf);
    pid_t agent = fork();
    if (!agent) {
        char a0[] = "_launch-agent", a1[] = "-x", a2[] = "fake1", a3[] = "exit", a4[] = "3";
        char *av[] = {a0, a1, a2, a3, a4, NULL};
        _exit(lmf_cmd_launch_agent(5, av));
    }
    lmf_rdzv_serve_agent(&r);
    CHECK(wait_code(agent) == 3);
    agent = fork();
    if (!agent) { /* a host that is not in the launch */
        char a0[] = "_launch-agent", a2[] = "fake9", a3[] = "true";
        char *av[] = {a0, a2, a3, NULL};
        _exit(lmf_cmd_launch_agent(3, av));
    }
    lmf_rdzv_serve_agent(&r);
    CHECK(wait_code(agent) == 255);
    CHECK(lmf_rdzv_stop_all(&r) == 0);
    lmf_rdzv_finish(&r, 5);
    CHECK(wait_code(n1) == 5);

    /* the port is busy */
    int busy = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(busy, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(port + 1))};
    CHECK(bind(busy, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(busy, 1) == 0);
    lmf_rdzv_opts ob = o;
    ob.master_port = port + 1;
    CHECK(lmf_rdzv_master(&r, &ob) != 0 && has("MASTER_PORT=") && has("already in use"));
    close(busy);
    /* node 0 never there */
    lmf_rdzv_opts ow = {2, 1, 2, "127.0.0.1", port + 2, 1};
    setenv("LMF_LOG", "error", 1);
    CHECK(lmf_rdzv_worker(&ow) < 0 && has("NODE_RANK 1: could not reach node 0 at 127.0.0.1:") &&
          has("within 1 s"));
    /* NODE_RANK 1 twice (NNODES 3) */
    lmf_rdzv_opts o3 = {3, 0, 1, "127.0.0.1", port + 3, 10};
    pid_t a = node(3, 1, port + 3, "fakeA", 10);
    pid_t b = node(3, 1, port + 3, "fakeB", 10);
    CHECK(lmf_rdzv_master(&r, &o3) != 0 && has("NODE_RANK 1, which another node already has"));
    CHECK(wait_code(a) == 100 && wait_code(b) == 100);
    /* NNODES disagree */
    pid_t c = node(3, 1, port + 4, "fakeC", 10);
    o.master_port = port + 4;
    CHECK(lmf_rdzv_master(&r, &o) != 0 && has("started with NNODES=3, node 0 with NNODES=2"));
    CHECK(wait_code(c) == 100);
    /* a node that never comes */
    o.master_port = port + 5, o.timeout_s = 1;
    double t0 = lmf_time_sec();
    CHECK(lmf_rdzv_master(&r, &o) != 0 && has("1 of 2 nodes came within 1 s") &&
          has("still missing NODE_RANK 1"));
    CHECK(lmf_time_sec() - t0 < 5);
    unsetenv("LMF_RDZV_HOST"), unsetenv("LMF_LOG");
}

int main(void) {
    strcpy(dir, "/tmp/lmf-test-launch-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    signal(SIGPIPE, SIG_IGN);
    hostfiles();
    commands();
    failure_notes();
    accelerate();
    rendezvous();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) return 1;
    return test_summary("test_launch");
}
