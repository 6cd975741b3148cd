/* `lmforge api CFG.yaml` (and `lmforge chat`) with tensor_parallel_size: N > 1 (cli.h).
 * Outside a launcher this process starts the N ranks itself, running the same command (mpirun
 * on this node; the `hostfile`'s hosts or the nodes of a NNODES rendezvous for several), and
 * stays their parent: SIGINT / SIGTERM reach them as SIGUSR1 (which mpirun forwards to every
 * rank), and rank 0 then drains its requests and stops the others, so the job ends 0. Each rank
 * reads only its slices of the model's files (lmf_tp_load, tensor_parallel.h); rank 0 serves
 * HTTP and runs the engine, sending each step to the other ranks (tp_group.h), which run it on
 * their shards. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "launch.h"
#include "lmforge/comm.h"
#include "lmforge/core.h"
#include "lmforge/engine.h"
#include "lmforge/error.h"
#include "lmforge/tensor_parallel.h"
#include "lmforge/tp_group.h"

struct lmf_cli_tp {
    lmf_comm *world; /* the shards' collectives (ddp_timeout) */
    lmf_comm *ctrl;  /* rank 0's steps: ranks > 0 wait on it while the server idles */
    lmf_tp_group *group;
    int rank, size, agreed;
};

/* What tensor parallelism does not do (yet): refused before anything starts. */
static int refuse(const lmf_config *c, int size) {
    const char *what = lmf_config_str(c, "adapter_name_or_path")
                           ? "adapter_name_or_path"
                           : (lmf_config_str(c, "lora_modules") ? "lora_modules" : NULL);
    if (what)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: tensor_parallel_size %d with %s: LoRA adapters are not split "
                          "across ranks; merge the adapter into the model (lmforge export) and "
                          "serve that",
                          c->path, size, what);
    if (lmf_config_int(c, "data_parallel_size") > 1)
        return lmf_errorf(LMF_EUNSUPPORTED,
                          "%s: tensor_parallel_size %d with data_parallel_size %lld: one or the "
                          "other; for replicas of tensor-parallel groups start each group with "
                          "its own `lmforge api` and put `lmforge router` in front",
                          c->path, size, (long long)lmf_config_int(c, "data_parallel_size"));
    /* The split against the model's config.json, before any rank starts (a .gguf file is
     * checked by each rank when it loads). */
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/config.json", lmf_config_str(c, "model_name_or_path"));
    if (stat(path, &st)) return 0;
    lmf_model_config mc;
    int rc = lmf_model_config_load(&mc, path);
    if (!rc) rc = lmf_tp_check(&mc, size);
    return rc ? lmf_error_prefix(rc, "%s: %s", c->path, path) : 0;
}

int lmf_cli_tp_begin(const lmf_config *c, const char *cmd, int argc, char **argv, lmf_cli_tp **out,
                     int *exit_code) {
    *out = NULL;
    int size = (int)lmf_config_int(c, "tensor_parallel_size");
    int rc = refuse(c, size);
    /* api: the launcher turns SIGINT / SIGTERM into SIGUSR1, rank 0's drain; chat ends with
     * them as a one-process chat does */
    int api = !strcmp(cmd, "api");
    lmf_launch_job job = {.subcmd = cmd,
                          .ranks = size,
                          .stop_signal = api ? SIGUSR1 : 0,
                          .no_restarts = 1,
                          .label = "tensor_parallel_size"};
    if (!rc) rc = lmf_cli_launch_job(c, &job, argc, argv, exit_code);
    if (rc || *exit_code >= 0) return rc;
    /* One of the ranks. SIGUSR1 is rank 0's stop signal (sigwait) and must not kill the others,
     * which stop when rank 0 tells them. */
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    lmf_cli_tp *tp = calloc(1, sizeof *tp);
    if (!tp) return lmf_errorf(LMF_ENOMEM, "out of memory");
    lmf_comm_options co = {(double)lmf_config_int(c, "ddp_timeout"), 0};
    rc = lmf_comm_init(&tp->world, &co);
    if (!rc) {
        tp->rank = lmf_comm_rank(tp->world), tp->size = lmf_comm_size(tp->world);
        if (tp->size != size)
            rc = lmf_errorf(LMF_EINVAL,
                            "%s: tensor_parallel_size %d, but the launcher started %d rank(s) "
                            "(nproc_per_node, NPROC_PER_NODE, the hostfile's slots or mpirun -np "
                            "must give %d in all)",
                            c->path, size, tp->size, size);
    }
    if (!rc) rc = lmf_comm_split(tp->world, 0, tp->rank, &tp->ctrl);
    if (rc) {
        lmf_cli_tp_end(tp, rc);
        return rc;
    }
    lmf_comm_set_timeout(tp->ctrl, 1e9); /* ranks > 0 wait there for as long as the server idles */
    if (tp->rank > 0) {
        sigaddset(&s, SIGINT);
        sigaddset(&s, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &s, NULL);
        if (!getenv("LMF_LOG")) setenv("LMF_LOG", "warn", 1);
    }
    *out = tp;
    return 0;
}

int lmf_cli_tp_rank(const lmf_cli_tp *tp) {
    return tp->rank;
}

