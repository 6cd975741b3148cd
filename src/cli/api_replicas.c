/* `lmforge api CFG.yaml` with data_parallel_size: N > 1: N replica servers, each this same
 * executable running `lmforge api CFG.yaml ... data_parallel_size=1 threads=T` on 127.0.0.1,
 * ports API_PORT+1..API_PORT+N, and the router on API_HOST:API_PORT in this process. Replicas
 * get SIGTERM when this process dies (PR_SET_PDEATHSIG) and sit in their own process group, so
 * a terminal's Ctrl-C reaches only this process, which drains the router first and then stops
 * the replicas. A replica that exits on its own is started again (the router re-admits it when
 * its /health passes). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "lmforge/core.h"
#include "lmforge/error.h"
#include "lmforge/router.h"

enum { DRAIN_SECONDS = 60, STOP_SECONDS = 75 };

typedef struct replicas {
    int n, base_port, threads;
    pid_t pid[LMF_ROUTER_MAX_REPLICAS];
    double restart_at[LMF_ROUTER_MAX_REPLICAS]; /* > 0: start again at this time */
    int argc;
    char **argv; /* `api CFG [overrides]` as given */
} replicas;

static pid_t spawn(const replicas *R, int i) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid; /* the parent, or -1 */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    char port[16], threads[32];
    snprintf(port, sizeof port, "%d", R->base_port + 1 + i);
    snprintf(threads, sizeof threads, "threads=%d", R->threads);
    setenv("API_PORT", port, 1);
    setenv("API_HOST", "127.0.0.1", 1);
    /* the OpenMP pool too: an inherited OMP_NUM_THREADS sized for the whole machine would
     * oversubscribe the cores N times over */
    if (R->threads > 0) setenv("OMP_NUM_THREADS", threads + strlen("threads="), 1);
    char **av = calloc((size_t)R->argc + 5, sizeof *av);
    if (!av) _exit(1);
    int n = 0;
    av[n++] = "lmforge";
    for (int k = 0; k < R->argc; k++) av[n++] = R->argv[k];
    av[n++] = "data_parallel_size=1";
    if (R->threads > 0) av[n++] = threads;
    av[n] = NULL;
    execv("/proc/self/exe", av);
    fprintf(stderr, "lmforge api: replica %d: cannot run /proc/self/exe: %s\n", i, strerror(errno));
    _exit(127);
}

/* Reaps replicas that exited and restarts them a second later, unless stopping. */
static void tend(replicas *R, int stopping) {
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        for (int i = 0; i < R->n; i++)
            if (R->pid[i] == pid) {
                R->pid[i] = 0;
                if (stopping) break;
                fprintf(stderr, "lmforge api: replica %d (port %d) %s %d; starting it again\n", i,
                        R->base_port + 1 + i, WIFSIGNALED(st) ? "killed by signal" : "exited",
                        WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                R->restart_at[i] = lmf_time_sec() + 1.0;
            }
    for (int i = 0; i < R->n && !stopping; i++)
        if (!R->pid[i] && R->restart_at[i] > 0 && lmf_time_sec() >= R->restart_at[i]) {
            R->restart_at[i] = 0;
            if ((R->pid[i] = spawn(R, i)) < 0) R->pid[i] = 0, R->restart_at[i] = lmf_time_sec() + 5;
        }
}

static void stop_all(replicas *R) {
    for (int i = 0; i < R->n; i++)
        if (R->pid[i] > 0) kill(R->pid[i], SIGTERM);
    double until = lmf_time_sec() + STOP_SECONDS;
    for (;;) {
        int left = 0;
        tend(R, 1);
        for (int i = 0; i < R->n; i++) left += R->pid[i] > 0;
        if (!left) return;
        if (lmf_time_sec() > until) {
            for (int i = 0; i < R->n; i++)
                if (R->pid[i] > 0) kill(R->pid[i], SIGKILL);
            until = lmf_time_sec() + 5;
        }
        usleep(50000);
    }
}

int lmf_cli_api_replicas(const lmf_config *cfg, int argc, char **argv) {
    replicas R = {.n = (int)lmf_config_int(cfg, "data_parallel_size"), .argc = argc, .argv = argv};
    lmf_router_config rc;
    char *storage = NULL, *urls = NULL;
    int e = lmf_cli_router_config(cfg, &rc, &storage);
    if (e) return e;
    if (lmf_config_str(cfg, "router_replicas")) {
        free(storage);
        return lmf_errorf(LMF_EINVAL,
                          "%s: router_replicas and data_parallel_size > 1 are "
                          "exclusive (the replicas are started here)",
                          cfg->path);
    }
    R.base_port = rc.port;
    if (R.base_port + R.n > 65535) {
        free(storage);
        return lmf_errorf(LMF_EINVAL, "API_PORT %d: the replicas' ports %d..%d pass 65535",
                          R.base_port, R.base_port + 1, R.base_port + R.n);
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    R.threads = lmf_config_is_set(cfg, "threads") ? (int)lmf_config_int(cfg, "threads")
                                                  : (int)(cores / R.n > 0 ? cores / R.n : 1);
    size_t cap = (size_t)R.n * 32;
    if (!(urls = malloc(cap))) {
        free(storage);
        return lmf_errorf(LMF_ENOMEM, "out of memory");
    }
    urls[0] = 0;
    for (int i = 0; i < R.n; i++)
        snprintf(urls + strlen(urls), cap - strlen(urls), "%shttp://127.0.0.1:%d", i ? "," : "",
                 R.base_port + 1 + i);
    e = lmf_cli_router_replicas(&rc, urls, &storage);
    free(urls);
    if (e) {
        free(storage);
        return e;
    }
    sigset_t sigs;
    lmf_cli_block_stop_signals(&sigs);
    lmf_router *r = NULL;
    e = lmf_cli_router_start(&rc, &r);
    if (e) {
        free(storage);
        return e;
    }
    printf("lmforge api: data_parallel_size %d: replicas on 127.0.0.1 ports %d..%d, %d thread(s) "
           "each\n",
           R.n, R.base_port + 1, R.base_port + R.n, R.threads);
    fflush(stdout);
    for (int i = 0; i < R.n; i++)
        if ((R.pid[i] = spawn(&R, i)) < 0) {
            R.pid[i] = 0;
            e = lmf_errorf(LMF_EIO, "cannot start replica %d: %s", i, strerror(errno));
            break;
        }
    int sig = 0;
    while (!e) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) break;
        tend(&R, 0);
    }
    if (!e) {
        printf("lmforge api: %s: finishing in-flight requests, then stopping the replicas\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
        fflush(stdout);
    }
    lmf_router_shutdown(r, e ? 0 : DRAIN_SECONDS);
    stop_all(&R);
    lmf_router_free(r);
    free(storage);
    return e;
}