int lmf_cli_tp_load(lmf_cli_tp *tp, const char *path, lmf_model **m) {
    lmf_tp_comm hooks;
    lmf_tp_comm_over(&hooks, tp->world);
    return lmf_tp_load(m, path, lmf_backend_cpu(), tp->rank, tp->size, &hooks);
}

/* Rank 0's engine step. A step that fails after it was sent leaves the other ranks inside its
 * collectives, out of step with rank 0 for good: the group cannot serve again, so rank 0 ends
 * with an error at once and mpirun takes the other ranks down (rather than every later step
 * failing until their collectives time out). */
static int leader_step(void *group, lmf_model *m, lmf_kv_pool *kv, const lmf_seq_step *seqs,
                       int n_seqs, float *logits) {
    int rc = lmf_tp_group_step(group, m, kv, seqs, n_seqs, logits);
    if (rc) {
        fprintf(stderr,
                "lmforge: tensor parallel rank 0: a step failed (%s); the group cannot "
                "continue, exiting\n",
                lmf_last_error());
        fflush(NULL);
        _exit(1);
    }
    return 0;
}

/* The start-up line of rank 0: the split and the KV cache per rank. */
static void describe(const lmf_cli_tp *tp, const lmf_model *m, const lmf_engine_config *ec) {
    const lmf_tp *t = m->tp;
    const lmf_model_config *f = &t->full, *c = &m->cfg;
    size_t per_block = lmf_kv_bytes_per_block(c, ec->block_size, ec->kv_dtype),
           whole = lmf_kv_bytes_per_block(f, ec->block_size, ec->kv_dtype);
    printf("tensor parallel: %d ranks on %d node(s); rank 0 holds %d of %d attention heads, %d of "
           "%d KV heads, %d of %d MLP rows, %d of %d vocabulary rows\n",
           tp->size, lmf_comm_node_count(tp->world), c->heads, f->heads, c->kv_heads, f->kv_heads,
           c->ffn, f->ffn, c->vocab, f->vocab);
    printf("tensor parallel: KV cache per rank %.1f MiB (%zu bytes per block, 1/%d of the %zu "
           "one rank would hold)\n",
           (double)per_block * ec->n_blocks / (1 << 20), per_block, tp->size, whole);
    fflush(stdout);
}

int lmf_cli_tp_agree(lmf_cli_tp *tp, int rc, lmf_engine_config *ec, lmf_model *m) {
    tp->agreed = 1;
    double *failed = calloc((size_t)tp->size, sizeof *failed);
    if (!failed) return lmf_errorf(LMF_ENOMEM, "out of memory");
    failed[tp->rank] = rc != 0;
    int crc = lmf_comm_allreduce_f64(tp->world, failed, (size_t)tp->size);
    int first = -1;
    for (int r = 0; r < tp->size && !crc; r++)
        if (failed[r] && first < 0) first = r;
    free(failed);
    if (rc) return rc;
    if (crc) return crc;
    if (first >= 0)
        return lmf_errorf(LMF_EIO,
                          "tensor parallel: rank %d failed to start (its message is "
                          "above)",
                          first);
    /* the pool's shape and element type as rank 0 sized it from the config */
    int32_t geom[3] = {ec->block_size, ec->n_blocks, (int32_t)ec->kv_dtype};
    if ((rc = lmf_comm_broadcast(tp->world, geom, sizeof geom, 0))) return rc;
    ec->block_size = geom[0], ec->n_blocks = geom[1], ec->kv_dtype = (lmf_kv_dtype)geom[2];
    if ((rc = lmf_tp_group_create(&tp->group, tp->ctrl, m))) return rc;
    if (tp->rank == 0) {
        ec->step = leader_step, ec->step_user = tp->group;
        describe(tp, m, ec);
    }
    return 0;
}

int lmf_cli_tp_worker(lmf_cli_tp *tp, const lmf_config *c) {
    lmf_model *m = NULL;
    lmf_engine_config ec;
    lmf_engine_config_defaults(&ec);
    int rc = lmf_cli_tp_load(tp, lmf_config_str(c, "model_name_or_path"), &m);
    if (!rc) rc = lmf_cli_apply_infer_dtype(c, m);
    if (rc) lmf_error_prefix(rc, "tensor parallel rank %d", tp->rank);
    rc = lmf_cli_tp_agree(tp, rc, &ec, m);
    if (!rc) rc = lmf_tp_group_serve(tp->group, ec.block_size, ec.n_blocks, ec.kv_dtype);
    if (rc) lmf_error_prefix(rc, "tensor parallel rank %d", tp->rank);
    lmf_model_free(m);
    return rc;
}

void lmf_cli_tp_end(lmf_cli_tp *tp, int rc) {
    if (!tp) return;
    if (tp->world && tp->ctrl && tp->rank == 0) {
        if (!tp->agreed) { /* the others wait to hear whether rank 0 started: it did not */
            lmf_engine_config ec;
            lmf_engine_config_defaults(&ec);
            lmf_cli_tp_agree(tp, rc ? rc : LMF_EINVAL, &ec, NULL);
        } else if (tp->group) {
            lmf_tp_group_stop(tp->group);
        }
    }
    lmf_tp_group_free(tp->group);
    lmf_comm_free(tp->ctrl);
    lmf_comm_free(tp->world);
    free(tp);
}
